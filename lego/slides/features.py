"""Feature bags on disk: our HDF5 layout, and TRIDENT/CLAM/STAMP files read as inputs.

Layout written here (the one TRIDENT and CLAM use): ``features`` (N, D) float32 and ``coords``
(N, 2) int64 level-0 pixels, with encoder name, dimension and weight digest as attributes.
STAMP names the feature dataset ``feats``; some tools store a leading batch axis of 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import lego
from lego.errors import InputError
from lego.io import atomic_path

FEATURE_KEYS = ("features", "feats")
log = logging.getLogger(__name__)


@dataclass
class FeatureBag:
    features: np.ndarray  # (N, D) float32
    coords: np.ndarray  # (N, 2): int64 level-0 pixels (ours, TRIDENT, CLAM); float as stored elsewhere (STAMP: um)
    attrs: dict  # file attributes (plus "coords.<k>" and "features.<k>" copies, for old readers)
    coords_attrs: dict = field(default_factory=dict)  # the coords dataset's own attributes (patch geometry)
    dataset: str = "features"  # the feature dataset read: "features" (ours, TRIDENT, CLAM) or "feats" (STAMP)

    @property
    def ok(self) -> bool:
        return str(self.attrs.get("status", "ok")) == "ok"


def _attr_value(v):
    """An HDF5 attribute as a Python value; bytes decoded (h5py writers differ: b"ok" is "ok")."""
    v = v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def h5_attrs(obj) -> dict:
    """An HDF5 object's attributes as Python values (scalars unwrapped, bytes decoded, arrays kept)."""
    return {k: _attr_value(v) for k, v in obj.attrs.items()}


def _feature_key(f, path) -> str:
    """The one feature dataset of a file; two (``features`` and ``feats``) is ambiguous, not a choice."""
    keys = [k for k in FEATURE_KEYS if k in f]
    if not keys:
        raise InputError(f"{path}: no 'features' (TRIDENT/CLAM) or 'feats' (STAMP) dataset; found {list(f.keys())}")
    if len(keys) > 1:
        raise InputError(f"{path}: both 'features' and 'feats' datasets; keep the one you mean")
    if not isinstance(f[keys[0]], h5py.Dataset):
        raise InputError(f"{path}: '{keys[0]}' is an HDF5 group, not a dataset of patch features")
    if "coords" in f and not isinstance(f["coords"], h5py.Dataset):
        raise InputError(f"{path}: 'coords' is an HDF5 group, not a dataset of x, y positions")
    return keys[0]


def read_feature_bag(path: str | Path, only: tuple[str, ...] | None = None) -> FeatureBag:
    """Read any supported feature file; raise InputError naming the file if it is not one.

    ``only``: read just these file attributes (those present), not the rest nor the patch geometry.
    Why: a model's data reads every bag of the cohort in every fold, and reading all ~45
    attributes one by one (h5py) was two thirds of each read; the checks are the same."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            key = _feature_key(f, path)
            if f[key].dtype.kind not in "fiu":  # complex parts dropped or booleans read as numbers: said, not done
                raise InputError(f"{path}: {key!r} holds {f[key].dtype} values, not real-valued patch features")
            feats = np.asarray(f[key][:], dtype=np.float32)
            coords = np.asarray(f["coords"][:]) if "coords" in f else np.zeros((len(feats), 2), np.int64)
            if coords.dtype.kind not in "fiu":
                raise InputError(f"{path}: 'coords' holds {coords.dtype} values, not x, y positions")
            if only is not None:
                geometry, attrs = {}, {k: _attr_value(f.attrs[k]) for k in only if k in f.attrs}
            else:
                geometry = h5_attrs(f["coords"]) if "coords" in f else {"unit": "none"}  # zeros stand in: said so
                attrs = h5_attrs(f)
                attrs.update({f"coords.{k}": v for k, v in geometry.items()})
                attrs.update({f"features.{k}": v for k, v in h5_attrs(f[key]).items()})
    except (OSError, KeyError, ValueError, TypeError) as exc:  # truncated or damaged HDF5 fails at open or at read
        raise InputError(f"{path}: not a readable HDF5 feature file ({' '.join(str(exc).split())[:200]})") from None
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if feats.ndim != 2 or (len(feats) and feats.shape[1] == 0):
        raise InputError(f"{path}: features must be 2-D (patches x dim, dim >= 1), got shape {feats.shape}")
    if len(coords) != len(feats):
        raise InputError(f"{path}: {len(feats)} feature rows but {len(coords)} coordinates")
    if len(coords) and (coords.ndim != 2 or coords.shape[1] != 2):
        raise InputError(f"{path}: coords must be (patches x 2) x, y positions, got shape {coords.shape}")
    if len(coords) and (not np.isfinite(coords.astype(np.float64)).all() or np.abs(coords.astype(np.float64)).max() > 2**40):
        raise InputError(f"{path}: coords hold NaN, infinite or impossibly large values (beyond 2^40); re-extract this slide")
    if len(coords) and (coords.astype(np.float64) < 0).any():  # top-left corners on the slide are never negative
        raise InputError(f"{path}: coords hold negative positions (e.g. {coords[(coords < 0).any(axis=1)][0].tolist()}); "
                         "patch positions are level-0 top-left corners, >= 0")
    if str(attrs.get("status", "ok")) == "ok" and not np.isfinite(feats).all():
        raise InputError(f"{path}: features contain NaN or infinite values; re-extract this slide")
    integral = coords.dtype.kind in "iu" or (np.round(coords) == coords).all()
    return FeatureBag(feats, coords.astype(np.int64) if integral else coords.astype(np.float64), attrs, geometry, key)


def bag_info(path: str | Path) -> dict:
    """Status, size and provenance of a feature file without loading the features.

    A file that cannot be read, or an "ok" file with no patch, is reported as failed (with the
    reason) instead of stopping the collection: one bad slide must not stop a cohort."""
    try:
        with h5py.File(path, "r") as f:
            key = _feature_key(f, path)
            shape = f[key].shape[-2:]
            attrs = h5_attrs(f)
    except (OSError, InputError, KeyError, ValueError, TypeError, AttributeError) as exc:
        return {"status": "failed", "stage": "features",
                "reason": f"unreadable feature file {path}: {' '.join(str(exc).split())[:200]}",
                "n_patches": 0, "dim": 0, "encoder": "", "encoder_digest": ""}
    status, reason = str(attrs.get("status", "ok")), str(attrs.get("reason", ""))
    stage = str(attrs.get("stage", "")) if status != "ok" else ""
    if status == "ok" and (len(shape) < 2 or shape[0] == 0):
        status, stage, reason = "failed", "features", "no patch features (0 rows): no usable tissue or patches"
    elif status == "ok" and shape[1] == 0:
        status, stage, reason = "failed", "features", "0-dimensional features (patches x 0): re-extract this slide"
    return {
        "status": status,
        "stage": stage or ("unknown" if status != "ok" else ""),
        "reason": reason,
        "n_patches": int(shape[0]) if len(shape) else 0,
        "dim": int(shape[1]) if len(shape) > 1 else 0,
        "encoder": str(attrs.get("encoder", "")),
        "encoder_digest": str(attrs.get("encoder_digest", "")),
    }


def write_feature_bag(path: str | Path, features: np.ndarray, coords: np.ndarray, attrs: dict,
                      coords_attrs: dict | None = None) -> None:
    """Write a feature bag atomically (temp name, then rename), in TRIDENT's layout: ``features``
    (with its ``encoder``) and ``coords`` carrying the patch geometry (``coords_attrs``, the patch
    file's ``coords`` attributes, as TRIDENT copies them), our provenance on the file."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=np.asarray(features, dtype=np.float32)).attrs["encoder"] = str(
                attrs.get("encoder") or "")
            in_um = (coords_attrs or {}).get("unit") == "um"  # micrometres kept exact; pixels are whole
            ds = f.create_dataset("coords", data=np.asarray(coords, dtype=np.float64) if in_um
                                  else np.asarray(np.round(coords), dtype=np.int64))
            for k, v in (coords_attrs or {}).items():
                if v is not None:
                    ds.attrs[k] = v
            for k, v in attrs.items():
                if v is not None:
                    f.attrs[k] = v
            f.attrs.setdefault("status", "ok")
            f.attrs["lego_version"] = lego.__version__


def write_failed_bag(path: str | Path, slide_name: str, reason: str, encoder: str = "", dim: int = 0,
                     stage: str = "embed_patches") -> None:
    """An explicit failure record: zero rows, ``status = failed``, the stage that failed and why."""
    write_feature_bag(
        path, np.zeros((0, dim), np.float32), np.zeros((0, 2), np.int64),
        {"status": "failed", "reason": reason, "stage": stage, "slide_name": slide_name, "encoder": encoder},
    )


# How other tools spell a slide's outcome in a ``status`` attribute (compared case-insensitively).
OK_STATUS = frozenset({"ok", "success", "succeeded", "successful", "done", "complete", "completed", "passed", "true", "1"})
FAILED_STATUS = frozenset({"failed", "failure", "fail", "error", "errored", "false", "0"})


def source_ok(attrs: dict, src: str | Path) -> bool:
    """Whether an external feature file's ``status`` says the slide succeeded. "success" or "OK"
    from another tool means ok; a status that says neither is refused rather than guessed."""
    status = str(attrs.get("status", "ok")).strip().lower()
    if status in OK_STATUS or status in FAILED_STATUS:
        return status in OK_STATUS
    raise InputError(f"{src}: status attribute {attrs.get('status')!r} says neither success nor failure; "
                     "set it to 'ok' (or remove it) if the features are complete")


def import_feature_file(src: str | Path, dst: str | Path, slide_name: str, mpp: float | None = None) -> FeatureBag:
    """Convert an existing TRIDENT/CLAM (``.h5`` or CLAM/MCAT ``.pt``) or STAMP file into our layout,
    keeping its provenance and its patch geometry (STAMP's micrometres become level-0 pixels
    when the slide's ``mpp`` is given; see :mod:`lego.slides.interop`)."""
    from lego.slides.interop import imported_geometry, read_clam_pt

    is_pt = str(src).lower().endswith((".pt", ".pth"))
    if is_pt:
        feats = read_clam_pt(src)
        bag = FeatureBag(feats, np.zeros((len(feats), 2), np.int64), {"encoder": "external"}, {"unit": "none"})
    else:
        bag = read_feature_bag(src)
    if not source_ok(bag.attrs, src):
        raise InputError(f"{src}: the source file records a failed slide ({bag.attrs.get('reason', 'no reason given')})")
    if len(bag.features) == 0:
        raise InputError(f"{src}: 0 patch features; a slide with no patches cannot be used")
    if not np.isfinite(bag.features).all():  # refused before anything is written at the destination
        raise InputError(f"{src}: features contain NaN or infinite values; re-extract this slide")
    encoder = bag.attrs.get("encoder") or bag.attrs.get("features.encoder") or bag.attrs.get("extractor") or "external"
    attrs = {
        "encoder": str(encoder),
        "dim": int(bag.features.shape[1]),
        "encoder_digest": str(bag.attrs.get("encoder_digest", bag.attrs.get("extractor_id", "unknown"))),
        "source_file": str(Path(src).resolve()),
        "slide_name": slide_name,
    }
    is_stamp = bag.dataset == "feats"
    try:
        coords, geometry = imported_geometry(bag.attrs, bag.coords_attrs, bag.coords, mpp, is_stamp)
    except InputError as exc:
        raise InputError(f"{src}: {exc}") from None
    if mpp and geometry.get("unit") != "px":
        log.warning("%s: --mpp %s not used: the file's coordinates are %s", src, mpp, geometry.get("unit"))
    if geometry.get("level0_mpp"):
        attrs["level0_mpp"] = geometry["level0_mpp"]
    write_feature_bag(dst, bag.features, coords, attrs, geometry)
    return read_feature_bag(dst)
