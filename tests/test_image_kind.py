"""The ``image`` modality kind: a folder or list of ordinary images becomes per-patient bags of tile
features, standardised per fold, with attention drawn over the images; and a run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lego.data.fold_data import fit_modality, load_modality_table
from lego.errors import InputError
from lego.modality_kinds.image import image_files, list_images, prepare_images, tile_grid
from lego.modality_kinds.wsi import FeatureSourceError
from tests.helpers import lego_fails
from tests.image_cohort import image_cohort
from tests.workflow_runs import snakemake

REPO = Path(__file__).resolve().parent.parent
SMALL = {"encoder": "stain_texture", "image_px": 64, "patch_px": 32}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("photos")
    labels = image_cohort(folder / "images", n=12)
    return folder / "images", labels


def test_a_folder_of_images_gives_each_patient_a_bag_of_tile_features(photos):
    folder, labels = photos
    table = prepare_images(folder, "photo", id_regex=r"^(.+)_\d+$", **SMALL)
    assert set(table["patient_id"]) == set(labels["case_id"])
    assert {Path(p).suffix for p in table["image"]} == {".png", ".jpg", ".tif"}
    per_image = table.groupby("image").size()
    assert (per_image == 4).all()  # 85 x 64 after resizing: a centred grid of 2 x 2 tiles of 32
    assert table.filter(regex=r"^f\d+$").shape[1] == 24 and set(table["encoder"]) == {"stain_texture"}
    mod = fit_modality("photo", "image", table, sorted(labels["case_id"])[:8], max_patches=100)
    sizes = {p: len(t) for p, t in mod.per_patient.items()}
    assert sizes == (table.groupby("patient_id").size()).to_dict()  # every image of a patient in one bag


def test_a_list_table_names_images_relative_to_itself_and_ids_are_nfc(tmp_path, photos):
    folder, _ = photos
    first = sorted(folder.iterdir())[0]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(first.read_bytes())
    pd.DataFrame({"patient_id": ["Jose\u0301"], "path": ["sub/a.png"]}).to_csv(tmp_path / "list.csv", index=False)
    listed = list_images(tmp_path / "list.csv")
    assert listed["patient_id"].tolist() == ["Jos\u00e9"] and Path(listed["path"][0]).is_file()


def test_an_unreadable_image_is_left_out_and_the_others_go_on(tmp_path, photos, caplog):
    folder, _ = photos
    copy = tmp_path / "images"
    copy.mkdir()
    for f in sorted(folder.iterdir())[:3]:
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "BROKEN_0.jpg").write_text("not a jpeg")
    table = prepare_images(copy, "photo", id_regex=r"^(.+)_\d+$", **SMALL)
    assert "BROKEN" not in set(table["patient_id"]) and table["image"].nunique() == 3
    assert "BROKEN_0.jpg: not a readable image" in caplog.text


def test_the_tile_grid_is_centred_and_holds_whole_tiles():
    assert tile_grid((100, 70, 3), 32) == [(3, 2), (35, 2), (3, 34), (35, 34), (3, 66), (35, 66)]
    assert tile_grid((20, 20, 3), 32) == [(0, 0)]  # smaller than a tile: one (padded) tile


def test_tile_features_are_standardised_on_training_patients_only(photos):
    folder, labels = photos
    table = prepare_images(folder, "photo", id_regex=r"^(.+)_\d+$", **SMALL)
    train = sorted(labels["case_id"])[:8]
    changed = table.copy()
    changed.loc[~changed["patient_id"].isin(train), "f0"] += 100.0
    a = fit_modality("photo", "image", table, train, max_patches=100)
    b = fit_modality("photo", "image", changed, train, max_patches=100)
    assert a.state == b.state and torch.equal(a.per_patient[train[0]], b.per_patient[train[0]])


def test_features_of_another_encoder_are_refused(photos, tmp_path):
    from lego.data.fold_data import apply_modality

    folder, labels = photos
    table = prepare_images(folder, "photo", id_regex=r"^(.+)_\d+$", **SMALL)
    state = fit_modality("photo", "image", table, sorted(labels["case_id"])[:8], max_patches=100).state
    other = table.assign(encoder="uni", encoder_digest="0" * 16)
    with pytest.raises(FeatureSourceError, match="features of encoder 'uni'"):
        apply_modality("photo", "image", other, state)
    table.to_parquet(tmp_path / "t.parquet")
    assert len(load_modality_table("image", tmp_path / "t.parquet")) == len(table)


def test_the_images_and_weights_a_preparation_reads_are_declared_inputs(photos, tmp_path):
    folder, _ = photos
    files = image_files({"path": str(folder), "id_regex": r"^(.+)_\d+$", "checkpoint": "w.safetensors"})
    assert files[-1] == "w.safetensors" and len(files) == len(list(folder.iterdir())) + 1


@pytest.mark.parametrize("args, phrase", [
    (["--id-regex", "^(X.+)$"], "does not match id_regex"),
    (["--extensions", ".bmp"], "no image with extension .bmp"),
    (["--encoder", "nonesuch"], "unknown encoder 'nonesuch'"),
])
def test_bad_image_input_is_one_line_with_the_fix(photos, tmp_path, capsys, args, phrase):
    folder, _ = photos
    lego_fails(["prepare-images", "--table", str(folder), "--modality", "photo", "--encoder", "stain_texture",
                "--out", str(tmp_path / "p.parquet"), *args], capsys, phrase)


def test_an_image_cohort_runs_end_to_end_and_its_attention_is_drawn_over_the_images(tmp_path):
    """A user's folder of images and a clinical table, through the registry alone: blocks, merge,
    fuse, the ensemble, Coxnet, the plain ABMIL over the tiles, and attention over each image."""
    labels = image_cohort(tmp_path / "images", n=36, seed=1)
    labels.to_csv(tmp_path / "clinical.csv", index=False)
    config = yaml.safe_load((REPO / "config" / "image_example.yaml").read_text())
    config["cohort"]["labels"]["path"] = str(tmp_path / "clinical.csv")
    config["modalities"]["clinical"]["path"] = str(tmp_path / "clinical.csv")
    config["modalities"]["photo"].update(path=str(tmp_path / "images"), **SMALL)
    config["folds"] = {"method": "kfold", "n_folds": 2}
    config["model"] = {"train": {"epochs": 3}, "block": {"latent_rows": 4, "latent_dim": 16, "encoder_width": 16}}
    config["evaluation"]["baselines"] = ["coxnet", "ensemble", "abmil"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2")
    out = tmp_path / "results" / config["cohort"]["name"]
    models = set(pd.read_csv(out / "summary" / "metrics.tsv", sep="\t")["model"])
    assert {"block-photo", "block-clinical", "merge", "fuse", "lego", "ensemble", "coxnet-early",
            "abmil-photo"} <= models, models
    drawn = sorted((out / "attention").rglob("*.png"))
    assert drawn, "no attention drawn"
    previews = list((out / "attention" / "block-photo" / "fold0" / "previews").glob("*.jpg"))
    assert 0 < len(previews) <= 12  # what the report embeds stays bounded
    index = pd.read_csv(out / "attention" / "block-photo" / "fold0" / "index.tsv", sep="\t")
    assert np.isclose(index.groupby("patient_id")["attention"].sum(), 1.0, atol=1e-4).all()


def test_an_unknown_modality_table_column_layout_is_refused_for_images(tmp_path):
    pd.DataFrame({"patient_id": ["a"], "x": [0]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises((InputError, KeyError)):
        fit_modality("photo", "image", pd.read_parquet(tmp_path / "bad.parquet"), ["a"], max_patches=10)


def test_16_bit_and_transparent_images_keep_their_contrast(tmp_path):
    """Pillow's plain RGB conversion turns a 16-bit ramp (an X-ray export) nearly all white: scaled by its range."""
    from PIL import Image

    from lego.modality_kinds.image import read_image

    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "xray.png")
    pixels = read_image(tmp_path / "xray.png", 64)
    assert pixels[..., 0].min() <= 2 and pixels[..., 0].max() >= 253 and 100 < pixels.mean() < 155
    rgba = np.zeros((32, 32, 4), np.uint8)  # black, fully transparent
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert (read_image(tmp_path / "clear.png", 32) == 255).all()


def test_strips_duplicates_and_missing_listed_images_are_handled_by_name(tmp_path, photos, caplog):
    from PIL import Image

    from lego.modality_kinds.image import read_image

    Image.new("RGB", (1000, 10)).save(tmp_path / "strip.png")
    with pytest.raises(InputError, match="is a strip"):
        read_image(tmp_path / "strip.png", 64)
    folder, _ = photos
    first = str(sorted(folder.iterdir())[0])
    pd.DataFrame({"patient_id": ["a", "b"], "path": [first, first]}).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(InputError, match="line 3 lists"):
        list_images(tmp_path / "twice.csv")
    pd.DataFrame({"patient_id": ["a", "b"], "path": [first, str(tmp_path / "gone.png")]}).to_csv(tmp_path / "l.csv", index=False)
    assert image_files({"path": str(tmp_path / "l.csv")}) == [first]  # a missing file is no planned input
    table = prepare_images(tmp_path / "l.csv", "photo", **SMALL)
    assert set(table["patient_id"]) == {"a"} and "gone.png: not a readable image" in caplog.text


def test_a_fold_without_image_patients_draws_nothing_instead_of_failing(photos, tmp_path):
    from lego.modality_kinds.image import draw_attention

    folder, _ = photos
    table = prepare_images(folder, "photo", id_regex=r"^(.+)_\d+$", **SMALL)
    index = draw_attention(object(), "photo", table, {}, ["nobody"], tmp_path)
    assert index.empty and list(index.columns)[:2] == ["patient_id", "image"]
