"""LegoFuse: a reloaded fuse model reproduces its best validation loss (the un-tuned chain is a
candidate), and a fuse configuration without its block order is refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from lego.data.fold_data import fold_ids, make_targets
from lego.errors import InputError
from lego.models import files as model_io
from lego.steps.block_training import train_block
from lego.steps.fusing import fuse
from lego.steps.inference import fold_modalities as _fold_modalities
from lego.train import TrainConfig, evaluate_loss
from tests.helpers import SMALL, cohort


def test_reloaded_fuse_reproduces_its_best_validation_loss(tmp_path):
    p = cohort(tmp_path)
    dirs = []
    for m in ("zeta", "alpha"):
        d = tmp_path / "blocks" / m
        train_block(m, "tabular", str(p[m]), labels=str(p["labels"]), folds=str(p["folds"]), fold=0, task="survival", spec=SMALL, out_dir=str(d), device="cpu")
        dirs.append(str(d))
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    spec = {"mode": "stack", "epochs": 3, "lr": 1e-3, "batch_size": 16, "patience": 3, "freeze": []}  # the paper's chain
    result = fuse(dirs, data, labels=str(p["labels"]), folds=str(p["folds"]), spec=spec, out_dir=str(tmp_path / "fuse"), device="cpu")
    model, config = model_io.load(tmp_path / "fuse")
    assert config["order"] == ["zeta", "alpha"] and list(model.modalities) == ["zeta", "alpha"]
    ids = fold_ids(pd.read_parquet(p["folds"]), 0)
    mods = _fold_modalities(config["blocks"], data)
    targets = make_targets(pd.read_parquet(p["labels"]), ids["train"], "survival", bins=config["bins"])
    val_ids = [i for i in ids["val"] if any(i in m.per_patient for m in mods.values())]
    loss = evaluate_loss(model, val_ids, mods, targets, TrainConfig(batch_size=16), torch.device("cpu"))
    assert loss == pytest.approx(result["best_val_loss"], rel=1e-5)
    # The un-tuned chain was a candidate: the history starts at epoch -1 and nothing beats the best.
    hist = json.loads((tmp_path / "fuse" / "history.json").read_text())["history"]
    assert hist[0]["epoch"] == -1 and min(h["val_loss"] for h in hist) == pytest.approx(result["best_val_loss"])


def test_a_fuse_config_without_order_is_refused(tmp_path):
    with pytest.raises(InputError, match="no block 'order'"):
        model_io.block_order({"kind": "fuse", "blocks": {"a": {}, "b": {}}})
