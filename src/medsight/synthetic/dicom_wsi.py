"""Write a DICOM whole-slide image (VL Whole Slide Microscopy, TILED_FULL, JPEG) with wsidicom.

Used to turn any slide we can read (the real SVS, a simulated pyramid) into a DICOM WSI, so the DICOM path of the
slide reader is tested on a file that wsidicom itself wrote and validates when reading. The pixels come from
our reader level by level through a small wsidicom ``ImageData`` adapter; wsidicom writes the files and builds the
lower pyramid levels.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from wsidicom import WsiDicom
from wsidicom.codec import Encoder
from wsidicom.geometry import Point, Size, SizeMm
from wsidicom.instance import ImageData, WsiInstance
from wsidicom.metadata import Equipment, Image, Label, OpticalPath, Patient, Pyramid, Series, Slide, Study, WsiMetadata
from wsidicom.metadata.image import ImageType
from wsidicom.metadata.sample import SlideSample
from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema
from wsidicom.source import Source

from medsight.io.slide import Slide as MedsightSlide

TILE = 256


class _SlideLevelData(ImageData):
    """Level 0 of one of our slides, tiled for wsidicom (tiles decoded from the source on demand)."""

    def __init__(self, slide: MedsightSlide, tile: int = TILE) -> None:
        super().__init__(Encoder.create(JPEGBaseline8Bit, 8, "YBR_FULL_422"))
        self._slide, self._tile = slide, tile

    transfer_syntax = property(lambda self: JPEGBaseline8Bit)
    image_size = property(lambda self: Size(*self._slide.dimensions))
    tile_size = property(lambda self: Size(self._tile, self._tile))
    pixel_spacing = property(lambda self: SizeMm(self._slide.mpp / 1000, self._slide.mpp / 1000))
    imaged_size = property(lambda self: None)
    samples_per_pixel = property(lambda self: 3)
    photometric_interpretation = property(lambda self: "YBR_FULL_422")
    bits = property(lambda self: 8)
    image_coordinate_system = property(lambda self: None)
    thread_safe = property(lambda self: False)
    lossy_compression = property(lambda self: [])
    transcoder = property(lambda self: None)

    def get_decoded_tile(self, tile_point: Point, z: float, path: str, cache: bool = True) -> np.ndarray:
        t = self._tile
        w, h = self._slide.dimensions
        x, y = tile_point.x * t, tile_point.y * t
        out = np.full((t, t, 3), 255, np.uint8)  # edge tiles are padded with white, as scanners do
        cw, ch = min(t, w - x), min(t, h - y)
        out[:ch, :cw] = self._slide.read_region(x, y, 0, cw, ch)
        return out

    def get_encoded_tile(self, tile: Point, z: float, path: str) -> bytes:
        return self.encoder.encode(self.get_decoded_tile(tile, z, path))


class _OneLevelSource(Source):
    def __init__(self, instance: WsiInstance, base) -> None:  # noqa: ANN001 - a pydicom Dataset
        super().__init__()
        self._instance, self._base = instance, base

    base_dataset = property(lambda self: self._base)
    level_instances = property(lambda self: [self._instance])
    label_instances = property(lambda self: [])
    overview_instances = property(lambda self: [])
    thumbnail_instances = property(lambda self: [])
    annotation_instances = property(lambda self: [])

    def close(self) -> None:
        pass


def write_dicom_wsi(slide: MedsightSlide, out_dir: str | Path, levels: int = 3) -> list[Path]:
    """Write ``slide`` as a DICOM WSI folder with ``levels`` pyramid levels (factor 2); returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mpp = slide.mpp / 1000
    metadata = WsiMetadata(study=Study(uid=generate_uid(), identifier="medsight"), series=Series(uid=generate_uid(), number=1),
                           patient=Patient(name="Simulated^Slide", identifier="SIM"), frame_of_reference_uid=generate_uid(),
                           dimension_organization_uids=[generate_uid()], equipment=Equipment(
        manufacturer="medsight", model_name="simulated", software_versions=["medsight"]), slide=Slide(identifier="SIM-1", samples=[SlideSample(identifier="SIM-1-A", uid=generate_uid())]),
        pyramid=Pyramid(image=Image(pixel_spacing=SizeMm(mpp, mpp)), optical_paths=[OpticalPath()], uid=generate_uid()), label=Label())
    base = WsiMetadataDicomSchema().dump(metadata, ImageType.VOLUME)
    instance = WsiInstance.create_instance(_SlideLevelData(slide), base, ImageType.VOLUME, pyramid_index=0)
    with WsiDicom(_OneLevelSource(instance, base)) as wsi:
        written = wsi.save(out_dir, add_missing_levels=levels > 1, include_levels=list(range(levels)),
                           workers=1)
    return [Path(str(p)) for p in _as_list(written)]


def _as_list(items: Iterable) -> list:
    return list(items)
