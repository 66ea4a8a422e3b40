"""Evidence figures a clinician can read: the image at display size beside the same image with the model's map and
the finding's outline, orientation letters, a colour bar that says what the colour means, and a caption with the
numbers (probability, operating point, decision, referral, lesion volumes and diameters with their table ids).

One grammar for every task: ``classification_figure`` (Grad-CAM map), ``segmentation_figure`` (lesion
probability and outlines), ``slide_figure`` (an RGB whole-slide thumbnail and its heat array), and
``evidence_thumbnail`` (the evidence panel, shrunk, for reports and worklists). Volumes get three orthogonal
views through the evidence peak or the largest lesion (``montage_figure`` adds axial slices through the finding).
Figures are PNG bytes, identical for identical inputs; ``write_figure`` writes them atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medsight.errors import ConfigError
from medsight.explain import display, lesion_table
from medsight.explain.figure import Panel, compose, grey_rgb, thumbnail_uri, with_evidence
from medsight.files import atomic_write_bytes
from medsight.image import Image

LONG_SIDE = 512  # display pixels on the long side of every panel
MAX_LESIONS_IN_CAPTION = 10


@dataclass(frozen=True)
class Finding:
    """What the model concluded, as the prediction table has it (the caption prints exactly these numbers)."""

    label: str
    probability: float | None = None
    calibrated: bool = False
    threshold: float | None = None  # the operating point
    decision: str | None = None  # e.g. "positive" / "negative", or the predicted class
    referral: str | None = None  # "accept" / "refer"; None when no referral rule was applied
    referral_reason: str = ""
    heat_meaning: str = "Grad-CAM evidence, relative to this image's maximum"
    outline_meaning: str = "region where the evidence is >= 0.5 around its peak"
    basis: str = ""  # how probability and decision were obtained, when the line above does not say it


def caption(finding: Finding, lesions: list[dict[str, Any]] | None = None, notes: tuple[str, ...] = (),
            lesion_source: str = "ids as in lesions.csv") -> list[str]:
    """The caption's lines: finding and probability, decision at the operating point, referral, lesions, notes."""
    f = finding
    line = f"Finding '{f.label}'"
    d = _digits(f.probability, f.threshold)
    if f.probability is not None:
        line += f": probability {f.probability:.{d}f} ({'calibrated' if f.calibrated else 'not calibrated'})"
    if f.decision is not None:
        line += (f"; decision at the operating point {f.threshold:.{d}f}: {f.decision.upper()}"
                 if f.threshold is not None else f"; decision: {f.decision.upper()}")
    lines = [line] + ([f.basis] if f.basis else [])
    if f.referral is None:
        lines.append("Referral: not assessed (no referral rule with this model)")
    else:
        lines.append(f"Referral: {f.referral.upper()}" + (f" - {f.referral_reason}" if f.referral_reason else
                                                           " - no reason to refer"))
    if lesions is not None:
        items = [f"#{r['lesion_id']} {r['volume_ml']:.2f} ml, longest {r['longest_diameter_mm']:.1f} mm"
                 + (f" (REFER: {r.get('reasons') or 'no reason given'})" if r.get("decision") == "refer" else "")
                 for r in sorted(lesions, key=lambda r: -r["volume_ml"])[:MAX_LESIONS_IN_CAPTION]]
        more = len(lesions) - len(items)
        lines.append(f"Lesions (n = {len(lesions)}, largest first; {lesion_source}): " + ("; ".join(items) or "none")
                     + (f"; +{more} smaller not listed" if more > 0 else ""))
    return lines + list(notes)


def _digits(p: float | None, t: float | None) -> int:
    """3 decimals, more (up to 6) when probability and threshold would print the same but differ."""
    d = 3
    while p is not None and t is not None and p != t and d < 6 and round(p, d) == round(t, d):
        d += 1
    return d


def write_figure(path: str | Path, data: bytes) -> Path:
    """Write figure bytes atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def _grey(image: Image) -> np.ndarray:
    a = np.asarray(image.array, dtype=np.float32)
    return np.nan_to_num(a.mean(axis=-1) if image.is_multichannel else a)


def _on_grid(a: np.ndarray | None, image: Image, what: str) -> np.ndarray | None:
    """An array on the image's voxels (a lone slice axis may be missing, as ``spatial_array`` drops it)."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.shape != image.shape:
        if a.size != int(np.prod(image.shape)):
            raise ConfigError(f"the {what} has shape {a.shape} but the image {image.shape}; resample it first")
        a = a.reshape(image.shape)
    return a


def _peak_component(heat: np.ndarray, level: float = 0.5) -> tuple[tuple[int, ...], np.ndarray]:
    """The heat's peak voxel and the connected region around it where heat >= level."""
    peak = tuple(int(v) for v in np.unravel_index(int(np.argmax(heat)), heat.shape))
    labelled, _ = lesion_table.components(heat >= level * float(heat.max()))
    return peak, labelled == labelled[peak] if labelled[peak] else np.zeros(heat.shape, bool)


def _inside_centre(component: np.ndarray) -> tuple[int, ...]:
    """The component's voxel nearest to its centre of mass (a lesion's centre may fall outside a curved one)."""
    pts = np.argwhere(component)
    c = pts.mean(axis=0)
    return tuple(int(v) for v in pts[int(np.argmin(((pts - c) ** 2).sum(axis=1)))])


def _largest_centre(mask: np.ndarray) -> tuple[int, ...]:
    """A voxel at the centre of the mask's largest connected component."""
    labelled, n = lesion_table.components(mask)
    sizes = ndimage.sum_labels(np.ones_like(labelled), labelled, np.arange(1, n + 1))
    return _inside_centre(labelled == int(np.argmax(sizes)) + 1)


def _rows(image: Image, at: tuple[int, ...], heat: np.ndarray | None, finding: np.ndarray | None,
          reference: np.ndarray | None, ids: dict[int, Any] | None, labelled: np.ndarray | None,
          long_side: int, where: str, views: tuple[str, ...] | None = None) -> list[Panel]:
    """One Panel (image | evidence) per view through voxel ``at``."""
    grey = _grey(image)
    low, high, _ = display.window_for(image, grey)
    all_views = display.through(display.patient_views(image.geometry, image.shape), at)
    panels = []
    for name, v in all_views.items():
        if views is not None and name not in views:
            continue
        out_shape = display.display_shape(*v.extent_mm(image.shape, image.spacing), long_side)

        def show(a: np.ndarray | None, order: int = 1) -> np.ndarray | None:
            return None if a is None else display.resample(v.take(np.asarray(a, np.float32)), out_shape, order)

        g = grey_rgb(show(grey), low, high)
        fm, rm = show(finding), show(reference)
        ev = with_evidence(g, show(heat), None if fm is None else fm >= 0.5, None if rm is None else rm >= 0.5)
        notes = []
        if ids and labelled is not None:
            lab_view = show(labelled, order=0).round().astype(int)
            for comp, lid in sorted(ids.items(), key=lambda kv: str(kv[1])):
                rr, cc = np.nonzero(lab_view == comp)
                if rr.size:
                    notes.append((f"#{lid}", float(cc.max()) + 3, float(rr.min()) - 1))
        title = name if v.fixed_axis is None else f"{name} (single slice)" if image.shape[v.fixed_axis] == 1 else (
            f"{name} through {where}: slice {v.index} of 0..{image.shape[v.fixed_axis] - 1} on index axis {v.fixed_axis}")
        panels.append(Panel(title, [g, ev], labels=v.labels, notes=notes))
    return panels


def _notes(image: Image, at: tuple[int, ...], where: str, outline_meaning: str, reference: bool) -> tuple[str, ...]:
    _, _, window = display.window_for(image, _grey(image))
    sp = " x ".join(f"{s:.2f}" for s in image.spacing)
    lines = [f"Red outline: {outline_meaning}." + (" Cyan outline: the annotated finding." if reference else ""),
             f"Grey: {window}. Voxels {' x '.join(map(str, image.shape))}, spacing {sp} mm; views through {where} "
             f"at voxel {tuple(int(v) for v in at)}."]
    if image.geometry.ndim == 2:
        lines.append("Orientation: unknown (a 2D image carries no patient geometry); shown as stored.")
    return tuple(lines)


def classification_figure(image: Image, heat: np.ndarray | None, finding: Finding, *,
                          reference: np.ndarray | None = None, title: str = "", long_side: int = LONG_SIDE) -> bytes:
    """Evidence for one classifier output: views through the heat's peak, the region around the peak outlined."""
    heat = _on_grid(heat, image, "heatmap")
    reference = _on_grid(reference, image, "reference mask")
    if heat is not None and float(heat.max()) > 0:
        at, region = _peak_component(heat)
        where = "the evidence peak"
    else:
        at, region, where = tuple(s // 2 for s in image.shape), None, "the image centre (no evidence map)"
    panels = _rows(image, at, heat, region, reference, None, None, long_side, where)
    text = caption(finding, notes=_notes(image, at, where, finding.outline_meaning, reference is not None))
    return compose(panels, [title, *text] if title else text, finding.heat_meaning if heat is not None else None,
                   {"Title": title or finding.label})


def _lesion_setup(image: Image, mask: np.ndarray, lesions: Any) -> tuple[np.ndarray, int, list[dict[str, Any]], str]:
    """Components of the predicted mask, the lesion table (given, or measured here) and where it came from."""
    labelled, n = lesion_table.components(mask)
    if lesions is None:
        return labelled, n, lesion_table.measure(mask, image.geometry), "measured here: no lesion table given"
    return labelled, n, lesion_table.normalise(lesions), "ids as in lesions.csv"


def segmentation_figure(image: Image, mask: np.ndarray, finding: Finding, *, probability: np.ndarray | None = None,
                        lesions: Any = None, reference: np.ndarray | None = None, title: str = "",
                        long_side: int = LONG_SIDE) -> bytes:
    """Evidence for a segmented finding: views through the largest lesion, every lesion outlined with its id,
    the class probability as the heat, and each lesion's volume and longest diameter in the caption."""
    mask = _on_grid(mask, image, "mask").astype(bool)
    probability = _on_grid(probability, image, "probability map")
    reference = _on_grid(reference, image, "reference mask")
    labelled, n, table, source = _lesion_setup(image, mask, lesions)
    ids = lesion_table.match(table, labelled, n, image.geometry)
    if n:
        at, where = _largest_centre(mask), "the largest lesion"
    elif reference is not None and np.any(reference):
        at, where = _largest_centre(reference), "the largest annotated lesion (none predicted)"
    elif probability is not None and float(probability.max()) > 0:
        at, where = tuple(int(v) for v in np.unravel_index(int(np.argmax(probability)), probability.shape)), \
            "the highest probability (no lesion predicted)"
    else:
        at, where = tuple(s // 2 for s in image.shape), "the image centre (no lesion predicted)"
    panels = _rows(image, at, probability, mask, reference, ids, labelled, long_side, where)
    text = caption(finding, table, _notes(image, at, where, finding.outline_meaning, reference is not None), source)
    return compose(panels, [title, *text] if title else text,
                   finding.heat_meaning if probability is not None else None, {"Title": title or finding.label})


def montage_figure(image: Image, heat: np.ndarray | None, mask: np.ndarray | None, finding: Finding, *,
                   n_slices: int = 8, per_row: int = 4, long_side: int = 256, title: str = "") -> bytes:
    """Axial slices through the finding (the mask's extent, else where the heat is >= 0.5), evidence only."""
    heat, mask = _on_grid(heat, image, "heatmap"), _on_grid(mask, image, "mask")
    region = mask.astype(bool) if mask is not None else (heat >= 0.5 * float(heat.max()) if heat is not None else None)
    axial = display.patient_views(image.geometry, image.shape).get("axial")
    if axial is None or axial.fixed_axis is None or region is None or not region.any():
        raise ConfigError("a montage needs a volume and a finding (a mask or a heat map) to go through")
    ax = axial.fixed_axis
    ks = np.flatnonzero(np.any(region, axis=tuple(a for a in range(region.ndim) if a != ax)))
    ks = np.unique(np.round(np.linspace(ks.min(), ks.max(), min(n_slices, len(ks)))).astype(int))
    tiles = []
    for k in ks:
        at = tuple(int(k) if a == ax else 0 for a in range(3))
        tiles.append(_rows(image, at, heat, region, None, None, None, long_side, "", views=("axial",))[0].tiles[1])
    panels = [Panel(f"axial slices {', '.join(str(k) for k in ks[i:i + per_row])} of 0..{image.shape[ax] - 1}",
                    tiles[i:i + per_row], kinds=tuple(f"slice{k}" for k in ks[i:i + per_row]), labels=axial.labels)
              for i in range(0, len(tiles), per_row)]
    return compose(panels, [title or finding.label, *caption(finding)], finding.heat_meaning if heat is not None
                   else None, {"Title": title or finding.label})


def slide_figure(thumbnail: np.ndarray, heat: np.ndarray, finding: Finding, *,
                 top_tiles: list[tuple[float, float, float, float]] | None = None, mpp: float | None = None,
                 title: str = "", long_side: int = LONG_SIDE) -> bytes:
    """A whole slide's RGB thumbnail (rows x columns x 3) beside it with its heat (same grid, or any grid of the
    same aspect) and the top tiles outlined and numbered; ``top_tiles`` are (column, row, width, height) in
    thumbnail pixels, best first."""
    rgb = np.asarray(thumbnail, dtype=np.float32)[..., :3] / (255.0 if np.asarray(thumbnail).dtype == np.uint8 else 1)
    h, w = rgb.shape[:2]
    out_shape = display.display_shape(float(w), float(h), long_side)
    base = np.stack([display.resample(rgb[..., c], out_shape) for c in range(3)], axis=-1)
    hm = np.asarray(heat, dtype=np.float32)
    hm = display.resample(hm, out_shape) if hm.shape != out_shape else hm
    tiles_mask = np.zeros(out_shape, bool)
    notes = []
    sy, sx = out_shape[0] / h, out_shape[1] / w
    for rank, (c, r, tw, th) in enumerate(top_tiles or [], start=1):
        r0, c0 = int(round(r * sy)), int(round(c * sx))
        r1, c1 = int(round((r + th) * sy)), int(round((c + tw) * sx))
        tiles_mask[r0:r1, c0:c1] = True
        notes.append((f"{rank}", float(c1) + 2, float(r0) - 1))
    ev = with_evidence(base, hm, tiles_mask if top_tiles else None)
    scale = f"; {mpp * w / out_shape[1]:.1f} um per display pixel" if mpp else ""
    text = caption(finding, notes=(f"Red boxes: the top {len(top_tiles or [])} tiles, numbered by score{scale}.",))
    return compose([Panel(title or "slide thumbnail", [np.clip(base, 0, 1), ev], notes=notes)],
                   [title, *text] if title else text, finding.heat_meaning, {"Title": title or finding.label})


def evidence_thumbnail(image: Image, heat: np.ndarray | None = None, finding_mask: np.ndarray | None = None,
                       reference: np.ndarray | None = None, long_side: int = 192, through_reference: bool = False,
                       outline_peak: bool = True) -> str:
    """The evidence panel of the main view (axial when there is one), shrunk, as a PNG data URI. The view cuts
    through the largest predicted component, else the heat's peak, else the reference (``through_reference``:
    the reference first, so a missed finding is in view). ``outline_peak=False``: with no finding, the heat's
    peak is shown but not outlined (an outline reads as a finding the model did not report)."""
    heat = _on_grid(heat, image, "heatmap")
    finding_mask = _on_grid(finding_mask, image, "mask")
    reference = _on_grid(reference, image, "reference mask")
    if through_reference and reference is not None and np.any(reference):
        at = _largest_centre(reference)
        if heat is not None and finding_mask is None and float(heat.max()) > 0:
            finding_mask = _peak_component(heat)[1]
    elif finding_mask is not None and np.any(finding_mask):
        at = _largest_centre(finding_mask)
    elif heat is not None and float(heat.max()) > 0:
        at, peak = _peak_component(heat)
        finding_mask = peak if outline_peak else None
    elif reference is not None and np.any(reference):
        at = _inside_centre(reference > 0)
    else:
        at = tuple(s // 2 for s in image.shape)
    panels = _rows(image, at, heat, finding_mask, reference, None, None, LONG_SIDE, "")
    main = next((p for p in panels if p.title.startswith("axial")), panels[0])
    return thumbnail_uri(main.tiles[1], long_side)
