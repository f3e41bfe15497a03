"""Patch and feature files that TRIDENT, CLAM/MCAT and STAMP read, and theirs read back with
their patch geometry.

What each tool reads (checked against their sources; the tests re-state these checks):

- TRIDENT (patches and features ``.h5``): ``coords`` (N, 2) int64 level-0 pixels whose dataset
  attributes give ``patch_size`` (pixels at ``target_magnification``), ``level0_magnification``
  and ``target_magnification`` (without them it falls back to CLAM's two); its slide encoders
  need ``patch_size_level0``. Magnification follows its ``mpp = 10 / magnification`` rule.
- CLAM (patches ``.h5``): ``coords`` attributes ``patch_level`` and ``patch_size`` (pixels at that
  level; it reads ``read_region(xy, patch_level, (patch_size, patch_size))``), ``name`` to stitch.
  CLAM/MCAT training reads ``pt_files/<slide>.pt``: one float tensor (N, D), ``torch.load``-ed.
- STAMP (features ``.h5``): ``feats`` (N, D) and ``coords`` (N, 2) in micrometres, with file
  attributes ``unit = "um"``, ``tile_size_um``, ``tile_size_px``, ``extractor`` and
  ``feat_type = "tile"``; older files give ``tile_size`` (+ ``unit``) or, before that, coordinates
  in steps of 224 px at 256 um per tile.

One ``patch_size`` serves TRIDENT and CLAM at once: it is the read size at the pyramid level the
patch is read from (``read_px`` at ``read_level``), and TRIDENT's ``target_magnification`` is that
level's magnification, so both read exactly the level-0 square ``patch_size_level0``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lego.errors import InputError

STAMP_LEGACY_TILE_PX, STAMP_LEGACY_TILE_UM = 224, 256.0  # STAMP v1: 224-px tiles of 256 um


def patch_file_attrs(geo: dict) -> dict:
    """TRIDENT's and CLAM's ``coords`` attributes from our patch geometry (see the module doc)."""
    level0_mag = 10.0 / float(geo["level0_mpp"])
    downsample = float(geo["read_downsample"])
    return {
        "patch_size": int(geo["read_px"]),
        "patch_level": int(geo["read_level"]),
        "level0_magnification": level0_mag,
        "target_magnification": level0_mag / downsample,
        "overlap": int(round(geo["read_px"] * geo["overlap_fraction"])),  # TRIDENT: pixels at target magnification
        "downsample": np.array([downsample, downsample]),
        "name": Path(str(geo["slide_name"])).stem,
        "level0_width": int(geo["slide_width"]),
        "level0_height": int(geo["slide_height"]),
    }


def grid_stride(coords: np.ndarray) -> float:
    """The patch grid's step along x (the smallest positive gap between x positions); 0 with none."""
    steps = np.diff(np.unique(coords[:, 0])) if len(coords) > 1 else np.array([])
    return float(steps[steps > 0].min()) if (steps > 0).any() else 0.0


def _tile_size(attrs: dict, key: str) -> float:
    value = float(attrs[key])
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{key} = {attrs[key]!r} is not a tile size; the STAMP file's geometry is broken")
    return value


def stamp_geometry(attrs: dict, coords: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(coordinates in um, tile size in um) of a STAMP file, decided the way STAMP's reader does;
    None when the file does not say (no unit, no tile size, no 224-px stride). A unit other than
    um, or a tile size that is not a positive number, is an error (never re-read as micrometres)."""
    unit = attrs.get("unit")
    if unit not in (None, "um"):
        raise InputError(f"coordinates in unit {unit!r}; STAMP files give micrometres ('um')")
    if attrs.get("tile_size") and unit == "um":
        return coords.astype(np.float64), _tile_size(attrs, "tile_size")
    if attrs.get("tile_size_um") is not None:
        return coords.astype(np.float64), _tile_size(attrs, "tile_size_um")
    stride = float(attrs.get("tile_size") or grid_stride(coords))
    if round(stride) == STAMP_LEGACY_TILE_PX:
        return coords.astype(np.float64) / STAMP_LEGACY_TILE_PX * STAMP_LEGACY_TILE_UM, STAMP_LEGACY_TILE_UM
    return None


def _checked_geometry(geometry: dict) -> dict:
    """Micrometres per pixel and patch sizes are finite positive numbers: a NaN or negative
    ``level0_mpp`` copied from a source file would make every exported coordinate NaN or negative."""
    for key in ("level0_mpp", "patch_size_level0", "tile_size_um"):
        if key not in geometry:
            continue
        try:
            ok = np.isfinite(float(geometry[key])) and float(geometry[key]) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"'coords' attribute {key} = {geometry[key]!r} is not a positive number; fix or drop it "
                             "(give the slide's microns per pixel with --mpp)")
    return geometry


def imported_geometry(attrs: dict, coords_attrs: dict, coords: np.ndarray, mpp: float | None,
                      is_stamp: bool) -> tuple[np.ndarray, dict]:
    """Coordinates and ``coords`` attributes for our copy of an external feature file.

    Level-0 pixels where the source gives them (TRIDENT/CLAM), or where a STAMP file's micrometres
    can be converted with the slide's ``mpp``; otherwise the micrometres are kept and the unit says
    so (``unit = "um"``): geometry is never silently re-interpreted."""
    if coords_attrs.get("unit") == "none":  # no coordinates in the source: said, not faked
        return coords, coords_attrs
    if not is_stamp:
        return coords, _checked_geometry({"unit": "px", **coords_attrs, **({"level0_mpp": mpp} if mpp else {})})
    geo = stamp_geometry(attrs, coords)
    if geo is None:
        return coords, {"unit": "unknown"}
    um, tile_um = geo
    if mpp:
        geometry = {"unit": "px", "patch_size_level0": int(round(tile_um / mpp)), "level0_mpp": mpp, "tile_size_um": tile_um}
    else:
        geometry = {"unit": "um", "tile_size_um": tile_um}
    if attrs.get("tile_size_px"):
        geometry["tile_size_px"] = int(attrs["tile_size_px"])
    # Without the slide's mpp the micrometres are kept as they are (not rounded to whole um).
    return (np.round(um / mpp) if mpp else um), geometry


def read_clam_pt(path: str | Path) -> np.ndarray:
    """A CLAM/MCAT ``pt_files`` bag: one (N, D) float tensor, loaded without unpickling code."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a plain tensor .pt bag ({' '.join(str(exc).split())[:160]}); a TRIDENT .pt "
                         "holds a pickled numpy array, which is not loaded here: import its .h5 file instead") from None
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2:
        raise InputError(f"{path}: expected one (patches x dim) tensor, found {type(obj).__name__}"
                         f"{' of shape ' + str(tuple(obj.shape)) if isinstance(obj, torch.Tensor) else ''}")
    if obj.layout != torch.strided or not (obj.is_floating_point() or obj.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{path}: a {obj.dtype} {str(obj.layout).split('.')[-1]} tensor is not patch features; "
                         "expected a dense real-valued (patches x dim) tensor")
    return obj.float().numpy()


def write_clam_pt(features: np.ndarray, out: str | Path) -> None:
    """CLAM/MCAT's ``pt_files/<slide>.pt``: ``torch.save`` of one float32 (N, D) tensor."""
    import torch

    from lego.io import atomic_path

    try:
        with atomic_path(out) as tmp:
            torch.save(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), tmp)
    except RuntimeError as exc:  # torch reports an unwritable path as a RuntimeError
        raise InputError(f"{out}: cannot be written ({' '.join(str(exc).split())[-120:]}); check the folder") from None


def _stamp_coords(coords: np.ndarray, attrs: dict, where) -> tuple[np.ndarray, float]:
    """Coordinates in um and the tile size in um for a STAMP export. Micrometres already there
    (a STAMP import) are kept exactly, tile size included; level-0 pixels need the slide's mpp."""
    if attrs.get("unit") == "um" and attrs.get("tile_size_um"):
        return np.asarray(coords, dtype=np.float64), float(attrs["tile_size_um"])
    mpp, size0 = attrs.get("level0_mpp"), attrs.get("patch_size_level0")
    if not size0:
        raise InputError(f"{where}: records no patch size (CLAM .h5 files carry none), so the tile size in um that "
                         "STAMP needs is unknown; export features made by `lego embed`, or import a TRIDENT or STAMP file")
    if not mpp:
        raise InputError(f"{where}: lacks level0_mpp (features from `lego embed` have it; re-import an external file "
                         "with --mpp); STAMP needs micrometres")
    try:
        _checked_geometry({"level0_mpp": mpp, "patch_size_level0": size0})
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    tile_um = float(attrs["tile_size_um"]) if attrs.get("tile_size_um") else float(size0) * float(mpp)
    return np.asarray(coords, dtype=np.float64) * float(mpp), tile_um


def write_stamp(features: np.ndarray, coords: np.ndarray, attrs: dict, out: str | Path, src: str | Path = "") -> None:
    """A STAMP tile-feature file: ``feats``, ``coords`` in um and the file attributes STAMP reads.

    ``stamp_version`` is left out on purpose: STAMP refuses a file newer than itself."""
    import h5py

    from lego.io import atomic_path
    from lego.slides.encoders.foundation import stamp_extractor

    coords_um, tile_um = _stamp_coords(coords, attrs, src or out)
    tile_px = attrs.get("tile_size_px") or attrs.get("encoder_input_px") or attrs.get("patch_px")
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("feats", data=np.asarray(features, dtype=np.float32))
            f.create_dataset("coords", data=coords_um.astype(np.float32))
            f.attrs.update({"unit": "um", "tile_size_um": tile_um,
                            "extractor": stamp_extractor(str(attrs.get("encoder") or "external")), "feat_type": "tile"})
            if tile_px:  # only where known: a default would claim a pixel size the source never had
                f.attrs["tile_size_px"] = int(tile_px)
