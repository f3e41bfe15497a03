"""Attention heatmaps of a slide block (or of the plain ABMIL baseline): which patches the
gated-attention pooling (ABMIL) weighs.

For each patient, the block's attention runs over all the patient's patches at once (every slide
concatenated, as in training, without the training subsample), so a patch's weight is the share
of the patient's pooled embedding it contributes; the weights are then split back per slide.
Each slide gets a table (x, y, attention, percentile), a PNG over its thumbnail (or over a blank
canvas when the slide file is absent: a features-only cohort) and a GeoJSON that QuPath opens
(one square detection per patch, with the attention as a measurement).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lego.errors import InputError
from lego.io import atomic_path
from lego.modality_kinds import is_slide_kind
from lego.modality_kinds.wsi import FeatureSourceError, check_feature_source, feature_source
from lego.slides.features import FeatureBag, read_feature_bag

THUMB_PX = 1024  # the heatmap PNG's longer side
INDEX_COLUMNS = ["slide_id", "patient_id", "patches", "top_x", "top_y", "top_attention", "reason"]
log = logging.getLogger(__name__)


def patient_attention(block, state: dict, feature_files: list[str]) -> list[tuple[FeatureBag, np.ndarray]]:
    """(feature bag, attention) per slide of one patient from the block's ABMIL encoder."""
    encoder = getattr(block, "encoder", None)
    if not hasattr(encoder, "attention"):
        raise InputError(f"the block's encoder is {type(encoder).__name__}, which has no patch attention (abmil has)")
    bags = [read_feature_bag(f) for f in feature_files]
    mean, std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
    for f, b in zip(feature_files, bags):
        check_feature_source(state.get("features"), feature_source(b.attrs), f)
        if b.features.shape[1] != len(mean):
            raise InputError(f"{f}: {b.features.shape[1]}-dimensional features; the block was trained on {len(mean)}")
    feats = np.concatenate([b.features for b in bags])
    x = torch.from_numpy(((feats - mean) / std).astype(np.float32)).unsqueeze(0)
    with torch.no_grad():
        _, weights = encoder.attention(x, torch.ones(1, len(feats), dtype=torch.bool))
    weights = weights[0].double().numpy()
    cuts = np.cumsum([len(b.features) for b in bags])[:-1]
    return list(zip(bags, np.split(weights, cuts)))


def attention_table(coords: np.ndarray, attention: np.ndarray, patch_size: int) -> pd.DataFrame:
    """One row per patch: level-0 top-left, size, attention and its percentile within the slide."""
    pct = pd.Series(attention).rank(pct=True).to_numpy() if len(attention) else attention
    return pd.DataFrame({"x": coords[:, 0].astype(np.int64), "y": coords[:, 1].astype(np.int64),
                         "size": np.full(len(coords), int(patch_size), np.int64),
                         "attention": attention, "percentile": pct})


def write_geojson(table: pd.DataFrame, slide_id: str, path: str | Path) -> None:
    """QuPath-readable GeoJSON: one square detection per patch (level-0 pixels), attention as a measurement."""
    features = []
    for r in table.itertuples():
        x0, y0, x1, y1 = int(r.x), int(r.y), int(r.x + r.size), int(r.y + r.size)
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {"objectType": "detection", "name": slide_id,
                           "measurements": {"attention": float(r.attention), "attention_percentile": float(r.percentile)}},
        })
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def _thumbnail(slide_path: str | None, size0: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(RGB thumbnail, level-0 pixels per thumbnail pixel); white when the slide cannot be read."""
    scale = max(size0) / THUMB_PX
    shape = (max(1, int(round(size0[1] / scale))), max(1, int(round(size0[0] / scale))))
    if slide_path and Path(slide_path).is_file():
        try:
            import openslide

            with openslide.OpenSlide(slide_path) as s:
                width, height = s.dimensions  # the thumbnail shows the whole slide, whatever the patches cover
                scale = max(width, height) / THUMB_PX
                img = np.asarray(s.get_thumbnail((int(round(width / scale)), int(round(height / scale)))).convert("RGB"))
            return img, width / img.shape[1]
        except Exception as exc:  # an unreadable slide still gets its heatmap, on white (said)
            log.warning("%s: slide not readable for the thumbnail (%s); the heatmap is drawn on white", slide_path, exc)
    elif slide_path:
        log.warning("%s: slide file not found; the heatmap is drawn on white", slide_path)
    return np.full(shape + (3,), 255, np.uint8), scale


def draw_heatmap(table: pd.DataFrame, slide_id: str, size0: tuple[int, int], slide_path: str | None,
                 path: str | Path) -> None:
    """PNG: the attention percentile of each patch (viridis) blended over the slide thumbnail."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, per_px = _thumbnail(slide_path, size0)
    heat = np.zeros(img.shape[:2])
    seen = np.zeros(img.shape[:2], bool)
    for r in table.itertuples():
        x0, y0 = int(r.x / per_px), int(r.y / per_px)
        x1, y1 = max(x0 + 1, int((r.x + r.size) / per_px)), max(y0 + 1, int((r.y + r.size) / per_px))
        heat[y0:y1, x0:x1], seen[y0:y1, x0:x1] = r.percentile, True
    fig, ax = plt.subplots(figsize=(8, 8 * img.shape[0] / img.shape[1] + 0.6), dpi=100)
    ax.imshow(img)
    shown = ax.imshow(np.ma.masked_where(~seen, heat), cmap="viridis", alpha=0.55, vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.04, label="attention (percentile within the slide)")
    ax.set_title(f"{slide_id}: {len(table)} patches", fontsize=10)
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _patch_size(bag) -> int:
    """Level-0 patch size: the file's geometry, else the grid's stride (CLAM files carry none)."""
    from lego.slides.interop import grid_stride

    size = bag.coords_attrs.get("patch_size_level0") or bag.attrs.get("patch_size_level0")
    return int(size) if size else int(grid_stride(bag.coords)) or 1


def _checked_manifest(m: pd.DataFrame, manifest: str) -> pd.DataFrame:
    """Slide IDs become file names here: one row per slide, and no ID that would leave the folder."""
    dup = m["slide_id"].duplicated()
    if dup.any():
        raise InputError(f"{manifest}: slide {m.loc[dup, 'slide_id'].iloc[0]!r} is listed twice; one row per slide "
                         "(remake it with `lego feature-manifest`)")
    unsafe = m["slide_id"].astype(str).str.contains(r"[/\\]|^\.", regex=True)
    if unsafe.any():
        raise InputError(f"{manifest}: slide ID {m.loc[unsafe, 'slide_id'].iloc[0]!r} is not a file name (it holds a "
                         "path separator or starts with a dot)")
    return m


def _draw_patient(block, config: dict, group: pd.DataFrame, pid: str, paths: dict, out: Path) -> list[dict]:
    """Heatmap files of one patient's slides; one index row per slide (a skipped slide says why)."""
    from lego.io import write_parquet

    per_slide = patient_attention(block, config["preprocess"], group["features"].tolist())
    rows = []
    for slide_id, (bag, att) in zip(group["slide_id"], per_slide):
        unit = bag.coords_attrs.get("unit", "px")
        if unit != "px":  # no level-0 pixel geometry: a drawing or a QuPath file would be wrong
            rows.append({"slide_id": slide_id, "patient_id": pid, "patches": len(bag.coords),
                         "reason": f"coordinates in unit {unit!r}, not level-0 pixels (re-import with --mpp)"})
            continue
        table = attention_table(bag.coords, att, _patch_size(bag))
        size0 = (int(bag.attrs.get("slide_width") or (table["x"] + table["size"]).max()),
                 int(bag.attrs.get("slide_height") or (table["y"] + table["size"]).max()))
        write_parquet(table, out / f"{slide_id}.attention.parquet")
        write_geojson(table, slide_id, out / f"{slide_id}.geojson")
        draw_heatmap(table, slide_id, size0, paths.get(slide_id), out / f"{slide_id}.png")
        top = table.loc[table["attention"].idxmax()]
        rows.append({"slide_id": slide_id, "patient_id": pid, "patches": len(table), "top_x": int(top["x"]),
                     "top_y": int(top["y"]), "top_attention": float(top["attention"]), "reason": ""})
    return rows


def _no_heatmaps(out: Path, why: str, where: str) -> pd.DataFrame:
    from lego.io import write_tsv

    log.warning("%s: no heatmaps: %s", where, why)
    (out / "NO_HEATMAPS.txt").write_text(why + "\n")
    index = pd.DataFrame(columns=INDEX_COLUMNS)
    write_tsv(index, out / "index.tsv")
    return index


def _check_fold(config: dict, patients: set[str], subset: str, folds: str, model_dir: str) -> None:
    """The folds table is the one the model was trained with: its test patients were never fitted
    on, its train/val patients are the ones the model records (as evaluation requires)."""
    from lego.steps.fold_blocks import check_recorded_patients
    from lego.steps.inference import check_unseen

    fix = f"draw {model_dir} with the folds table it was trained with"
    if subset == "test":
        check_unseen(config, sorted(patients), f"of the test patients in {folds}", fix)
    else:
        check_recorded_patients(config, subset, patients, folds, fix)


def run_heatmaps(model_dir: str, manifest: str, folds: str, out_dir: str, slides: str | None = None,
                 subset: str = "test") -> pd.DataFrame:
    """Attention of a slide block's fold on that fold's ``subset`` patients: per slide a table,
    a PNG and a GeoJSON under ``out_dir``; returns (and writes) the index of slides. A patient
    whose files cannot be read is recorded in the index (``reason``) and the others are drawn."""
    from lego.data.fold_data import fold_ids
    from lego.io import read_frame, write_tsv
    from lego.models import files as model_files
    from lego.models.model_kinds import architecture

    block, config = model_files.load(model_dir)
    if not architecture(config).heatmaps or not is_slide_kind(config.get("modality_kind")):
        raise InputError(f"{model_dir}: heatmaps need a slide modality's block (kind wsi) or a model with patch "
                         f"attention over one, not a {config.get('modality_kind', config['kind'])} model")
    block.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not hasattr(block.encoder, "attention"):  # a grid may choose a block without attention pooling
        return _no_heatmaps(out, f"the chosen block's encoder ({config['block']['encoder']}) has no patch attention; "
                                 "abmil has", model_dir)
    patients = set(fold_ids(read_frame(folds, "folds"), config["fold"])[subset])
    _check_fold(config, patients, subset, folds, model_dir)
    m = _checked_manifest(read_frame(manifest, "manifest"), manifest)
    m = m[(m["status"] == "ok") & m["patient_id"].isin(patients)]
    if m.empty:
        return _no_heatmaps(out, f"no usable slide among the fold's {len(patients)} {subset} patient(s) in {manifest}",
                            model_dir)
    paths = dict(zip(*read_frame(slides, "slides")[["slide_id", "path"]].T.values)) if slides else {}
    rows = []
    for pid, group in m.groupby("patient_id", sort=True):
        try:
            rows += _draw_patient(block, config, group, pid, paths, out)
        except FeatureSourceError:  # another encoder's features: every slide would be wrong
            raise
        except InputError as exc:  # one unreadable bag must not stop the others
            log.warning("patient %s: no heatmap: %s", pid, exc)
            rows += [{"slide_id": s, "patient_id": pid, "reason": str(exc)} for s in group["slide_id"]]
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    drawn = index[index["reason"] == ""]
    log.info("%s: heatmaps of %d slide(s) of %d %s patient(s) in %s (%d skipped, reasons in index.tsv)", model_dir,
             len(drawn), drawn["patient_id"].nunique(), subset, out, len(index) - len(drawn))
    write_tsv(index, out / "index.tsv")
    return index
