"""Per-slide settings and their defaults, in one light module (no OpenCV, numpy or OpenSlide).

The CLI builds its segment/extract flags from these dataclasses and the indexer reads
``SLIDE_EXTENSIONS``, so a default changes in one place; ``config/schema.yaml`` repeats them for
the workflow's config, and a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every format OpenSlide reads (https://openslide.org/formats/), by file extension.
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".dcm", ".svslide")


@dataclass
class TissueParams:
    """CLAM-style segmentation (see :mod:`lego.slides.tissue`)."""

    seg_downsample: float = 32
    method: str = "fixed"  # "fixed" or "otsu"
    saturation_threshold: int = 8
    median_blur: int = 7
    close_px: int = 4
    min_tissue_area_um2: float = 100_000
    min_hole_area_um2: float = 20_000


@dataclass
class PatchParams:
    """The micron-based patch grid (see :mod:`lego.slides.patches`)."""

    patch_px: int = 256
    patch_mpp: float = 0.5
    min_tissue_fraction: float = 0.5
    overlap: float = 0.0
