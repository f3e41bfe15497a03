"""CLAM-style tissue segmentation on a low-resolution level.

HSV saturation separates stained tissue from white glass; a median blur removes speckle, a
morphological close joins fragments, and contour area filters (in square microns, so they mean the
same at any magnification) drop dust. Holes (lumina, tears) are kept as inner contours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lego.errors import InputError, SlideError
from lego.io import atomic_path, read_parquet_metadata, write_arrow_table
from lego.slides.params import TissueParams  # noqa: F401  (re-exported: callers import it from here)
from lego.slides.reader import Slide

MAX_SEG_SIDE = 8000  # beyond this a level is too large to segment whole; use a thumbnail instead


@dataclass
class Tissue:
    """Tissue contours in level-0 pixel coordinates, plus what produced them."""

    contours: list[np.ndarray]  # each (K, 2) int64 level-0 (x, y)
    is_hole: list[bool]
    parent: list[int]  # index of the enclosing tissue contour for holes, -1 otherwise
    meta: dict = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)  # the segmentation image, for QC

    @property
    def n_tissue(self) -> int:
        return sum(1 for h in self.is_hole if not h)

    def mask(self, downsample: float, shape: tuple[int, int]) -> np.ndarray:
        """Rasterise tissue minus holes at ``downsample`` into a uint8 mask of ``shape`` (h, w)."""
        mask = np.zeros(shape, dtype=np.uint8)
        scaled = [np.round(c / downsample).astype(np.int32).reshape(-1, 1, 2) for c in self.contours]
        tissue = [c for c, h in zip(scaled, self.is_hole) if not h]
        holes = [c for c, h in zip(scaled, self.is_hole) if h]
        if tissue:
            cv2.fillPoly(mask, tissue, 1)
        if holes:
            cv2.fillPoly(mask, holes, 0)
        return mask


def _seg_image(slide: Slide, target_downsample: float) -> tuple[np.ndarray, float]:
    """RGB image near ``target_downsample`` and its actual downsample from level 0."""
    level = slide.best_level(target_downsample)
    w, h = slide.level_dimensions[level]
    if max(w, h) <= MAX_SEG_SIDE:
        return slide.read_level(level), slide.level_downsamples[level]
    # No coarse level in the pyramid: let OpenSlide build a thumbnail of the requested size.
    W, H = slide.dimensions
    size = (max(1, int(W / target_downsample)), max(1, int(H / target_downsample)))
    thumb = np.asarray(slide.handle.get_thumbnail(size).convert("RGB"))
    return thumb, W / thumb.shape[1]


def segment_tissue(slide: Slide, params: TissueParams) -> Tissue:
    """Find tissue contours; raise SlideError when none survive the filters."""
    img, ds = _seg_image(slide, params.seg_downsample)
    sat = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]
    k = params.median_blur if params.median_blur % 2 == 1 else params.median_blur + 1
    sat = cv2.medianBlur(sat, k) if min(sat.shape) >= k else sat
    if params.method == "otsu":
        thr, binary = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        thr, binary = cv2.threshold(sat, params.saturation_threshold, 255, cv2.THRESH_BINARY)
    if params.close_px > 0:
        kernel = np.ones((params.close_px, params.close_px), np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    found, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    um2_per_px = (ds * slide.mpp) ** 2
    contours, is_hole, parent = [], [], []
    index_of: dict[int, int] = {}
    if hierarchy is not None:
        hier = hierarchy[0]
        for i, c in enumerate(found):  # outer contours first
            if hier[i][3] == -1 and cv2.contourArea(c) * um2_per_px >= params.min_tissue_area_um2:
                index_of[i] = len(contours)
                contours.append(c.reshape(-1, 2).astype(np.float64) * ds)
                is_hole.append(False)
                parent.append(-1)
        for i, c in enumerate(found):
            p = hier[i][3]
            if p in index_of and cv2.contourArea(c) * um2_per_px >= params.min_hole_area_um2:
                contours.append(c.reshape(-1, 2).astype(np.float64) * ds)
                is_hole.append(True)
                parent.append(index_of[p])
    meta = {
        "slide": slide.name,
        "width": slide.dimensions[0],
        "height": slide.dimensions[1],
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "seg_downsample": float(ds),
        "threshold": float(thr),
        "method": params.method,
    }
    tissue = Tissue([np.round(c).astype(np.int64) for c in contours], is_hole, parent, meta, image=img)
    if tissue.n_tissue == 0:
        raise SlideError(
            slide.path,
            f"no tissue found (saturation threshold {thr:.0f}, min area {params.min_tissue_area_um2:g} um2); "
            "lower tissue.saturation_threshold or tissue.min_tissue_area_um2 if the slide does hold tissue",
        )
    tissue.meta["tissue_area_um2"] = float(
        sum((-1 if h else 1) * cv2.contourArea((c / ds).astype(np.float32)) for c, h in zip(tissue.contours, is_hole))
        * um2_per_px
    )
    tissue.meta["status"] = "ok"
    return tissue


def write_tissue(tissue: Tissue, path: str | Path) -> None:
    """Contours as parquet (one row per contour, list columns x and y) with the metadata attached."""
    import pyarrow as pa

    columns = {
        "contour_id": _arrow(np.arange(len(tissue.contours), dtype=np.int32)),
        "is_hole": _arrow(np.asarray(tissue.is_hole, dtype=bool)),
        "parent": _arrow(np.asarray(tissue.parent, dtype=np.int32)),
        "x": _arrow_lists([c[:, 0] for c in tissue.contours]),
        "y": _arrow_lists([c[:, 1] for c in tissue.contours]),
    }
    write_arrow_table(pa.Table.from_arrays(list(columns.values()), names=list(columns)), path, metadata=tissue.meta)


def _arrow(values: np.ndarray):
    """A 1-d int32, int64 or bool array as an arrow array, from its buffer. Why not ``pa.array``: it
    imports pandas (0.5 s of each per-slide segmentation job's 1 s) to ask whether it was given one."""
    import pyarrow as pa

    if values.dtype == bool:
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    kind = {np.dtype(np.int32): pa.int32(), np.dtype(np.int64): pa.int64()}[values.dtype]
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(np.ascontiguousarray(values))])


def _arrow_lists(rows: list[np.ndarray]):
    """Integer rows as an arrow list<int64> column (see :func:`_arrow`)."""
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    values = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return pa.Array.from_buffers(pa.list_(pa.int64()), len(rows), [None, pa.py_buffer(offsets)], children=[_arrow(values)])


def read_tissue(path: str | Path) -> Tissue:
    """The contours written by :func:`write_tissue`, read with pyarrow alone: pandas would double the
    start-up of the per-slide patch extraction (0.4 s of a 0.65 s job, times every slide)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read()  # not read_table: it imports pyarrow.dataset (0.5 s)
        meta = read_parquet_metadata(path)
        xs, ys = table.column("x").to_pylist(), table.column("y").to_pylist()
        contours = [np.stack([np.asarray(x), np.asarray(y)], axis=1).astype(np.int64)
                    for x, y in zip(xs, ys)]
        holes = [bool(h) for h in table.column("is_hole").to_pylist()]
        return Tissue(contours, holes, [int(p) for p in table.column("parent").to_pylist()], meta)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as exc:  # not a tissue table written by `lego segment`
        raise InputError(f"{path}: not a tissue table written by `lego segment` ({type(exc).__name__}: {exc}); "
                         "run segmentation again") from None


def write_failed_tissue(slide_name: str, reason: str, parquet: str | Path, png: str | Path,
                        stage: str = "segment_tissue") -> None:
    """Record a failed slide: an empty contour table whose metadata says why (and at which stage), and a PNG saying so."""
    write_tissue(Tissue([], [], [], {"slide": slide_name, "status": "failed", "reason": reason, "stage": stage}), parquet)
    img = np.full((120, 900, 3), 255, np.uint8)
    cv2.putText(img, f"FAILED: {slide_name}", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (200, 0, 0), 2)
    cv2.putText(img, reason[:110], (10, 85), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    write_png(img, png)


def write_png(rgb: np.ndarray, path: str | Path) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError(f"could not encode PNG for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def draw_qc(tissue: Tissue, path: str | Path, max_side: int = 1024) -> None:
    """QC thumbnail: the segmentation image with tissue (green) and holes (blue) outlined."""
    if tissue.image is None:
        raise ValueError("draw_qc needs the segmentation image (Tissue from segment_tissue, not read_tissue)")
    img = np.ascontiguousarray(tissue.image)
    ds = tissue.meta["seg_downsample"]
    scale = min(1.0, max_side / max(img.shape[:2]))
    if scale < 1.0:
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    for c, hole in zip(tissue.contours, tissue.is_hole):
        pts = np.round(c / ds * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], True, (0, 0, 255) if hole else (0, 160, 0), 2)  # RGB
    write_png(img, path)
