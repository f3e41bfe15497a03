"""One reader for every OpenSlide format, with microns-per-pixel handling.

Working in microns (not pyramid levels) is what makes patches comparable across scanners: a
slide scanned at 40x and one at 20x give the same physical patch. Slides without mpp metadata
fail with a clear reason unless the user supplies a fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lego.errors import InputError, SlideError


def _openslide():
    try:
        import openslide
    except ImportError as exc:  # pragma: no cover - install problem
        raise SlideError("-", f"OpenSlide is not importable ({exc}); run `pip install openslide-python openslide-bin`") from None
    return openslide


@dataclass
class Slide:
    """An open slide with its level-0 microns per pixel resolved."""

    path: Path
    handle: object
    mpp: float
    mpp_source: str  # "metadata" or "fallback"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def vendor(self) -> str:
        return str(self.handle.properties.get("openslide.vendor", "unknown"))

    @property
    def dimensions(self) -> tuple[int, int]:
        return tuple(self.handle.dimensions)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(d) for d in self.handle.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self.handle.level_downsamples]

    def best_level(self, downsample: float) -> int:
        """Highest-resolution-saving level whose downsample does not exceed ``downsample``.

        Reading from a level at most as coarse as needed and resizing down keeps full detail.
        """
        ok = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * 1.001]
        return max(ok) if ok else 0

    def _read_rgba(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """A region (level-0 top-left ``x, y``) as a read-only HWC RGBA uint8 array."""
        openslide = _openslide()
        try:
            region = self.handle.read_region((int(x), int(y)), int(level), (int(size[0]), int(size[1])))
        except openslide.OpenSlideError as exc:
            raise SlideError(self.path, f"cannot read pixels at ({x}, {y}) level {level}: {exc}") from None
        return np.asarray(region, dtype=np.uint8)

    def read_rgb(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a region (level-0 top-left ``x, y``) as an RGB uint8 array, blending alpha onto white."""
        arr = self._read_rgba(x, y, level, size)
        if arr[..., 3].min() == 255:  # the common case: fully inside the scanned area
            # OpenCV drops the alpha channel ~60x faster than numpy's strided arr[..., :3] copy.
            return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
        return _on_white(arr)

    def read_chw(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Like :meth:`read_rgb` but channel-first (3, H, W), the layout encoders take.

        Going from RGBA straight to planar RGB is one copy; the patch reader of the embedding
        stage uses this for every patch that needs no resizing.
        """
        arr = self._read_rgba(x, y, level, size)
        if arr[..., 3].min() < 255:
            arr = _on_white(arr)
        return np.ascontiguousarray(arr.transpose(2, 0, 1)[:3])

    def read_level(self, level: int) -> np.ndarray:
        """The whole of a (low-resolution) level as RGB; used for segmentation and thumbnails."""
        w, h = self.level_dimensions[level]
        if w * h > 64_000_000:
            raise SlideError(self.path, f"level {level} is {w}x{h} pixels, too large to read whole; raise seg_downsample")
        return self.read_rgb(0, 0, level, (w, h))

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite straight (not premultiplied) alpha onto white: outside the scanned area is transparent."""
    a = rgba[..., 3:4].astype(np.uint32)
    rgb = (rgba[..., :3].astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return rgb.astype(np.uint8)


def _mpp_from_properties(props) -> float | None:
    """Level-0 microns per pixel from OpenSlide properties, or None if absent or implausible."""
    values = []
    for key in ("openslide.mpp-x", "openslide.mpp-y"):
        try:
            values.append(float(props[key]))
        except (KeyError, ValueError, TypeError):
            pass
    if not values:
        # Generic TIFFs may carry a resolution in centimetres only.
        unit = props.get("tiff.ResolutionUnit")
        try:
            res = float(props["tiff.XResolution"])
        except (KeyError, ValueError, TypeError):
            res = 0.0
        if unit == "centimeter" and res > 0:
            values.append(10_000.0 / res)
    mpp = float(np.mean(values)) if values else None
    return mpp if mpp and 0.01 < mpp < 100 else None


def open_slide(path: str | Path, mpp_fallback: float | None = None) -> Slide:
    """Open any OpenSlide-readable file, check its pixels can be decoded and resolve its mpp.

    Raises SlideError (with the slide and a fix) for a missing file, a file that is not a slide,
    corrupt tile data, or missing mpp without ``mpp_fallback``.
    """
    path = Path(path)
    if path.is_dir():
        raise SlideError(path, "is a folder, not a slide file; give the slide file itself")
    if not path.is_file():
        raise SlideError(path, "file does not exist")
    if not os.access(path, os.R_OK):  # the environment, not the slide: never recorded as a bad slide
        raise InputError(f"slide {path}: permission denied (mode {path.stat().st_mode & 0o777:o}); make it readable "
                         "for this user (chmod a+r, or ask its owner) and run again -- the slide itself may be fine")
    openslide = _openslide()
    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(path, "not a whole-slide image OpenSlide can read (unsupported or not a slide file)") from None
    except openslide.OpenSlideError as exc:
        raise SlideError(path, f"OpenSlide cannot open it: {exc}") from None
    mpp = _mpp_from_properties(handle.properties)
    source = "metadata"
    if mpp is None:
        if mpp_fallback is None:
            handle.close()
            raise SlideError(
                path,
                "no microns-per-pixel in its metadata; set slides.mpp_fallback in the config "
                "(or --mpp-fallback) to the scanner's resolution, e.g. 0.25 for 40x or 0.5 for 20x",
            )
        mpp, source = float(mpp_fallback), "fallback"
    slide = Slide(path=path, handle=handle, mpp=mpp, mpp_source=source)
    # Decode one small region of the coarsest level: corrupt tile data fails here, not mid-batch.
    last = len(slide.level_dimensions) - 1
    w, h = slide.level_dimensions[last]
    slide.read_rgb(0, 0, last, (min(w, 64), min(h, 64)))
    return slide
