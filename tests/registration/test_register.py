"""``medsight register``: the acceptance case (known deformation of a real brain), transforms that other ITK tools
read back, the Jacobian against a hand-worked determinant, and refused inputs (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsight.cli.main import main
from medsight.image import Geometry, Image
from medsight.io import read_image
from medsight.io.nifti import write_nifti
from medsight.registration import engine
from medsight.synthetic.deform import target_errors

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from dicom_factory import write_slice  # noqa: E402


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _write_pair(pair, folder: Path) -> dict[str, Path]:
    paths = {k: folder / f"{k}.nii.gz" for k in ("fixed", "moving", "fixed_labels", "moving_labels")}
    for k, p in paths.items():
        write_nifti(getattr(pair, k), p)
    return paths


@pytest.mark.slow
def test_known_rotation_shift_and_warp_of_a_brain_is_undone(mni3, tmp_path, capsys):
    """Acceptance: 12 deg + 14 mm + smooth warp; mean GM/WM Dice >= 0.85 and >= 0.15 above before; folding < 0.1 %."""
    p = _write_pair(mni3, tmp_path)
    out = tmp_path / "out"
    main(["register", str(p["fixed"]), str(p["moving"]), "-o", str(out), "--labels", str(p["moving_labels"]),
          "--fixed-labels", str(p["fixed_labels"])])
    assert "folding" in capsys.readouterr().out
    q = json.loads((out / "quality.json").read_text())
    # our own Dice, computed here with numpy on the files, not taken from quality.json
    fixed_lab = read_image(p["fixed_labels"]).array
    moved_lab = read_image(out / "moved_labels.nii.gz").array
    before = np.mean([_dice(fixed_lab == v, mni3.moving_labels.array == v) for v in (1, 2)])
    after = np.mean([_dice(fixed_lab == v, moved_lab == v) for v in (1, 2)])
    assert after >= 0.85 and after - before >= 0.15, (before, after)
    assert q["label_dice"]["mean_after"] == pytest.approx(after, abs=1e-3)
    assert q["jacobian"]["folding_percent"] < 0.1
    assert q["metric"]["after"] < q["metric"]["before"]  # MI is negative: lower is better
    # the transform file, read back by SimpleITK alone, puts the moving labels where moved_labels.nii.gz has them
    t = sitk.ReadTransform(str(out / "transform.h5"))
    ref = sitk.ReadImage(str(p["fixed_labels"]))
    again = sitk.Resample(sitk.ReadImage(str(p["moving_labels"])), ref, t, sitk.sitkNearestNeighbor, 0)
    assert np.mean(sitk.GetArrayFromImage(again).transpose() == moved_lab) > 0.999
    # against the truth: landmarks come back within a voxel (3 mm) on average
    tre = target_errors(mni3, t)
    assert tre.mean() < 2.0, tre.mean()
    assert sitk.ReadTransform(str(out / "linear.tfm")).GetDimension() == 3


def test_rigid_mode_recovers_a_pure_rotation_and_shift(mni3):
    """Rigid registration of the template against itself moved by a known rigid transform: TRE < 1.5 mm."""
    from medsight.synthetic.deform import Pair, _warp  # noqa: PLC2701 - the generator's own pieces

    truth = sitk.Euler3DTransform()
    c = mni3.fixed.geometry.index_to_world((np.asarray(mni3.fixed.shape) - 1) / 2)
    truth.SetCenter([float(v) for v in c])
    truth.SetRotation(0.10, -0.05, 0.12)
    truth.SetTranslation((6.0, -8.0, 5.0))
    moving = Image(_warp(mni3.fixed.array, mni3.fixed.geometry, truth), mni3.fixed.geometry)
    pair = Pair(mni3.fixed, mni3.fixed_labels, moving, mni3.fixed_labels, truth, mni3.landmarks)
    result = engine.register(mni3.fixed, moving, "rigid")
    assert [s["stage"] for s in result.stages] == ["rigid"]
    assert target_errors(pair, result.transform).mean() < 1.5


def test_jacobian_of_an_affine_is_its_determinant_whatever_the_grid_direction():
    """det J of x -> A x + b is det(A) everywhere; checked on an LPS grid and a RAS-like (flipped) grid."""
    a = np.array([[1.1, 0.2, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 1.2]])
    t = sitk.AffineTransform(3)
    t.SetMatrix(a.ravel().tolist())
    for direction in (np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]])):
        geom = Geometry((2.0, 1.5, 3.0), (10.0, -5.0, 3.0), tuple(tuple(r) for r in direction))
        det = engine.jacobian(t, geom, (8, 9, 7))
        np.testing.assert_allclose(det, np.linalg.det(a), rtol=1e-6)


def _fails(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medsight: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_pairs_exit_2_with_one_line_and_write_nothing(mni3, tmp_path, capsys):
    p = _write_pair(mni3, tmp_path)
    out = tmp_path / "out"
    flat = Image(np.ones((40, 40), np.float32), Geometry.identity(2))
    write_nifti(flat, tmp_path / "flat.nii.gz")
    assert "2D" in _fails(capsys, ["register", str(p["fixed"]), str(tmp_path / "flat.nii.gz"), "-o", str(out)])
    far = Image(mni3.moving.array, Geometry(mni3.moving.spacing, (500.0, 500.0, 500.0), mni3.moving.geometry.direction))
    write_nifti(far, tmp_path / "far.nii.gz")
    assert "do not overlap" in _fails(capsys, ["register", str(p["fixed"]), str(tmp_path / "far.nii.gz"),
                                               "-o", str(out)])
    assert "unknown" not in _fails(capsys, ["register", str(p["fixed"]), str(p["moving"]), "-o", str(out),
                                            "--labels", str(p["fixed"].with_name("nope.nii.gz"))])
    assert not out.exists()


def _blob_series(folder: Path, patient: str, shift: float) -> Path:
    """16 axial 32x32 CT slices (2 mm apart) of a smooth blob, written with pydicom, one PatientID."""
    folder.mkdir()
    from pydicom.uid import generate_uid

    uid = generate_uid()
    j, i = np.mgrid[0:32, 0:32]
    for k in range(16):
        r2 = (i - 15 - shift) ** 2 + (j - 14) ** 2 + ((k - 8) * 2) ** 2
        pixels = (1024 + 800 * np.exp(-r2 / 60.0)).astype(np.int16)
        write_slice(folder / f"s{k:02d}.dcm", pixels, (0.0, 0.0, 2.0 * k), (1.0, 0, 0, 0, 1.0, 0), uid, k + 1,
                    pixel_spacing=(1.0, 1.0), PatientID=patient)
    return folder


def test_two_patients_are_refused_unless_forced_and_the_run_is_audited(tmp_path, capsys):
    a, b = _blob_series(tmp_path / "a", "PAT-A", 0.0), _blob_series(tmp_path / "b", "PAT-B", 2.0)
    out = tmp_path / "out"
    assert "different patients" in _fails(capsys, ["register", str(a), str(b), "-o", str(out), "--mode", "rigid"])
    assert not out.exists()
    main(["register", str(a), str(b), "-o", str(out), "--mode", "rigid", "--force"])
    q = json.loads((out / "quality.json").read_text())
    assert q["checks"]["patient_check"].startswith("different PatientIDs")
    assert "PAT-A" not in (out / "quality.json").read_text()
    from medsight.audit.log import default_audit_log

    events = [r for r in default_audit_log().records() if r.event == "register"]
    assert [e.details["exit_status"] for e in events[-2:]] == [2, 0]
