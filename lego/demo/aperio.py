"""Write pyramidal Aperio-style TIFF/SVS files tile by tile.

OpenSlide recognises vendor ``aperio`` when the first page's ImageDescription starts with
"Aperio Image Library" and reads ``MPP``/``AppMag`` from it; pyramid levels must be separate tiled
pages (one page per level) and the second page a stripped thumbnail. Tiles are produced by a
callback and streamed, so no whole level is ever held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from lego.io import atomic_path

TILE = 256
# render(downsample, x, y, w, h) -> uint8 (h, w, 3), where x, y, w, h are in that level's pixels; the
# array may be a read-only view (a glass-only region is the background broadcast): copy before writing
RenderFn = Callable[[float, int, int, int, int], np.ndarray]


def _tiles(render: RenderFn, ds: float, width: int, height: int) -> Iterator[np.ndarray]:
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            tile = np.full((TILE, TILE, 3), 255, np.uint8)
            w, h = min(TILE, width - x), min(TILE, height - y)
            tile[:h, :w] = render(ds, x, y, w, h)
            yield tile


def write_aperio_tiff(
    path: str | Path,
    width: int,
    height: int,
    render: RenderFn,
    *,
    mpp: float,
    app_mag: int,
    level_factor: int = 4,
    min_level_side: int = 256,
    thumbnail_side: int = 768,
    compression: str = "jpeg",
) -> None:
    """Write a pyramid (downsample factor ``level_factor`` per level) with an Aperio description."""
    levels = [1]
    while max(width, height) / (levels[-1] * level_factor) >= min_level_side:
        levels.append(levels[-1] * level_factor)
    desc0 = (
        f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) "
        f"synthetic|AppMag = {app_mag}|MPP = {mpp:.4f}|Filename = {Path(path).stem}"
    )
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
            for i, ds in enumerate(levels):
                w, h = int(np.ceil(width / ds)), int(np.ceil(height / ds))
                tif.write(
                    _tiles(render, ds, w, h),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(TILE, TILE),
                    photometric="rgb",
                    compression=compression,
                    compressionargs={"level": 85} if compression == "jpeg" else None,
                    description=desc0 if i == 0 else f"Aperio Image Library v12.0.15 \r\n{w}x{h} -> level {i}",
                    metadata=None,
                    subfiletype=0 if i == 0 else 1,
                )
                if i == 0:
                    tds = max(width, height) / thumbnail_side
                    tw, th = int(width / tds), int(height / tds)
                    tif.write(
                        render(tds, 0, 0, tw, th),
                        photometric="rgb",
                        compression=compression,
                        rowsperstrip=16,
                        description=f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> {tw}x{th} thumbnail",
                        metadata=None,
                        subfiletype=1,
                    )
