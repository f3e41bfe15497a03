"""The ``image`` kind: ordinary images (dermoscopy, photographs, X-ray or fundus exports; PNG, JPEG,
TIFF), one or more per patient, as bags of tile features -- as MM-Lego's ISIC task does (each image
a grid of patch embeddings through attention pooling).

Input (``path``): a folder of images, whose file names give the patient IDs (``id_regex``: its
first group, else the whole match, of the name without extension), or a table (CSV/TSV/parquet)
with columns ``path`` (relative to the table's folder, or absolute) and ``patient_id``. Each image
is turned upright (EXIF orientation), resized so its shorter side is ``image_px`` pixels and cut
into a centred grid of ``patch_px`` tiles; each tile is embedded by a registered patch encoder
(``encoder``: ``lego encoders`` lists them, foundation models included; weights from a local
``checkpoint``). An image that cannot be read is logged and left out; the others go on.

Prepared file: one row per tile: ``patient_id, image, x, y`` (the tile's top-left corner in the
resized image), the encoder's name and weight digest, and the features ``f0...``. Per fold the
features are standardised with the training patients' tiles, as patch bags are; the block's
default encoder is ``abmil``. :func:`draw_attention` draws a model's tile attention over an image.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from lego.cli.declare import Command, command, opt
from lego.errors import InputError
from lego.modality_kinds import ModalityKind, Preparation, register
from lego.modality_kinds.wsi import check_feature_source, feature_scaling, standardised_bags

log = logging.getLogger(__name__)

EXTENSIONS = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
_NOT_FOR_IMAGES = "not for an image modality (patients come from the file names or the list's patient_id)"
SETTINGS = {
    "id_regex": {"type": "string", "default": "^(.+)$",
                 "description": "Patient ID from an image's file name without extension: the regex's first group "
                                "(e.g. '^(.+)_\\d+$' for P001_1.jpg, P001_2.jpg); a folder only."},
    "extensions": {"type": "array", "items": {"type": "string"}, "default": EXTENSIONS,
                   "description": "Image file extensions read from a folder (case-insensitive)."},
    "encoder": {"type": "string", "default": "efficientnet_lite0",
                "description": "Patch encoder of the tiles (`lego encoders`; stain_texture needs no weights)."},
    "checkpoint": {"type": ["string", "null"], "default": None, "description": "Local weights of the encoder."},
    "image_px": {"type": "integer", "minimum": 16, "maximum": 16384, "default": 672,
                 "description": "Each image is resized so that its shorter side has this many pixels."},
    "patch_px": {"type": "integer", "minimum": 16, "maximum": 4096, "default": 224,
                 "description": "Tile size in pixels of the resized image (tiles are resized to the encoder's input)."},
    **{key: {"not": {}, "description": _NOT_FOR_IMAGES}
       for key in ("id_column", "include", "exclude", "columns", "categorical", "preprocess")},
}
FEATURE = "f"  # feature columns f0, f1, ...


# ---------------------------------------------------------------------------------- listing


def list_images(path: str | Path, id_regex: str = SETTINGS["id_regex"]["default"],
                extensions: list[str] | None = None) -> pd.DataFrame:
    """``patient_id, path`` of every image: a folder's (IDs from file names) or a list table's."""
    path = Path(path)
    if path.is_dir():
        return _folder_images(path, id_regex, extensions or EXTENSIONS)
    from lego.tabular.tables import read_table, stripped_text

    df = read_table(path, text_columns=("patient_id", "path"))
    missing = [c for c in ("patient_id", "path") if c not in df.columns]
    if missing:
        raise InputError(f"{path}: an image list needs columns patient_id and path (missing {missing}); or give a folder")
    ids, empty = stripped_text(df["patient_id"])
    if empty.any():
        raise InputError(f"{path}: empty patient_id at line {int(np.flatnonzero(empty.to_numpy())[0]) + 2}; fill it")
    files = [str(p if Path(p).is_absolute() else path.parent / p) for p in df["path"].astype(str)]
    twice = pd.Series(files).duplicated()
    if twice.any():
        i = int(np.flatnonzero(twice.to_numpy())[0])
        raise InputError(f"{path}: line {i + 2} lists {df['path'].iloc[i]!r} again; list each image once (one patient)")
    return pd.DataFrame({"patient_id": [unicodedata.normalize("NFC", i) for i in ids.astype(str)], "path": files})


def _folder_images(folder: Path, id_regex: str, extensions: list[str]) -> pd.DataFrame:
    try:
        pattern = re.compile(id_regex)
    except re.error as exc:
        raise InputError(f"id_regex {id_regex!r} is not a valid regular expression ({exc})") from None
    exts = tuple(e.lower() for e in extensions)
    rows = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not f.name.lower().endswith(exts):
            continue
        stem = unicodedata.normalize("NFC", f.name[: f.name.rfind(".")])
        match = pattern.search(stem)
        if not match:
            raise InputError(f"{f}: its name does not match id_regex {id_regex!r}; fix the regex or rename the file")
        rows.append({"patient_id": match.group(1) if pattern.groups else match.group(0), "path": str(f)})
    if not rows:
        raise InputError(f"{folder}: no image with extension {', '.join(extensions)}; check the folder and extensions")
    return pd.DataFrame(rows)


def image_files(spec: dict) -> list[str]:
    """The files a modality's preparation reads besides its folder or list: every image and the
    encoder's weights (declared inputs: a new or replaced image re-embeds). Listed when the
    workflow is planned; a folder or list that cannot be read is left to the job to report."""
    try:
        images = list(list_images(spec["path"], spec.get("id_regex") or SETTINGS["id_regex"]["default"],
                                  spec.get("extensions"))["path"])
    except InputError:
        images = []
    images = [p for p in images if Path(p).is_file()]  # a listed file that is missing: the job records it
    return sorted(images) + ([spec["checkpoint"]] if spec.get("checkpoint") else [])


# ---------------------------------------------------------------------------------- tiles


MAX_ASPECT = 16  # a longer side above 16 x the shorter is a strip, not a picture: thousands of tiles


def _as_rgb(im):
    """8-bit RGB of any mode. Why: Pillow's convert("RGB") clips 16-bit and float images (X-ray and
    fundus exports) to white or black; they are scaled by their own range instead. Transparency
    is composited onto white, as slides' are."""
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        low, high = np.nanmin(a), np.nanmax(a)
        a = (a - low) / (high - low) * 255 if high > low else np.zeros_like(a)
        return Image.fromarray(np.nan_to_num(a).round().astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def read_image(path: str | Path, image_px: int) -> np.ndarray:
    """An image upright, RGB, its shorter side resized to ``image_px`` (area resampling down)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if max(w, h) > MAX_ASPECT * min(w, h):
                raise InputError(f"{path}: a {w} x {h} image is a strip (sides over {MAX_ASPECT}:1), not a picture; "
                                 "crop it or leave it out")
            im = _as_rgb(ImageOps.exif_transpose(im))
            w, h = im.size
            scale = image_px / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX if scale < 1
                           else Image.Resampling.BICUBIC)
            return np.asarray(im)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({' '.join(str(exc).split())[:120]}); replace or remove it") from None


def tile_grid(shape: tuple[int, ...], patch_px: int) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of a centred grid of whole tiles."""
    h, w = shape[:2]
    nx, ny = max(1, w // patch_px), max(1, h // patch_px)
    x0, y0 = max(0, (w - nx * patch_px) // 2), max(0, (h - ny * patch_px) // 2)
    return [(x0 + i * patch_px, y0 + j * patch_px) for j in range(ny) for i in range(nx)]


def embed_image(pixels: np.ndarray, encoder, patch_px: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Each tile's corner and features."""
    import cv2
    import torch

    from lego.slides.encoders import to_chw_uint8

    corners = tile_grid(pixels.shape, patch_px)
    size = encoder.input_px
    tiles = []
    for x, y in corners:
        tile = pixels[y:y + patch_px, x:x + patch_px]
        if tile.shape[:2] != (patch_px, patch_px):  # an image smaller than a tile: padded with white
            tile = np.pad(tile, ((0, patch_px - tile.shape[0]), (0, patch_px - tile.shape[1]), (0, 0)), constant_values=255)
        if patch_px != size:
            tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA if patch_px > size else cv2.INTER_CUBIC)
        tiles.append(to_chw_uint8(tile))
    with torch.inference_mode():
        feats = encoder.embed(torch.stack(tiles)).float().numpy()
    return corners, feats


def prepare_images(path: str | Path, modality: str, *, encoder: str, checkpoint: str | None = None,
                   image_px: int = 672, patch_px: int = 224, id_regex: str = SETTINGS["id_regex"]["default"],
                   extensions: list[str] | None = None) -> pd.DataFrame:
    """One row per tile of every readable image (see the module docstring)."""
    from lego.slides.encoders import create_encoder

    images = list_images(path, id_regex, extensions)
    enc = create_encoder(encoder, checkpoint)
    parts, failed = [], []
    for row in images.itertuples():
        try:
            corners, feats = embed_image(read_image(row.path, image_px), enc, patch_px)
        except InputError as exc:  # one bad image is recorded; the others go on
            log.warning("modality %s: image left out: %s", modality, exc)
            failed.append(row.path)
            continue
        part = pd.DataFrame(feats.astype(np.float32), columns=[f"{FEATURE}{k}" for k in range(feats.shape[1])])
        part.insert(0, "patient_id", row.patient_id)
        part.insert(1, "image", row.path)
        part.insert(2, "x", [c[0] for c in corners])
        part.insert(3, "y", [c[1] for c in corners])
        parts.append(part)
    if not parts:
        raise InputError(f"{path}: modality {modality!r}: none of the {len(images)} image(s) could be read "
                         f"(e.g. {failed[0]}); check the files")
    out = pd.concat(parts, ignore_index=True)
    out.insert(4, "encoder", enc.name)
    out.insert(5, "encoder_digest", enc.digest)
    out.insert(6, "image_px", image_px)  # how the tiles' corners map back onto the image (drawings)
    out.insert(7, "patch_px", patch_px)
    log.info("modality %s: %d tiles of %d images of %d patients (%d image(s) unreadable), %d-d %s features", modality,
             len(out), len(parts), out["patient_id"].nunique(), len(failed), enc.dim, enc.name)
    return out


@command("prepare-images", "Tile and embed one image modality (a folder or list of images); write a parquet table.")
class PrepareImages(Command):
    table: str = opt("a folder of images, or a table with columns patient_id and path", required=True)
    modality: str = opt("modality name (as in the config)", required=True)
    id_regex: str = opt(SETTINGS["id_regex"]["description"], default=SETTINGS["id_regex"]["default"])
    extensions: list = opt(SETTINGS["extensions"]["description"], many=True, default=EXTENSIONS)
    encoder: str = opt(SETTINGS["encoder"]["description"], default=SETTINGS["encoder"]["default"])
    checkpoint: str = opt(SETTINGS["checkpoint"]["description"])
    image_px: int = opt(SETTINGS["image_px"]["description"], kind=int, low=16, high=16384,
                        default=SETTINGS["image_px"]["default"])
    patch_px: int = opt(SETTINGS["patch_px"]["description"], kind=int, low=16, high=4096,
                        default=SETTINGS["patch_px"]["default"])
    outcome_columns: list = opt("the cohort's outcome columns (unused: images have none)", many=True)
    out: str = opt("the modality's parquet to write", required=True, output=True)

    def run(self) -> None:
        from lego.io import write_parquet

        df = prepare_images(self.table, self.modality, encoder=self.encoder, checkpoint=self.checkpoint,
                            image_px=self.image_px, patch_px=self.patch_px, id_regex=self.id_regex,
                            extensions=self.extensions)
        write_parquet(df, self.out, metadata={"modality": self.modality, "source": str(self.table)})


# ---------------------------------------------------------------------------------- per fold


def _features(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(FEATURE) and c[len(FEATURE):].isdigit()]


def _source(table: pd.DataFrame) -> dict[str, str]:
    return {"encoder": str(table["encoder"].iloc[0]), "encoder_digest": str(table["encoder_digest"].iloc[0])}


def fit_tiles(table: pd.DataFrame, train_set: set[str], opts: dict):
    """Per-dimension mean and standard deviation of the training patients' tiles (every tile)."""
    train = table[table["patient_id"].isin(train_set)]
    if train.empty:
        raise InputError(f"{opts['where']}: modality {opts['name']!r} has zero training patients in this fold")
    scaling = feature_scaling(train[_features(table)].to_numpy(np.float64), train["patient_id"].nunique(), opts,
                              ("tile", "tiles"), "the images and the encoder")
    state = {**scaling, "max_patches": opts["max_patches"], "features": _source(table)}
    return apply_tiles(opts["name"], opts["kind"], table, state, opts["seed"])


def apply_tiles(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int):
    """A saved standardisation applied to every patient's tiles (a seeded subsample above
    ``max_patches``), as patch bags are (:func:`lego.modality_kinds.wsi.standardised_bags`)."""
    check_feature_source(state["features"], _source(table), f"modality {name!r}")
    feats, cap = _features(table), state["max_patches"]
    rng = np.random.default_rng(seed)
    per = {}
    for pid, group in table.groupby("patient_id", sort=True):
        x = group[feats].to_numpy(np.float32)
        per[str(pid)] = x[np.sort(rng.choice(len(x), cap, replace=False))] if cap and len(x) > cap else x
    return standardised_bags(name, kind, per, state)


# ---------------------------------------------------------------------------------- drawings


def _overlay(pixels: np.ndarray, tiles: pd.DataFrame, patch_px: int) -> np.ndarray:
    """The image with each tile tinted by its attention percentile among the patient's tiles."""
    import cv2

    heat = np.zeros(pixels.shape[:2], np.uint8)
    covered = np.zeros(pixels.shape[:2], bool)
    for t in tiles.itertuples():
        heat[t.y:t.y + patch_px, t.x:t.x + patch_px] = int(round(255 * t.percentile / 100))
        covered[t.y:t.y + patch_px, t.x:t.x + patch_px] = True
    colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = pixels.copy()
    out[covered] = (0.5 * pixels[covered] + 0.5 * colour[covered]).astype(np.uint8)
    return out


def draw_attention(model, modality: str, table: pd.DataFrame, state: dict, patients: list[str], out: Path) -> pd.DataFrame:
    """Per patient, the model's attention over all its tiles at once (no training subsample): one
    row per tile in the index (attention sums to 1 per patient; percentile within the patient),
    one PNG per image, ``<patient>/<image name>.png``, and small JPEG previews of the first
    images for the report, ``previews/``."""
    import torch

    from lego.evaluation.heatmaps import PREVIEWS_PER_FOLD, write_preview
    from lego.slides.tissue import write_png

    columns = ["patient_id", "image", "x", "y", "attention", "percentile"]
    table = table[table["patient_id"].isin(patients)]
    if table.empty or not hasattr(getattr(model, "encoder", None), "attention"):
        return pd.DataFrame(columns=columns)
    mod = apply_tiles(modality, "image", table, {**state, "max_patches": 0}, 0)
    rows, previews = [], 0
    (out / "previews").mkdir(parents=True, exist_ok=True)
    for pid, group in table[table["patient_id"].isin(mod.per_patient)].groupby("patient_id", sort=True):
        x = mod.per_patient[str(pid)].unsqueeze(0)
        with torch.no_grad():
            weights = model.encoder.attention(x, torch.ones(x.shape[:2], dtype=torch.bool))[1][0].numpy()
        tiles = group[["image", "x", "y", "image_px", "patch_px"]].assign(
            patient_id=pid, attention=weights, percentile=100 * pd.Series(weights).rank(pct=True).to_numpy())
        (out / str(pid)).mkdir(parents=True, exist_ok=True)
        parts = list(tiles.groupby("image", sort=True))
        names = [Path(image).name for image, _ in parts]
        for k, (image, part) in enumerate(parts):
            pixels = read_image(image, int(part["image_px"].iloc[0]))
            name = names[k] if names.count(names[k]) == 1 else f"{k}_{names[k]}"  # same name, other folders
            drawn = _overlay(pixels, part, int(part["patch_px"].iloc[0]))
            write_png(drawn, out / str(pid) / f"{name}.png")
            if previews < PREVIEWS_PER_FOLD:  # the report embeds a bounded number of small JPEGs
                write_preview(drawn, out / "previews" / f"{pid}_{name}.jpg")
                previews += 1
        rows.append(tiles.drop(columns=["image_px", "patch_px"]))
    return pd.concat(rows, ignore_index=True)[columns]


IMAGE = register(ModalityKind(
    name="image", family="table", table="modality", key=("image", "x", "y"), usable=lambda df: df,
    fit=fit_tiles, apply=apply_tiles, encoder="abmil", bag=True, draw=draw_attention,
    prepare=Preparation("prepare-images", ("id_regex", "extensions", "encoder", "checkpoint", "image_px", "patch_px"),
                        files=image_files),
    settings=SETTINGS,
))
