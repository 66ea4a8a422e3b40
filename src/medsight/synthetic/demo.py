"""The embedded demo dataset: brain MRI cases simulated from ONE real template, built offline in seconds.

Source: the MNI ICBM152 2009a symmetric T1 template and its grey/white-matter probability maps, read straight
from the files that ship inside the installed ``nilearn`` wheel (``nilearn/datasets/data/``); no fetcher is
called and nothing is downloaded. Every case is that one real anatomy put through a random smooth deformation
and a random affine, resampled onto its site's voxel grid, then given a random contrast (gamma), a smooth
multiplicative bias field, Rician noise and a scanner gain. A share of the cases carry a simulated lesion: a
smooth irregular blob 3-30 mm across whose own intensity differs from white matter by a contrast-to-noise ratio
drawn from its ``LesionProfile``: by default ("faint") 0.5-4 and mostly hypointense (small faint lesions are
meant to be hard); "enhancing" gives the bright lesions of a post-contrast T1, which the classification demo
uses. The cases are therefore simulated, not patients: they show
the pipeline and distribution shift honestly, but say nothing about clinical performance.

Labels: 0 background (incl. CSF), 1 grey matter, 2 white matter, 3 lesion (argmax of the deformed probability
maps, lesion drawn on top). Sites differ in resolution, noise, contrast and bias; ``site_C`` is the unseen
external site with its own scanner profile. Output is the MSD / nnU-Net v2 layout plus ``manifest.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import nibabel as nib
import numpy as np
from scipy import ndimage

from medsight.errors import DatasetError
from medsight.files import atomic_write_text, sha256_file
from medsight.image import Geometry, Image, Provenance, SourceFile
from medsight.io.nifti import write_nifti

log = logging.getLogger(__name__)
T = TypeVar("T")

BUILD_VERSION = 2  # bump when the generator changes, so cached folders are rebuilt
LABELS: dict[str, int] = {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3}
CHANNELS: dict[str, str] = {"0": "T1"}
MANIFEST_COLUMNS = ("case_id", "image", "label", "patient_id", "site", "scanner", "sex", "age", "has_lesion",
                    "lesion_volume_ml", "lesion_diameter_mm", "lesion_cnr")
DEFAULT_N_CASES = 40
LESION_SHARE = 0.5
LESION_DIAMETER_MM = (3.0, 30.0)  # log-uniform


@dataclass(frozen=True)
class LesionProfile:
    """How simulated lesions look: contrast-to-noise range (uniform) and the share darker than white matter."""

    name: str
    cnr: tuple[float, float]
    hypointense_share: float
    description: str


LESION_PROFILES: dict[str, LesionProfile] = {
    # the segmentation demo's default: mostly T1-hypointense, often faint (small faint lesions are meant to be
    # hard); a hypointense blob in white matter looks like a fold of grey matter on a single T1 slice
    "faint": LesionProfile("faint", (0.5, 4.0), 0.7, "T1 lesions, 70% hypointense, CNR 0.5-4"),
    # what a reader scores lesion presence on: enhancing lesions on post-contrast T1 (bright, CNR 6-14)
    "enhancing": LesionProfile("enhancing", (6.0, 14.0), 0.0, "post-contrast T1 enhancing lesions, CNR 6-14"),
}
DEFAULT_LESION_PROFILE = "faint"
TEMPLATE_NAMES = {kind: f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm")}


@dataclass(frozen=True)
class SiteProfile:
    """One scanner: voxel grid, noise (fraction of white-matter intensity), contrast, bias and gain."""

    name: str
    scanner: str
    spacing: tuple[float, float, float]
    noise: float
    gamma: float
    bias: float
    gain: float
    share: float  # fraction of the cases acquired here


SITES: tuple[SiteProfile, ...] = (
    SiteProfile("site_A", "VendorX Aera 1.5T MPRAGE", (2.0, 2.0, 2.0), 0.025, 1.00, 0.15, 1000.0, 0.40),
    SiteProfile("site_B", "VendorY Prisma 3T MPRAGE", (1.8, 1.8, 2.4), 0.035, 1.15, 0.25, 400.0, 0.35),
    SiteProfile("site_C", "VendorZ Signa 1.5T SPGR", (2.2, 2.2, 2.2), 0.045, 0.85, 0.30, 2500.0, 0.25),
)
TRAINING_SITES = ("site_A", "site_B")
UNSEEN_SITE = "site_C"


def template_dir() -> Path:
    """The folder of the MNI ICBM152 2009a files inside the installed nilearn package."""
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - nilearn is a core dependency
        raise DatasetError("the demo data needs the nilearn package (it ships the MNI template); install it") from exc
    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    missing = [n for n in TEMPLATE_NAMES.values() if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"nilearn is installed but lacks {', '.join(missing)}; reinstall nilearn>=0.10", folder)
    return folder


@dataclass(frozen=True)
class _Template:
    t1: np.ndarray  # [0, 1], cropped to the brain, lightly smoothed against aliasing
    gm: np.ndarray
    wm: np.ndarray
    geometry: Geometry  # of the cropped 1 mm grid (LPS)
    sources: tuple[SourceFile, ...]


@lru_cache(maxsize=1)
def _template() -> _Template:
    folder = template_dir()
    vols, sources = {}, []
    affine = None
    for kind, name in TEMPLATE_NAMES.items():
        img = nib.load(str(folder / name))
        vols[kind] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
        affine = img.affine
        sources.append(SourceFile(f"nilearn/datasets/data/{name}", sha256_file(folder / name)))
    brain = (vols["gm"] + vols["wm"]) > 0.2
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(0) - 6, 0)
    hi = np.minimum(idx.max(0) + 7, brain.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    geom = Geometry.from_ras_affine(affine)
    origin = geom.index_to_world(lo.astype(float))
    cropped = Geometry(geom.spacing, tuple(float(v) for v in origin), geom.direction)
    smooth = {k: ndimage.gaussian_filter(v[crop], 0.6) for k, v in vols.items()}
    return _Template(smooth["t1"], smooth["gm"], smooth["wm"], cropped, tuple(sources))


@dataclass(frozen=True)
class _CaseSpec:
    case_id: str
    patient_id: str
    site: SiteProfile
    anatomy_seed: tuple[int, ...]  # same for every scan of one patient
    scan_seed: tuple[int, ...]
    sex: str
    age: int
    has_lesion: bool
    lesion: LesionProfile = LESION_PROFILES[DEFAULT_LESION_PROFILE]


def get_lesion_profile(name: str) -> LesionProfile:
    """The named lesion profile; DatasetError listing the known names otherwise."""
    if name not in LESION_PROFILES:
        raise DatasetError(f"unknown lesion profile {name!r}; choose one of {', '.join(LESION_PROFILES)}")
    return LESION_PROFILES[name]


def plan_cases(n_cases: int, seed: int, lesion_share: float = LESION_SHARE,
               profile: str = DEFAULT_LESION_PROFILE) -> list[_CaseSpec]:
    """Which case goes to which site and patient; about a quarter of patients have a second (rescan) visit.

    ``lesion_share`` is the share of patients with a lesion (the classification demo asks for more of them)."""
    lesion_look = get_lesion_profile(profile)
    if not 0.0 <= lesion_share <= 1.0:
        raise DatasetError(f"the lesion share must lie in [0, 1], got {lesion_share}")
    if n_cases < len(SITES):
        raise DatasetError(f"the demo dataset needs at least {len(SITES)} cases (one per site), got {n_cases}")
    rng = np.random.default_rng([seed, 7])
    counts = [max(1, int(round(s.share * n_cases))) for s in SITES]
    counts[0] += n_cases - sum(counts)
    specs: list[_CaseSpec] = []
    patient_no = 0
    for site_no, (site, count) in enumerate(zip(SITES, counts)):
        made = 0
        while made < count:
            patient_no += 1
            pid = f"P{patient_no:04d}"
            visits = 2 if (rng.random() < 0.25 and count - made >= 2) else 1
            sex = "F" if rng.random() < 0.5 else "M"
            age = int(rng.integers(22, 86))
            lesion = bool(rng.random() < lesion_share)
            for visit in range(visits):
                case_no = len(specs)
                specs.append(_CaseSpec(f"demo_{case_no:03d}", pid, site, (seed, 11, patient_no),
                                       (seed, 13, case_no), sex, age + visit, lesion, lesion_look))
                made += 1
    return specs


def _smooth_field(rng: np.random.Generator, coarse: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random field of unit-ish amplitude: Gaussian noise on a coarse grid, upsampled.

    Cubic spline up to a quarter of the final resolution, then linear: indistinguishable from a cubic zoom for
    fields this smooth (a few knots per axis) and ~30x cheaper; the cubic zoom on the full grid took 70% of a
    case's build time."""
    grid = rng.standard_normal(coarse).astype(np.float32)
    mid = tuple(max(c, int(np.ceil(s / 4))) for c, s in zip(coarse, shape))
    field = ndimage.zoom(grid, [m / c for m, c in zip(mid, coarse)], order=3, mode="nearest")
    field = ndimage.zoom(field, [s / m for s, m in zip(shape, field.shape)], order=1, mode="nearest")
    pad = [(0, max(0, s - f)) for s, f in zip(shape, field.shape)]
    return np.pad(field, pad, mode="edge")[tuple(slice(0, s) for s in shape)]


def _make_case(spec: _CaseSpec) -> tuple[Image, Image, dict[str, object]]:
    """Simulate one scan: deformed anatomy on the site grid, lesion, contrast, bias, noise and gain."""
    tpl = _template()
    site = spec.site
    sp = np.asarray(site.spacing)
    extent = np.asarray(tpl.t1.shape, dtype=float)  # mm, the template grid is 1 mm
    shape = tuple(int(np.ceil(e / s)) for e, s in zip(extent, sp))
    anat = np.random.default_rng(list(spec.anatomy_seed))
    scan = np.random.default_rng(list(spec.scan_seed))

    # anatomy: random affine (rotation up to ~6 degrees, scale 0.92-1.08) and a smooth deformation (~3 mm)
    angles = np.deg2rad(anat.uniform(-6, 6, 3))
    rot = _rotation(*angles)
    scale = anat.uniform(0.92, 1.08, 3)
    disp = np.stack([_smooth_field(anat, (4, 5, 4), shape) * 2.5 for _ in range(3)])
    # repositioning differs per visit (a rescan is never in exactly the same place)
    shift = scan.uniform(-4, 4, 3)
    center_out = (np.asarray(shape) - 1) / 2.0
    center_tpl = (extent - 1) / 2.0
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    p_mm = (grid - center_out[:, None]) * sp[:, None]
    src = (rot * scale) @ p_mm + center_tpl[:, None] + shift[:, None] + disp.reshape(3, -1)
    sample = lambda vol: ndimage.map_coordinates(vol, src, order=1, mode="constant", cval=0.0).reshape(shape)
    t1, gm, wm = sample(tpl.t1), sample(tpl.gm), sample(tpl.wm)
    bg = np.clip(1.0 - gm - wm, 0.0, 1.0)
    label = np.argmax(np.stack([bg, gm, wm]), axis=0).astype(np.uint8)

    # contrast: a per-scan gamma around the site's
    gamma = site.gamma * scan.uniform(0.93, 1.07)
    img = np.power(np.clip(t1, 0, None), gamma)
    wm_level = float(np.median(img[label == 2])) if np.any(label == 2) else 1.0
    sigma = site.noise * wm_level

    info: dict[str, object] = {"has_lesion": int(spec.has_lesion), "lesion_volume_ml": 0.0,
                               "lesion_diameter_mm": 0.0, "lesion_cnr": 0.0}
    if spec.has_lesion:
        les = np.random.default_rng(list(spec.anatomy_seed) + [3])
        diameter = float(np.exp(les.uniform(*np.log(LESION_DIAMETER_MM))))
        cnr = float(les.uniform(*spec.lesion.cnr))
        mask = _lesion_mask(les, label, sp, diameter)
        weight = ndimage.gaussian_filter(mask.astype(np.float32), 0.5)
        weight = np.maximum(weight / max(float(weight.max()), 1e-6), mask)
        sign = -1.0 if les.random() < spec.lesion.hypointense_share else 1.0
        img = img * (1 - weight) + weight * (wm_level + sign * cnr * sigma)
        label[mask] = LABELS["lesion"]
        info.update(lesion_volume_ml=round(float(mask.sum() * np.prod(sp) / 1000.0), 4),
                    lesion_diameter_mm=round(diameter, 2), lesion_cnr=round(cnr, 3))

    bias = np.exp(site.bias * _smooth_field(scan, (3, 3, 3), shape) * 0.6)
    img = img * bias
    noisy = np.sqrt((img + scan.normal(0, sigma, shape)) ** 2 + scan.normal(0, sigma, shape) ** 2)  # Rician
    gain = site.gain * scan.uniform(0.9, 1.1)
    voxels = np.clip(np.round(noisy * gain), 0, 32767).astype(np.int16)

    origin = tpl.geometry.index_to_world(center_tpl - center_out * sp)
    geom = Geometry(tuple(float(s) for s in sp), tuple(float(v) for v in origin), tpl.geometry.direction)
    prov = Provenance(source_files=tpl.sources, format="simulated", modality="MR", manufacturer=site.scanner.split()[0],
                      scanner_model=site.scanner, protocol="T1w (simulated from MNI ICBM152 2009a)",
                      body_part="BRAIN", acquisition={"site": site.name, "simulated": True})
    image = Image(voxels, geom, prov.with_step("simulate_demo_case", seed=list(spec.scan_seed), gamma=round(gamma, 4),
                                               noise_sigma_fraction=site.noise))
    return image, Image(label, geom, prov), info


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _lesion_mask(rng: np.random.Generator, label: np.ndarray, spacing: np.ndarray, diameter: float) -> np.ndarray:
    """An irregular blob of about ``diameter`` mm centred in white matter (never empty)."""
    wm = label == LABELS["white_matter"]
    core = ndimage.binary_erosion(wm, iterations=2)
    candidates = np.argwhere(core if core.any() else wm)
    if len(candidates) == 0:
        candidates = np.argwhere(np.ones_like(label, dtype=bool))
    center = candidates[rng.integers(len(candidates))]
    radius = diameter / 2.0
    half = np.ceil((radius * 1.6) / spacing).astype(int) + 1
    lo = np.maximum(center - half, 0)
    hi = np.minimum(center + half + 1, label.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    idx = np.indices(tuple(int(b - a) for a, b in zip(lo, hi)), dtype=np.float32)
    rel = (idx + (lo - center)[:, None, None, None]) * spacing[:, None, None, None]
    axes = radius * rng.uniform(0.7, 1.3, 3)
    r = np.sqrt(sum((rel[a] / axes[a]) ** 2 for a in range(3)))
    wobble = _smooth_field(rng, (3, 3, 3), r.shape) * 0.25 if min(r.shape) > 1 else 0.0
    mask = np.zeros(label.shape, dtype=bool)
    mask[box] = (r + wobble) < 1.0
    mask &= label > 0  # stays inside the brain
    if not mask.any():
        mask[tuple(center)] = True
    return mask


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stamp(n_cases: int, seed: int, lesion_share: float, profile: str,
           patients: list[str] | None = None, n_test: int = 0) -> dict[str, object]:
    stamp: dict[str, object] = {"generator": "medsight.synthetic.demo", "version": BUILD_VERSION, "n_cases": n_cases,
                                "seed": seed}
    if n_test:
        stamp["n_test"] = n_test
    if patients is not None:
        stamp["patients"] = patients
    if lesion_share != LESION_SHARE:
        stamp["lesion_share"] = lesion_share
    if profile != DEFAULT_LESION_PROFILE:
        stamp["lesion_profile"] = profile
    return stamp


def build_demo_dataset(root: Path, n_cases: int | None = None, seed: int = 0, quiet: bool = False,
                       lesion_share: float = LESION_SHARE, workers: int | None = None,
                       lesion_profile: str = DEFAULT_LESION_PROFILE, patients: Iterable[str] | None = None,
                       n_test: int = 0) -> Path:
    """Build (or reuse) the demo dataset under ``root``; returns ``root``.

    Deterministic from ``seed``: the same arguments give byte-identical images and labels, whatever the number
    of ``workers`` (threads; default: up to 2, one per core). A finished build leaves ``.demo_build.json``; a
    later call with the same arguments returns at once. A partial build (killed run) is simply redone.
    Concurrent callers on one folder wait for each other through a file lock. ``patients`` (ids of the
    ``n_cases`` plan) builds only their cases, byte-identical to the same cases of the whole build (every case has
    its own seeds): a test that trains on a few of the demo's patients need not simulate the rest. ``n_test``
    adds that many held-out test cases of the training sites after the ``n_cases`` (``demo_holdout``: manifest
    ``split = test``, kept out of every fold); the ``n_cases`` stay byte-identical to a build without them.
    """
    root = Path(root)
    n = DEFAULT_N_CASES if n_cases is None else int(n_cases)
    stamp_path = root / ".demo_build.json"
    only = None if patients is None else sorted(set(patients))
    want = _stamp(n, seed, lesion_share, lesion_profile, only, n_test)
    with _locked(root):
        if stamp_path.is_file():
            try:
                if json.loads(stamp_path.read_text()) == want and (root / "manifest.csv").is_file():
                    return root
            except ValueError:
                pass
            stamp_path.unlink()
        specs = plan_cases(n, seed, lesion_share, lesion_profile)
        from medsight.synthetic.demo_holdout import TEST_SPLIT, plan_test_cases  # it builds on this module

        test = plan_test_cases(specs, n_test, seed, lesion_share, get_lesion_profile(lesion_profile))
        test_ids = {spec.case_id for spec in test}
        specs += test
        if only is not None:
            specs = [spec for spec in specs if spec.patient_id in only]
            if {spec.patient_id for spec in specs} != set(only):
                missing = sorted(set(only) - {spec.patient_id for spec in specs})
                raise DatasetError(f"no such patient in the {n}-case demo plan: {', '.join(missing)}")
        n_workers = max(1, min(workers or min(2, os.cpu_count() or 1), len(specs)))
        jobs = [(spec, root) for spec in specs]
        if n_workers == 1:
            rows = [_write_case(job) for job in _progress(jobs, quiet)]
        else:
            # threads, not processes: NumPy, SciPy's resampling and zlib release the GIL (1.6x on 2 cores), and
            # no child process re-imports a caller's unguarded __main__ or inherits a held lock
            with ThreadPoolExecutor(n_workers) as pool:
                rows = list(_progress(pool.map(_write_case, jobs), quiet, total=len(jobs)))
        _write_dataset_json(root, len(specs), seed, lesion_share, get_lesion_profile(lesion_profile), n_test)
        if n_test:  # the split column only where there is a test cohort: other builds keep their manifest
            rows = [{**row, "split": TEST_SPLIT if row["case_id"] in test_ids else ""} for row in rows]
        _write_manifest(root, rows)
        atomic_write_text(stamp_path, json.dumps(want, sort_keys=True))
    return root


def _write_case(job: tuple[_CaseSpec, Path]) -> dict[str, object]:
    """Simulate one case and write its image and label; returns its manifest row (runs in a worker thread)."""
    spec, root = job
    image, label, info = _make_case(spec)
    img_rel = f"imagesTr/{spec.case_id}_0000.nii.gz"
    lab_rel = f"labelsTr/{spec.case_id}.nii.gz"
    write_nifti(image, root / img_rel, sidecar=False)
    write_nifti(label, root / lab_rel, dtype=np.uint8, sidecar=False)
    return {"case_id": spec.case_id, "image": img_rel, "label": lab_rel, "patient_id": spec.patient_id,
            "site": spec.site.name, "scanner": spec.site.scanner, "sex": spec.sex, "age": spec.age, **info}


def _progress(items: Iterable[T], quiet: bool, total: int | None = None) -> Iterator[T]:
    if quiet:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc="demo data", unit="case", leave=False, total=total)


def _write_dataset_json(root: Path, n: int, seed: int, lesion_share: float, lesion: LesionProfile,
                        n_test: int = 0) -> None:
    tpl = _template()
    meta = {
        "name": "MedsightDemoBrain",
        "description": ("SIMULATED brain T1 MRI: every case is the one real MNI ICBM152 2009a template (shipped in "
                        "nilearn) deformed, resampled to a site grid, with contrast, bias, Rician noise and, in a "
                        "share of cases, a simulated lesion. Not patient data."),
        "reference": "Fonov et al., NeuroImage 2011 (MNI ICBM152 2009a); built by medsight.synthetic.demo",
        "licence": "MNI ICBM152 2009a terms (free use with attribution); see the McConnell Brain Imaging Centre",
        "tensorImageSize": "3D",
        "channel_names": CHANNELS,
        "labels": LABELS,
        "numTraining": n,
        "file_ending": ".nii.gz",
        "medsight": {"seed": seed, "version": BUILD_VERSION, "lesion_share": lesion_share,
                     "lesion_profile": {"name": lesion.name, "cnr": list(lesion.cnr),
                                        "hypointense_share": lesion.hypointense_share,
                                        "description": lesion.description},
                     "training_sites": list(TRAINING_SITES),
                     "unseen_site": UNSEEN_SITE,
                     **({"held_out_test_cases": n_test} if n_test else {}),
                     "sites": {s.name: {"scanner": s.scanner, "spacing_mm": list(s.spacing), "noise": s.noise,
                                        "gamma": s.gamma, "bias": s.bias, "gain": s.gain} for s in SITES},
                     "template_files": [{"path": s.path, "sha256": s.sha256} for s in tpl.sources]},
    }
    atomic_write_text(root / "dataset.json", json.dumps(meta, indent=2))


def _write_manifest(root: Path, rows: list[dict[str, object]]) -> None:
    buf = io.StringIO()
    columns = list(MANIFEST_COLUMNS) + (["split"] if rows and "split" in rows[0] else [])
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "manifest.csv", buf.getvalue())
