"""Every command x every mistake a user can make: exit status 2, one ``medsight: error:`` line, no traceback, and
no output written.

The table below is the contract (docs/benchmarks.md "reliability" counts its rows). Each row names a command line
built from a small set of broken inputs made once per session: malformed, empty and wrongly-typed CSVs, truncated
and wrong-format images, a model folder of the wrong kind, output paths under a regular file, inconsistent
options; a disk-full row replaces the file writer with one that raises ENOSPC.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import data_manager

from medsight.cli.main import main
from medsight.image import Geometry, Image
from medsight.io.nifti import write_nifti
from medsight.synthetic.toy import make_toy_dataset


def _inputs(root: Path) -> dict[str, Path]:
    """The broken (and a few good) inputs every row draws from."""
    p: dict[str, Path] = {}
    root.mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> None:
        p[name] = root / name
        p[name].write_bytes(data)

    put("malformed.csv", b'case_id,y_true,y_score\nc1,1,0.9\nc2,0,"0.1\nc3,1,0.8,7,8\n\x00\xff\xfe')
    put("unterminated.csv", b'image\n"a.nii.gz\nb.nii.gz\n')
    put("ragged.csv", b"case_id,y_true,y_score\nc1,1,0.9,4,5,6\nc2,0\n")
    put("empty.csv", b"")
    put("typed.csv", b"case_id,y_true,y_score\nc1,yes,high\nc2,no,low\nc3,yes,0.3\n")
    put("good.csv", b"case_id,y_true,y_score\n" + b"".join(f"c{i},{i % 2},{(i % 7) / 7:.3f}\n".encode()
                                                        for i in range(30)))
    put("notes.txt", b"this is not an image\n")
    put("garbage.dcm", b"\x00" * 128 + b"DICM" + os.urandom(200))
    put("wrong.nii.gz", b"plain text, not gzip\n")
    put("blocker", b"a regular file standing where a folder should be\n")
    put("bad.json", b"{not json")
    put("short.key", b"0123456789")
    put("ct.dcm", (Path(data_manager.DATA_ROOT) / "test_files" / "CT_small.dcm").read_bytes())
    img = Image(np.arange(8 * 9 * 10, dtype=np.uint8).reshape(8, 9, 10), Geometry.identity(3, (1.0, 1.0, 1.0)))
    good = root / "good.nii.gz"
    write_nifti(img, good, sidecar=False)
    p["good.nii.gz"] = good
    put("truncated.nii.gz", good.read_bytes()[: len(good.read_bytes()) // 2])
    put("truncated_raw.nii", gzip.decompress(good.read_bytes())[:200])
    p["plan_dataset"] = make_toy_dataset(root / "plan_dataset", n_cases=3)
    for d in ("empty_dir", "wrong_model", "pred", "ref", "bad_pred", "dicoms"):
        p[d] = root / d
        p[d].mkdir()
    (p["wrong_model"] / "weights.txt").write_text("not a model")
    write_nifti(img, p["ref"] / "case_000.nii.gz", sidecar=False)
    write_nifti(img, p["pred"] / "case_000.nii.gz", sidecar=False)
    (p["bad_pred"] / "case_000.nii.gz").write_bytes(p["truncated.nii.gz"].read_bytes())
    (p["dicoms"] / "a.dcm").write_bytes(p["ct.dcm"].read_bytes())
    p["cls_pkg"], p["cls_no_threshold"] = _classifier_packages(root)
    return p


def _classifier_packages(root: Path) -> tuple[Path, Path]:
    """Two real (untrained) 2D classifier packages: one with a threshold for its label, one without."""
    from medsight.classification.model_io import save_model
    from medsight.nets.backbones import build_classifier
    from medsight.package import save_package

    model, cam = build_classifier("resnet10-slim", 2, 1, 1, (16, 16))
    out = []
    for name, thresholds in (("cls_pkg", {"x": 0.4}), ("cls_no_threshold", {})):
        src = save_model(root / f"{name}_src", model, {
            "labels": ["x"], "label_columns": ["x"], "task": "binary", "activation": "sigmoid", "n_outputs": 1,
            "thresholds": thresholds, "backbone": "resnet10-slim", "spatial_dims": 2, "in_channels": 1,
            "input_size": [16, 16], "cam_layer": cam})
        out.append(save_package(src, root / name, task="classification", name=name.replace("_", "-"),
                                register=False).path)
    return out[0], out[1]


# (row id, argv template, output paths that must not appear); {name} is replaced by the input's path, {out} by a
# fresh path under the test's folder; "{blocker}/x" is an output folder under a regular file
ROWS: list[tuple[str, list[str], list[str]]] = [
    # info
    ("info-missing", ["info", "{root}/nope.dcm"], []),
    ("info-text-file", ["info", "{notes.txt}"], []),
    ("info-garbage-dicom", ["info", "{garbage.dcm}"], []),
    ("info-truncated-nifti", ["info", "{truncated.nii.gz}"], []),
    ("info-truncated-raw-nifti", ["info", "{truncated_raw.nii}"], []),
    ("info-wrong-format-nifti", ["info", "{wrong.nii.gz}"], []),
    ("info-empty-dir", ["info", "{empty_dir}"], []),
    ("info-bad-option", ["info", "{good.nii.gz}", "--no-such-option"], []),
    # evaluate cls
    ("evaluate-cls-malformed", ["evaluate", "cls", "{malformed.csv}", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-ragged", ["evaluate", "cls", "{ragged.csv}", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-empty", ["evaluate", "cls", "{empty.csv}", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-typed", ["evaluate", "cls", "{typed.csv}", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-missing", ["evaluate", "cls", "{root}/nope.csv", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-out-under-file", ["evaluate", "cls", "{good.csv}", "--threshold", "0.5", "--out", "{blocker}/x",
                                     "--n-boot", "10"],
     []),
    ("evaluate-cls-bad-alpha", ["evaluate", "cls", "{good.csv}", "--threshold", "0.5", "--out", "{out}", "--alpha",
                                "1.5"], ["{out}"]),
    ("evaluate-cls-bad-kappa", ["evaluate", "cls", "{good.csv}", "--threshold", "0.5", "--out", "{out}", "--kappa",
                                "nocolon"],
     ["{out}"]),
    ("evaluate-cls-no-threshold", ["evaluate", "cls", "{good.csv}", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-threshold-and-model", ["evaluate", "cls", "{good.csv}", "--threshold", "0.5", "--model",
                                          "{cls_pkg}", "--out", "{out}"], ["{out}"]),
    ("evaluate-cls-unknown-group", ["evaluate", "cls", "{good.csv}", "--threshold", "0.5", "--out", "{out}",
                                    "--group-by", "site"],
     ["{out}"]),
    # evaluate seg
    ("evaluate-seg-truncated", ["evaluate", "seg", "{bad_pred}", "{ref}", "--out", "{out}"], ["{out}"]),
    ("evaluate-seg-empty", ["evaluate", "seg", "{empty_dir}", "{ref}", "--out", "{out}"], ["{out}"]),
    ("evaluate-seg-out-under-file", ["evaluate", "seg", "{pred}", "{ref}", "--out", "{blocker}/x", "--n-boot",
                                     "10"], []),
    ("evaluate-seg-bad-labels", ["evaluate", "seg", "{pred}", "{ref}", "--out", "{out}", "--labels", "x=y"],
     ["{out}"]),
    ("evaluate-seg-bad-manifest", ["evaluate", "seg", "{pred}", "{ref}", "--out", "{out}", "--manifest",
                                   "{malformed.csv}", "--group-by", "site"], ["{out}"]),
    # plan / train
    ("plan-empty-dataset", ["plan", "{empty_dir}", "--out", "{out}"], ["{out}"]),
    ("plan-file-as-dataset", ["plan", "{notes.txt}", "--out", "{out}"], ["{out}"]),
    ("train-empty-dataset", ["train", "{empty_dir}", "--model-dir", "{out}"], ["{out}"]),
    ("train-bad-plan", ["train", "{empty_dir}", "--plan", "{bad.json}", "--model-dir", "{out}"], ["{out}"]),
    ("train-bad-fold", ["train", "{empty_dir}", "--fold", "9", "--model-dir", "{out}"], ["{out}"]),
    # predict
    ("predict-wrong-model", ["predict", "{wrong_model}", "{good.nii.gz}", "{out}"], ["{out}"]),
    ("predict-empty-model", ["predict", "{empty_dir}", "{good.nii.gz}", "{out}"], ["{out}"]),
    ("predict-missing-input", ["predict", "{wrong_model}", "{root}/nope.nii.gz", "{out}"], ["{out}"]),
    # train-cls / predict-cls
    ("train-cls-malformed", ["train-cls", "{malformed.csv}", "--out", "{out}"], ["{out}"]),
    ("train-cls-empty", ["train-cls", "{empty.csv}", "--out", "{out}"], ["{out}"]),
    ("train-cls-typed", ["train-cls", "{typed.csv}", "--out", "{out}"], ["{out}"]),
    ("train-cls-bad-size", ["train-cls", "{good.csv}", "--out", "{out}", "--input-size", "a,b"], ["{out}"]),
    ("train-cls-out-under-file", ["train-cls", "{good.csv}", "--out", "{blocker}/x"], []),
    ("predict-cls-wrong-model", ["predict-cls", "{wrong_model}", "{good.nii.gz}", "{out}"], ["{out}"]),
    ("predict-cls-malformed-list", ["predict-cls", "{wrong_model}", "{malformed.csv}", "{out}"], ["{out}"]),
    ("predict-cls-malformed-csv", ["predict-cls", "{cls_pkg}", "{malformed.csv}", "{out}"], ["{out}"]),
    ("predict-cls-unterminated-quote", ["predict-cls", "{cls_pkg}", "{unterminated.csv}", "{out}"], ["{out}"]),
    ("predict-cls-no-threshold", ["predict-cls", "{cls_no_threshold}", "{good.nii.gz}", "{out}"], ["{out}"]),
    ("predict-cls-plain-folder", ["predict-cls", "{cls_pkg}_src", "{good.nii.gz}", "{out}"], ["{out}"]),
    # calibrate
    ("calibrate-malformed", ["calibrate", "{cls_pkg}", "{malformed.csv}", "-o", "{out}"], ["{out}"]),
    ("calibrate-wrong-model", ["calibrate", "{wrong_model}", "{good.csv}", "-o", "{out}"], ["{out}"]),
    ("calibrate-bad-share", ["calibrate", "{cls_pkg}", "{good.csv}", "-o", "{out}", "--check-share", "2"],
     ["{out}"]),
    # train-mil / predict-mil
    ("train-mil-malformed", ["train-mil", "{malformed.csv}", "{empty_dir}", "--out", "{out}"], ["{out}"]),
    ("predict-mil-plain-folder", ["predict-mil", "{wrong_model}", "{empty_dir}", "--out", "{out}"], ["{out}"]),
    ("predict-mil-classifier", ["predict-mil", "{cls_pkg}", "{empty_dir}", "--out", "{out}"], ["{out}"]),
    # deid
    ("deid-missing-input", ["deid", "{root}/nope", "{out}"], ["{out}"]),
    ("deid-empty-input", ["deid", "{empty_dir}", "{out}"], ["{out}"]),
    ("deid-out-under-file", ["deid", "{dicoms}", "{blocker}/x"], []),
    ("deid-short-key", ["deid", "{dicoms}", "{out}", "--key-file", "{short.key}"], ["{out}"]),
    ("deid-bad-regions", ["deid", "{dicoms}", "{out}", "--redact-pixels", "--text-regions", "{malformed.csv}"],
     ["{out}"]),
    ("deid-regions-only-alone", ["deid", "{dicoms}", "{out}", "--regions-only"], ["{out}"]),
    ("deid-zero-workers", ["deid", "{dicoms}", "{out}", "-j", "0"], ["{out}"]),
    # models / audit
    ("models-show-unknown", ["models", "show", "no-such-model"], []),
    ("models-verify-wrong-folder", ["models", "verify", "{wrong_model}"], []),
    ("models-list-registry-not-a-db", ["models", "list", "--registry", "{notes.txt}"], []),
    ("audit-list-garbage-db", ["audit", "list", "--url", "{notes.txt}"], []),
    ("audit-verify-garbage-db", ["audit", "verify", "--url", "{notes.txt}"], []),
    # validate
    ("validate-wrong-model", ["validate", "{wrong_model}", "{empty_dir}", "--report", "{out}/r.html"], ["{out}"]),
    ("validate-malformed-predictions", ["validate", "{wrong_model}", "{empty_dir}", "--predictions",
                                        "{malformed.csv}", "--report", "{out}/r.html"], ["{out}"]),
    ("validate-empty-predictions", ["validate", "{wrong_model}", "{empty_dir}", "--predictions", "{empty.csv}",
                                    "--report", "{out}/r.html"], ["{out}"]),
    ("validate-report-under-file", ["validate", "{wrong_model}", "{empty_dir}", "--predictions", "{good.csv}",
                                    "--report", "{blocker}/r.html"], []),
    # demo
    ("demo-out-under-file", ["demo", "--fast", "--out", "{blocker}/x"], []),
    # the group itself
    ("unknown-command", ["no-such-command"], []),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _inputs(tmp_path_factory.mktemp("bad_inputs"))


def _fill(template: str, inputs: dict[str, Path], out: Path) -> str:
    text = template.replace("{root}", str(inputs["good.csv"].parent)).replace("{out}", str(out))
    for name, path in inputs.items():
        text = text.replace("{" + name + "}", str(path))
    return text


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``medsight argv`` in this process; (exit status, stderr). An escaped exception fails the test."""
    try:
        main(["-q", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_clean_error(code: int, err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("WARNING", "INFO"))]
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    error_lines = [ln for ln in lines if ln.startswith("medsight: error:")]
    assert len(error_lines) == 1, f"expected one 'medsight: error:' line, got:\n{err}"


@pytest.mark.parametrize(("row", "argv", "absent"), ROWS, ids=[r[0] for r in ROWS])
def test_mistake_is_one_line_exit_2_nothing_written(row: str, argv: list[str], absent: list[str],
                                                    inputs: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    before = sorted(p.name for p in inputs["good.csv"].parent.rglob("*"))
    code, err = run_cli([_fill(a, inputs, out) for a in argv], capsys)
    assert_clean_error(code, err)
    for path in absent:
        assert not Path(_fill(path, inputs, out)).exists(), f"{path} was written"
    assert sorted(p.name for p in inputs["good.csv"].parent.rglob("*")) == before, "an input folder changed"


# disk full: every atomic write ends in fsync, where a full disk (or quota) reports the error for buffered writes
FULL_DISK_ROWS: list[tuple[str, list[str]]] = [
    ("evaluate-cls", ["evaluate", "cls", "{good.csv}", "--threshold", "0.5", "--out", "{out}", "--n-boot", "10"]),
    ("evaluate-seg", ["evaluate", "seg", "{pred}", "{ref}", "--out", "{out}", "--n-boot", "10"]),
    ("deid", ["deid", "{dicoms}", "{out}", "-j", "1"]),
    ("plan", ["plan", "{plan_dataset}", "--out", "{out}/plan.json"]),
]


def _disk_full(*_args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(("row", "argv"), FULL_DISK_ROWS, ids=[r[0] for r in FULL_DISK_ROWS])
def test_disk_full_is_a_clean_error_and_leaves_nothing(row: str, argv: list[str], inputs: dict[str, Path],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    monkeypatch.setattr(os, "fsync", _disk_full)
    code, err = run_cli([_fill(a, inputs, out) for a in argv], capsys)
    assert_clean_error(code, err)
    assert "No space left on device" in err
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert left == [], f"partial output after a full disk: {left}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "a temporary folder was left"


def test_disk_full_keeps_the_earlier_evaluation(inputs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A second evaluation that fails on a full disk leaves the first one's four tables byte for byte."""
    out = tmp_path / "eval"
    argv = ["evaluate", "cls", str(inputs["good.csv"]), "--threshold", "0.5", "--out", str(out), "--n-boot", "10"]
    assert run_cli(argv, capsys)[0] == 0
    (out / "notes.md").write_text("the user's own file in the same folder")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"per_case.csv", "summary.csv", "summary.json", "notes.md"} <= set(before)
    monkeypatch.setattr(os, "fsync", _disk_full)
    code, err = run_cli([*argv, "--threshold", "0.3"], capsys)
    assert_clean_error(code, err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
    monkeypatch.undo()
    assert run_cli([*argv, "--threshold", "0.3"], capsys)[0] == 0  # a rerun replaces the set, keeps notes.md
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after["notes.md"] == before["notes.md"] and after["per_case.csv"] != before["per_case.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
