"""Attention heatmaps of a model with attention over a slide's patches: which patches a slide
block's (or the plain ABMIL baseline's, or late fusion's) gated-attention pooling weighs, or which
patches MCAT's genomic tokens attend to (per gene group, and averaged over them).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lego.errors import InputError
from lego.io import atomic_path
from lego.modality_kinds import is_slide_kind
from lego.modality_kinds.wsi import FeatureSourceError, check_feature_source, feature_source
from lego.slides.features import FeatureBag, read_feature_bag

THUMB_PX = 1024  # the heatmap PNG's longer side
INDEX_COLUMNS = ["slide_id", "patient_id", "modality", "patches", "top_x", "top_y", "top_attention", "reason"]
log = logging.getLogger(__name__)


def _attention(model, inputs: dict, modality: str) -> dict[str, torch.Tensor]:
    """Per attention column, (B, T) weights over ``modality``'s patches: a multimodal baseline's own
    ``patch_attention`` (MCAT's co-attention, late fusion's ABMIL), else the ABMIL encoder of a slide
    block or of the ABMIL baseline."""
    if hasattr(model, "patch_attention"):
        return model.patch_attention(inputs, modality)
    x, mask, _ = inputs[modality]
    return {"attention": model.encoder.attention(x, mask)[1]}


def patient_attention(model, state: dict, modality: str, feature_files: list[str],
                      context: dict | None = None) -> list[tuple[FeatureBag, dict[str, np.ndarray]]]:
    """(feature bag, attention columns) per slide of one patient: every patch of every slide at
    once (no training subsample), standardised with the fold's ``state``; ``context``: the patient's
    other modalities as collated inputs (MCAT's genomic queries), empty for a single-slide model."""
    bags = [read_feature_bag(f) for f in feature_files]
    mean, std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
    for f, b in zip(feature_files, bags):
        check_feature_source(state.get("features"), feature_source(b.attrs), f)
        if b.features.shape[1] != len(mean):
            raise InputError(f"{f}: {b.features.shape[1]}-dimensional features; the model was trained on {len(mean)}")
    feats = np.concatenate([b.features for b in bags])
    x = torch.from_numpy(((feats - mean) / std).astype(np.float32)).unsqueeze(0)
    inputs = {**(context or {}), modality: (x, torch.ones(1, len(feats), dtype=torch.bool), torch.ones(1, dtype=torch.bool))}
    with torch.no_grad():
        columns = {k: w[0].double().numpy() for k, w in _attention(model, inputs, modality).items()}
    cuts = np.cumsum([len(b.features) for b in bags])[:-1]
    split = {k: np.split(w, cuts) for k, w in columns.items()}
    return [(b, {k: parts[i] for k, parts in split.items()}) for i, b in enumerate(bags)]


def attention_table(coords: np.ndarray, attention: np.ndarray | dict[str, np.ndarray], patch_size: int) -> pd.DataFrame:
    """One row per patch: level-0 top-left, size, attention and its percentile within the slide
    (and any further attention columns, e.g. MCAT's per gene group)."""
    columns = attention if isinstance(attention, dict) else {"attention": attention}
    main = columns["attention"]
    pct = pd.Series(main).rank(pct=True).to_numpy() if len(main) else main
    return pd.DataFrame({"x": coords[:, 0].astype(np.int64), "y": coords[:, 1].astype(np.int64),
                         "size": np.full(len(coords), int(patch_size), np.int64),
                         "attention": main, "percentile": pct,
                         **{k: v for k, v in columns.items() if k != "attention"}})


def write_geojson(table: pd.DataFrame, slide_id: str, path: str | Path) -> None:
    """QuPath-readable GeoJSON: one square detection per patch (level-0 pixels), attention as a measurement."""
    features = []
    extra = [c for c in table.columns if c.startswith("attention_")]
    for r in table.to_dict("records"):
        x0, y0, x1, y1 = int(r["x"]), int(r["y"]), int(r["x"] + r["size"]), int(r["y"] + r["size"])
        measured = {"attention": float(r["attention"]), "attention_percentile": float(r["percentile"]),
                    **{c: float(r[c]) for c in extra}}
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {"objectType": "detection", "name": slide_id, "measurements": measured},
        })
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def _thumbnail(slide_path: str | None, size0: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(RGB thumbnail, level-0 pixels per thumbnail pixel); white when the slide cannot be read."""
    scale = max(size0) / THUMB_PX
    shape = (max(1, int(round(size0[1] / scale))), max(1, int(round(size0[0] / scale))))
    if slide_path and Path(slide_path).is_file():
        try:
            import cv2
            import openslide

            with openslide.OpenSlide(slide_path) as s:
                width, height = s.dimensions  # the thumbnail shows the whole slide, whatever the patches cover
                scale = max(width, height) / THUMB_PX
                level = s.get_best_level_for_downsample(scale)
                region = s.read_region((0, 0), level, s.level_dimensions[level])
            size = (max(1, int(round(width / scale))), max(1, int(round(height / scale))))
            rgba = cv2.resize(np.asarray(region), size, interpolation=cv2.INTER_AREA)
            alpha = rgba[..., 3:].astype(np.float32) / 255  # no scanned data: white, as on glass
            img = (rgba[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
            return img, width / img.shape[1]
        except Exception as exc:  # an unreadable slide still gets its heatmap, on white (said)
            log.warning("%s: slide not readable for the thumbnail (%s); the heatmap is drawn on white", slide_path, exc)
    elif slide_path:
        log.warning("%s: slide file not found; the heatmap is drawn on white", slide_path)
    return np.full(shape + (3,), 255, np.uint8), scale


def _legend(width: int, title: str) -> np.ndarray:
    """A white strip under the heatmap: the slide's name and patch count, and the colour scale."""
    import cv2

    strip = np.full((58, width, 3), 255, np.uint8)
    cv2.putText(strip, title, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    bar_w = max(2, min(256, width - 16))
    ramp = np.tile(np.linspace(0, 255, bar_w).astype(np.uint8), (12, 1))
    strip[26:38, 8:8 + bar_w] = cv2.applyColorMap(ramp, cv2.COLORMAP_VIRIDIS)[..., ::-1]
    label = "attention percentile within the slide: 0 (left) to 1 (right)"
    cv2.putText(strip, label, (8, 52), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def draw_heatmap(table: pd.DataFrame, slide_id: str, size0: tuple[int, int], slide_path: str | None,
                 path: str | Path) -> None:
    """PNG: the attention percentile of each patch (viridis) blended over the slide thumbnail, with
    the colour scale beneath (drawn with OpenCV: a tenth of the time of a plotting library)."""
    import cv2

    from lego.slides.tissue import write_png

    img, per_px = _thumbnail(slide_path, size0)
    heat = np.zeros(img.shape[:2], np.float32)
    seen = np.zeros(img.shape[:2], bool)
    for x, y, size, pct in zip(table["x"], table["y"], table["size"], table["percentile"]):
        x0, y0 = int(x / per_px), int(y / per_px)
        x1, y1 = max(x0 + 1, int((x + size) / per_px)), max(y0 + 1, int((y + size) / per_px))
        heat[y0:y1, x0:x1], seen[y0:y1, x0:x1] = pct, True
    colour = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    out = img.copy()
    out[seen] = (0.45 * img[seen] + 0.55 * colour[seen]).round().astype(np.uint8)
    full = np.vstack([out, _legend(out.shape[1], f"{slide_id}: {len(table)} patches")])
    write_png(full, path)
    write_preview(full, preview_path(path))


PREVIEW_WIDTH, PREVIEW_QUALITY = 400, 75  # a JPEG of ~20 KB: what the HTML report embeds
PREVIEWS_PER_FOLD = 12  # the report shows at most this many slides per model and fold (the first by slide ID)


def preview_path(path: str | Path) -> Path:
    """Where a heatmap's small preview goes: ``previews/<slide>.jpg`` beside the full PNG."""
    return Path(path).parent / "previews" / f"{Path(path).stem}.jpg"


def _keep_previews(folder: Path, keep: int = PREVIEWS_PER_FOLD) -> None:
    """Keep the previews of the first ``keep`` slides (by slide ID) of a fold. Why: the report
    embeds every preview; at a bounded number per model and fold its size no longer grows with the
    cohort (the full heatmaps of every slide stay in the folder)."""
    for extra in sorted((folder / "previews").glob("*.jpg"))[keep:]:
        extra.unlink()


def write_preview(rgb: np.ndarray, path: Path) -> None:
    """A small JPEG of a heatmap for the HTML report. Why: the report embeds every image it shows
    (base64), and the full PNGs (100-300 KB each, 182 on the demo) made a 79 MB report; a real
    cohort's would not open. The full PNG, GeoJSON and attention table stay beside it."""
    import cv2

    from lego.io import atomic_path

    scale = min(1.0, PREVIEW_WIDTH / rgb.shape[1])
    small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError(f"could not encode JPEG for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


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


@dataclass
class Drawing:
    """One slide modality of one model being drawn: the model, the modality, its fitted
    preprocessing, the model's other modalities on the fold (the context the attention may read),
    the slide files (for thumbnails) and the output folder."""

    model: Any
    modality: str
    state: dict
    context: dict
    paths: dict[str, str]
    out: Path


def _draw_patient(d: Drawing, group: pd.DataFrame, pid: str) -> list[dict]:
    """Heatmap files of one patient's slides; one index row per slide (a skipped slide says why)."""
    from lego.data.fold_data import collate
    from lego.io import write_parquet

    context = collate([pid], d.context) if d.context else {}
    per_slide = patient_attention(d.model, d.state, d.modality, group["features"].tolist(), context)
    rows = []
    for slide_id, (bag, att) in zip(group["slide_id"], per_slide):
        row = {"slide_id": slide_id, "patient_id": pid, "modality": d.modality, "patches": len(bag.coords)}
        unit = bag.coords_attrs.get("unit", "px")
        if unit != "px":  # no level-0 pixel geometry: a drawing or a QuPath file would be wrong
            rows.append({**row, "reason": f"coordinates in unit {unit!r}, not level-0 pixels (re-import with --mpp)"})
            continue
        table = attention_table(bag.coords, att, _patch_size(bag))
        size0 = (int(bag.attrs.get("slide_width") or (table["x"] + table["size"]).max()),
                 int(bag.attrs.get("slide_height") or (table["y"] + table["size"]).max()))
        write_parquet(table, d.out / f"{slide_id}.attention.parquet")
        write_geojson(table, slide_id, d.out / f"{slide_id}.geojson")
        draw_heatmap(table, slide_id, size0, d.paths.get(slide_id), d.out / f"{slide_id}.png")
        top = table.loc[table["attention"].idxmax()]
        rows.append({**row, "top_x": int(top["x"]), "top_y": int(top["y"]), "top_attention": float(top["attention"]),
                     "reason": ""})
    return rows


def _no_heatmaps(out: Path, why: str, where: str) -> pd.DataFrame:
    from lego.io import atomic_path, write_tsv

    log.warning("%s: no heatmaps: %s", where, why)
    with atomic_path(out / "NO_HEATMAPS.txt") as tmp:
        tmp.write_text(why + "\n")
    index = pd.DataFrame(columns=INDEX_COLUMNS)
    write_tsv(index, out / "index.tsv")
    return index


def check_fold(config: dict, patients: set[str], subset: str, folds: str, model_dir: str) -> None:
    """The folds table is the one the model was trained with: its test patients were never fitted
    on, its train/val patients are the ones the model records (as evaluation requires)."""
    from lego.steps.fold_blocks import check_recorded_patients
    from lego.steps.inference import check_unseen

    fix = f"draw {model_dir} with the folds table it was trained with"
    if subset == "test":
        check_unseen(config, sorted(patients), f"of the test patients in {folds}", fix)
    else:
        check_recorded_patients(config, subset, patients, folds, fix)


def _slide_modalities(config: dict, inputs: dict[str, dict], model_dir: str) -> list[str]:
    """The slide modalities among a model's ``inputs`` (refusing a model without patch attention)."""
    from lego.models.model_kinds import architecture

    slides = [m for m, c in inputs.items() if is_slide_kind(c.get("modality_kind"))]
    if not architecture(config).heatmaps or not slides:
        raise InputError(f"{model_dir}: heatmaps need a model with patch attention over a slide modality (a slide "
                         f"block, abmil, late fusion, MCAT), not a {config.get('modality_kind', config['kind'])} model")
    return slides


def _draw_modality(d: Drawing, manifest: str, patients: set[str], subset: str) -> list[dict]:
    """Index rows of one slide modality's drawn (and skipped) slides of the fold's patients."""
    from lego.io import read_frame

    m = _checked_manifest(read_frame(manifest, "manifest"), manifest)
    m = m[(m["status"] == "ok") & m["patient_id"].isin(patients)]
    if m.empty:
        log.warning("%s: no usable slide among the fold's %d %s patient(s)", manifest, len(patients), subset)
    rows = []
    for pid, group in m.groupby("patient_id", sort=True):
        try:
            rows += _draw_patient(d, group, pid)
        except FeatureSourceError:  # another encoder's features: every slide would be wrong
            raise
        except InputError as exc:  # one unreadable bag must not stop the others
            log.warning("patient %s: no heatmap: %s", pid, exc)
            rows += [{"slide_id": s, "patient_id": pid, "modality": d.modality, "reason": str(exc)}
                     for s in group["slide_id"]]
    return rows


def check_data(model_dir: str, inputs: dict, data: dict[str, str]) -> None:
    """Refuse a model whose modalities are not all given: ``inputs`` is its config's (model_inputs)."""
    missing = [m for m in inputs if m not in data]
    if missing:
        raise InputError(f"{model_dir}: no data given for modality {missing[0]!r}; give --data {missing[0]}=PATH "
                         "(its table, or its feature manifest for a slide modality)")


def run_heatmaps(model_dir: str, data: dict[str, str], folds: str, out_dir: str, slides: str | None = None,
                 subset: str = "test") -> pd.DataFrame:
    """Patch attention of a model's fold on that fold's ``subset`` patients: per slide a table, a
    PNG and a GeoJSON under ``out_dir`` (under ``out_dir/<modality>`` when the model reads several
    slide modalities); returns (and writes) the index of slides. ``data``: each modality the model
    reads -> its table or feature manifest (a slide block needs only its manifest). A patient whose
    files cannot be read is recorded in the index (``reason``) and the others are drawn."""
    from lego.data.fold_data import fold_ids
    from lego.io import read_frame, write_tsv
    from lego.models import files as model_files
    from lego.models.model_kinds import model_inputs
    from lego.steps.inference import fold_modalities

    model, config = model_files.load(model_dir)
    inputs = model_inputs(config)
    drawn = _slide_modalities(config, inputs, model_dir)
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not hasattr(model, "patch_attention") and not hasattr(getattr(model, "encoder", None), "attention"):
        return _no_heatmaps(out, f"the chosen block's encoder ({config['block']['encoder']}) has no patch attention; "
                                 "abmil has", model_dir)
    check_data(model_dir, inputs, data)
    ids = fold_ids(read_frame(folds, "folds"), config["fold"])
    patients = set(ids[subset])
    check_fold(config, patients, subset, folds, model_dir)
    paths = dict(zip(*read_frame(slides, "slides")[["slide_id", "path"]].T.values)) if slides else {}
    rows = []
    for modality in drawn:
        others = {m: c for m, c in inputs.items() if m != modality}
        where = out / modality if len(drawn) > 1 else out
        where.mkdir(parents=True, exist_ok=True)
        d = Drawing(model, modality, inputs[modality]["preprocess"], fold_modalities(others, data, ids=ids), paths, where)
        rows += _draw_modality(d, data[modality], patients, subset)
        _keep_previews(where)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    if index.empty:
        return _no_heatmaps(out, f"no usable slide among the fold's {len(patients)} {subset} patient(s) in "
                                 f"{', '.join(data[m] for m in drawn)}", model_dir)
    shown = index[index["reason"] == ""]
    log.info("%s: heatmaps of %d slide(s) of %d %s patient(s) in %s (%d skipped, reasons in index.tsv)", model_dir,
             len(shown), shown["patient_id"].nunique(), subset, out, len(index) - len(shown))
    write_tsv(index, out / "index.tsv")
    return index
