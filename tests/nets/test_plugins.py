"""Plug-ins without forking: a network from an installed distribution trains, predicts and is recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nibabel as nib
import pytest

from medsight.errors import ConfigError
from medsight.nets import registry
from medsight.synthetic.toy import make_toy_dataset

PLUGIN = textwrap.dedent('''
    """A user's own segmentation network: two convolutions."""
    from torch import nn


    def my_unet(cfg, in_channels, out_channels):
        conv = nn.Conv3d if cfg.spatial_dims == 3 else nn.Conv2d
        return nn.Sequential(conv(in_channels, 8, 3, padding=1), nn.ReLU(), conv(8, out_channels, 1))
''')
ENTRY_POINTS = "[medsight.networks]\nmy_unet = my_unet_plugin:my_unet\n"


def build_wheel(dest: Path) -> Path:
    """The plug-in as a wheel (a zip with its dist-info), written directly so that no build backend or network
    is needed: what ``python -m build`` makes from a pyproject declaring the same entry point."""
    info = "my_unet_plugin-0.3.1.dist-info"
    files = {"my_unet_plugin.py": PLUGIN,
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: my-unet-plugin\nVersion: 0.3.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: medsight-test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n",
             f"{info}/entry_points.txt": ENTRY_POINTS}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = dest / "my_unet_plugin-0.3.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return wheel


def test_builtins_are_registered_and_unknown_names_list_them():
    assert {"dynunet", "attention_unet", "swinunetr"} <= set(registry.available("medsight.networks"))
    assert "resnet10-slim-evidence" in registry.available("medsight.backbones")
    assert {"dice_ce", "bce", "focal"} <= set(registry.available("medsight.losses"))
    assert registry.provenance("medsight.networks", "dynunet")["distribution"] == "medsight"
    with pytest.raises(ConfigError, match="unknown network 'nope'; available: .*dynunet.* install the package"):
        registry.load("medsight.networks", "nope")


def _medsight(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(site)] if site else [])}
    return subprocess.run([sys.executable, "-m", "medsight.cli.main", "-q", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_plugin_network_trains_predicts_and_is_recorded(tmp_path):
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                          str(site), str(build_wheel(tmp_path))], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    assert "my_unet" not in registry.available("medsight.networks")  # not visible without the plug-in's path

    root = make_toy_dataset(tmp_path / "toy", n_cases=10, shape=(16, 16, 12))
    r = _medsight(["plan", str(root), "--memory-gb", "0.02", "--filters", "4", "--epochs", "3", "--iterations",
                   "4", "--network", "my_unet"], site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((root / "medsight_plan.json").read_text())["configurations"]["3d"]["network"] == "my_unet"
    model = tmp_path / "model"
    r = _medsight(["train", str(root), "--model-dir", str(model), "--fold", "all", "--network", "my_unet"], site,
                  tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((model / "fold_all/summary.json").read_text())
    assert summary["network_provenance"] == {"name": "my_unet", "distribution": "my-unet-plugin",
                                             "version": "0.3.1"}
    assert summary["parameters"] == (2 * 8 * 27 + 8) + (8 * 3 + 3)  # the plug-in's two convolutions
    log = [json.loads(x) for x in (model / "fold_all/log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and log[-1]["loss"] < log[0]["loss"]

    out = tmp_path / "pred"
    r = _medsight(["predict", str(model), str(root / "imagesTr"), str(out), "--no-mirror"], site, tmp_path)
    assert r.returncode == 0, r.stderr
    src_img = nib.load(str(root / "imagesTr/toy_000_0000.nii.gz"))
    assert nib.load(str(out / "toy_000.nii.gz")).shape == src_img.shape

    # without the plug-in, loading fails on one line that names the distribution to install
    r = _medsight(["predict", str(model), str(root / "imagesTr"), str(tmp_path / "p2")], None, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "medsight: error: this model needs network 'my_unet' from the plug-in my-unet-plugin 0.3.1, which is "
        "not installed; pip install 'my-unet-plugin==0.3.1'"]
