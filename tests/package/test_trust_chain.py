"""The trust chain end to end on a real (tiny) two-fold segmentation package:

- validating NAME@1 leaves @1 byte for byte as it was, and ``predict NAME@1`` still works afterwards;
- internal test cases are scored out of fold (by the one fold model that held each out), checked against the
  Dice of that fold model's own prediction computed here, and the external site by the ensemble;
- a changed file in a segmentation, classification or MIL package makes every command that uses it exit 2 with
  one line; a plain MIL folder is refused with a hint to ``medsight models package``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from medsight.cli.main import main
from medsight.files import sha256_file


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: object) -> tuple[int, str]:
    """The CLI as a user runs it (``main``: a MedsightError is one line and exit 2); exit status and all output."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            main(["-q", *map(str, args)])
            code = 0
        except SystemExit as err:
            code = int(err.code or 0)
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def two_fold_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A toy dataset (sites A and B) and a package with folds 0 and 1 trained through the CLI."""
    import torch

    from medsight.synthetic.toy import make_toy_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("trust")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSIGHT_HOME", str(base / "home"))  # the registry the tests below read (see _home)
    root = make_toy_dataset(base / "Dataset002_Trust", n_cases=10, shape=(24, 20, 16), channels=1)
    code, out = _run("plan", root, "--memory-gb", "0.05", "--filters", "8", "--epochs", "2", "--iterations", "3")
    assert code == 0, out
    model = base / "model"
    for fold in ("0", "1"):
        code, out = _run("train", root, "--fold", fold, "--model-dir", model, "--name", "trust-seg")
        assert code == 0, out
    torch.set_num_threads(threads)
    mp.undo()
    return root, model


@pytest.fixture(autouse=True)
def _home(two_fold_package: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here reads the registry the module's package was registered in."""
    monkeypatch.setenv("MEDSIGHT_HOME", str(two_fold_package[1].parent / "home"))


def test_validate_never_changes_the_version_it_evaluates_and_scores_out_of_fold(
        two_fold_package: tuple[Path, Path], tmp_path: Path) -> None:
    from medsight.data.splits import load_folds
    from medsight.io.nifti import read_nifti
    from medsight.package import load_package
    from medsight.segmentation.predict import Predictor

    root, model = two_fold_package
    v = load_package(model)  # the version with both folds
    ref = f"trust-seg@{v.version}"
    before = _tree(v.path)
    code, out = _run("validate", ref, root, "--external-site", "site_B", "--report", tmp_path / "r.html",
                     "--n-boot", "50", "--min-cases", "2")
    assert code == 0, out
    assert _tree(v.path) == before and load_package(ref).id == v.id  # @N unchanged on disk
    assert (tmp_path / "r_model_card.md").is_file() and not (v.path / "model_card.md").exists()
    code, out = _run("predict", ref, root / "imagesTr" / "toy_000_0000.nii.gz", tmp_path / "p.nii.gz")
    assert code == 0, out
    # the earlier one-fold version is still registered and still loads, unchanged, by name
    first = load_package("trust-seg@1")
    assert first.id != v.id and first.extra["folds"] == ["fold_0"]

    doc = json.loads((tmp_path / "r.json").read_text())
    scoring = doc["data"]["scoring"]
    folds = load_folds(v.file("splits.json"))
    manifest = pd.read_csv(root / "manifest.csv", dtype=str).set_index("case_id")
    internal = [c for c in scoring if manifest.loc[c, "site"] != "site_B"]
    external = [c for c in scoring if manifest.loc[c, "site"] == "site_B"]
    assert internal and external
    for c in internal:  # the fold that held the case out, never the ensemble
        k = next(i for i in (0, 1) if c in folds[i]["val"])
        assert scoring[c] == f"fold {k} (out-of-fold)"
    assert all(scoring[c] == "ensemble of all folds (2 models)" for c in external)
    assert any("out-of-fold" in n for n in doc["notes"])
    # independent check of one internal case: the prediction the report scored is fold k's own prediction
    c = internal[0]
    k = next(i for i in (0, 1) if c in folds[i]["val"])
    image = read_nifti(root / "imagesTr" / f"{c}_0000.nii.gz")
    own = Predictor(v.path, folds=[str(k)]).predict(image).labels.array
    assert np.array_equal(own, read_nifti(tmp_path / "r_predictions" / f"{c}.nii.gz").array)


def test_a_changed_file_makes_every_command_exit_2(two_fold_package: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from medsight.package import load_package, save_package

    root, model = two_fold_package
    pkg = load_package(model)
    copy = tmp_path / "seg"
    shutil.copytree(pkg.path, copy)
    (copy / "plan.json").write_text((copy / "plan.json").read_text().replace("{", "{ ", 1))
    image = root / "imagesTr" / "toy_000_0000.nii.gz"
    for args in (("predict", copy, image, tmp_path / "o.nii.gz"),
                 ("validate", copy, root, "--report", tmp_path / "r.html"),
                 ("models", "verify", copy), ("export", copy, tmp_path / "e")):
        code, out = _run(*args)
        assert code == 2 and "plan.json was changed" in out and len(out.strip().splitlines()) == 1, (args, out)

    # a classifier package: predict-cls, export, calibrate, validate
    src = tmp_path / "cls_src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"format": "medsight-classifier", "thresholds": {"x": 0.3}}))
    (src / "model.pt").write_bytes(b"weights")
    cls = save_package(src, tmp_path / "cls", task="classification", name="trust-cls").path
    (cls / "config.json").write_text(json.dumps({"format": "medsight-classifier", "thresholds": {"x": 0.9}}))
    csv = tmp_path / "pred.csv"
    csv.write_text("case_id,y_true,prob\nc1,1,0.5\n")
    scores = tmp_path / "scores.csv"
    scores.write_text("case_id,x,x_score\nc1,1,0.5\nc2,0,0.2\n")
    for args in (("predict-cls", cls, image, tmp_path / "o.csv"), ("export", cls, tmp_path / "e2"),
                 ("calibrate", cls, csv, "-o", tmp_path / "cal"),
                 ("validate", cls, root, "--predictions", csv, "--report", tmp_path / "r2.html"),
                 ("evaluate", "cls", scores, "--model", cls)):
        code, out = _run(*args)
        assert code == 2 and "config.json was changed" in out and len(out.strip().splitlines()) == 1, (args, out)

    # a MIL package: predict-mil; a plain MIL folder is refused with the packaging hint
    mil_src = tmp_path / "mil_src"
    mil_src.mkdir()
    (mil_src / "config.json").write_text("{}")
    (mil_src / "calibration.json").write_text('{"method": "temperature"}')
    mil = save_package(mil_src, tmp_path / "mil", task="mil", name="trust-mil").path
    (mil / "calibration.json").write_text('{"method": "temperature", "t": 9}')
    feats = tmp_path / "features"
    feats.mkdir()
    code, out = _run("predict-mil", mil, feats, "--out", tmp_path / "mp")
    assert code == 2 and "calibration.json was changed" in out and len(out.strip().splitlines()) == 1, out
    code, out = _run("predict-mil", mil_src, feats, "--out", tmp_path / "mp")
    assert code == 2 and "medsight models package" in out and len(out.strip().splitlines()) == 1, out


def test_every_other_command_that_loads_a_changed_package_exits_2(two_fold_package: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """The commands the test above leaves out, per package kind: follow-up, serve, models verify/promote and a
    training rerun into the package folder (segmentation); serve and models for a classifier and a MIL package; a
    federated package (federation.json beside the model) for predict, validate, export, follow-up and models; an
    encoder package for ``train --init`` and ``train-cls --init``. Each exits 2 naming the changed file."""
    import shutil

    from medsight.package import load_package, save_package

    root, model = two_fold_package
    pkg = load_package(model)
    image = root / "imagesTr" / "toy_000_0000.nii.gz"

    def changed(src: Path, dest: Path, task: str, name: str, file: str, extra: dict | None = None) -> Path:
        path = save_package(src, dest, task=task, name=name, register=False, extra=extra).path
        (path / file).write_bytes((path / file).read_bytes() + b" ")
        return path

    def refused(path: Path, file: str, *commands: tuple[object, ...]) -> None:
        for args in commands:
            code, out = _run(*args)
            assert code == 2 and f"{file} was changed" in out and len(out.strip().splitlines()) == 1, (args, out)

    plain = tmp_path / "seg_src"
    shutil.copytree(pkg.path, plain, ignore=shutil.ignore_patterns("manifest.json"))
    seg = changed(plain, tmp_path / "seg", "segmentation", "chg-seg", "plan.json")
    common = [("models", "verify", "{p}"), ("models", "promote", "{p}"), ("serve", "--model", "{p}", "--home",
                                                                          tmp_path / "svc")]

    def each(path: Path, *extra: tuple[object, ...]) -> list[tuple[object, ...]]:
        return [tuple(str(path) if a == "{p}" else a for a in args) for args in (*common, *extra)]

    refused(seg, "plan.json", *each(seg, ("follow-up", image, image, "-o", tmp_path / "f", "--model", seg),
                                    ("train", root, "--fold", "0", "--model-dir", seg, "--epochs", "1")))

    cls_src = tmp_path / "cls_src"
    cls_src.mkdir()
    (cls_src / "config.json").write_text(json.dumps({"format": "medsight-classifier", "thresholds": {"x": 0.3}}))
    (cls_src / "model.pt").write_bytes(b"weights")
    cls = changed(cls_src, tmp_path / "cls", "classification", "chg-cls", "config.json")
    refused(cls, "config.json", *each(cls))

    mil_src = tmp_path / "mil_src"
    mil_src.mkdir()
    (mil_src / "config.json").write_text("{}")
    (mil_src / "model.pt").write_bytes(b"weights")
    mil = changed(mil_src, tmp_path / "mil", "mil", "chg-mil", "model.pt")
    refused(mil, "model.pt", *each(mil)[:2])

    fed_src = tmp_path / "fed_src"
    shutil.copytree(plain, fed_src)
    (fed_src / "federation.json").write_text(json.dumps({"rounds": [], "config": {"task": "segmentation"}}))
    fed = changed(fed_src, tmp_path / "fed", "segmentation", "chg-fed", "federation.json",
                  extra={"federated": {"task": "segmentation", "sites": ["A", "B"], "rounds": 0}})
    assert json.loads((fed / "manifest.json").read_text())["extra"]["federated"]["sites"] == ["A", "B"]
    refused(fed, "federation.json", *each(fed, ("predict", fed, image, tmp_path / "o.nii.gz"),
                                          ("validate", fed, root, "--report", tmp_path / "r.html"),
                                          ("export", fed, tmp_path / "e"),
                                          ("follow-up", image, image, "-o", tmp_path / "f2", "--model", fed)))

    enc_src = tmp_path / "enc_src"
    enc_src.mkdir()
    (enc_src / "encoder.json").write_text("{}")
    (enc_src / "encoder.pt").write_bytes(b"weights")
    enc = changed(enc_src, tmp_path / "enc", "encoder", "chg-enc", "encoder.pt")
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,x,patient_id\n" + "".join(f"{image},{i % 2},p{i}\n" for i in range(8)))
    refused(enc, "encoder.pt", ("train", root, "--fold", "0", "--model-dir", tmp_path / "t", "--init", enc),
            ("train-cls", manifest, "--out", tmp_path / "tc", "--init", enc, "--epochs", "1"))
