"""What train-block, merge, fuse and the baselines accept or refuse: block specs checked like the
config, labels of the wrong kind or given as data, and blocks that cannot be merged or fused.
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import json

import pytest

from lego.cli import main
from lego.errors import InputError
from tests.helpers import SMALL, cohort, lego_fails, trained_blocks


def test_the_small_spec_the_tests_train_with_is_valid():
    """SMALL (tests/helpers.py) is the block spec the tests train their small blocks with."""
    from lego.steps.block_training import check_spec

    assert check_spec(dict(SMALL), "x") == SMALL


@pytest.mark.parametrize("spec, phrase", [
    ({"epochs": 0}, "'epochs': 0 is less than the minimum of 1"),
    ({"epochs": "ten"}, "'epochs': 'ten' is not of type 'integer'"),
    ({"lr": -1}, "'lr': -1 is less than or equal to the minimum of 0"),
    ({"batch_size": 0}, "'batch_size': 0 is less than the minimum of 1"),
    ({"epoch": 1}, "unknown block setting(s) ['epoch']"),
    ({"encoder": "foo"}, "'encoder': 'foo' is not one of"),
    ([1, 2], "must be a JSON object"),
])
def test_a_bad_block_spec_is_one_line(spec, phrase, tmp_path, capsys):
    p = cohort(tmp_path, 60)
    args = ["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["zeta"]), "--labels", str(p["labels"]),
            "--folds", str(p["folds"]), "--fold", "0", "--task", "survival", "--spec", json.dumps(spec),
            "--out-dir", str(tmp_path / "out")]
    lego_fails(args, capsys, phrase)
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("extra, phrase", [
    ({"preprocess": {"clip_quantiles": [0.99, 0.01]}}, "'preprocess.clip_quantiles': [0.99, 0.01] must be [lower, upper]"),
    ({"preprocess": {"select_k": 0}}, "'preprocess.select_k': 0 is less than the minimum of 1"),
    ({"preprocess": {"clip_quantiles": [0.5]}}, "'preprocess.clip_quantiles': [0.5] is too short"),
    ({"lr": -1}, "'lr': -1 is less than or equal to the minimum of 0"),
    ({"encoder": "nope"}, "'encoder': 'nope' is not one of"),
])
def test_a_hand_written_block_spec_is_checked_like_the_config(tmp_path, capsys, extra, phrase):
    p = cohort(tmp_path)
    spec = json.dumps({**SMALL, **extra})
    lego_fails(["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["zeta"]), "--labels",
                str(p["labels"]), "--folds", str(p["folds"]), "--fold", "0", "--spec", spec, "--out-dir",
                str(tmp_path / "b"), "--device", "cpu"], capsys, "modality 'zeta', fold 0: block spec", phrase)


def test_a_model_given_the_labels_as_its_data_is_refused(tmp_path, capsys):
    p = cohort(tmp_path)
    common = ["--labels", str(p["labels"]), "--folds", str(p["folds"]), "--fold", "0"]
    lego_fails(["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["labels"]), *common,
                "--spec", json.dumps(SMALL), "--out-dir", str(tmp_path / "b"), "--device", "cpu"], capsys,
               "column(s) ['time', 'event'] are the labels' outcome")
    lego_fails(["baselines", "--methods", "coxnet", "--source", "zeta", "--data", f"zeta={p['labels']}",
                "--modalities", json.dumps({"zeta": {"kind": "tabular"}}), *common, "--out-root", str(tmp_path / "bl")],
               capsys, "are the labels' outcome")


def test_training_with_labels_of_the_wrong_kind_is_one_line(tmp_path, capsys):
    p = cohort(tmp_path)
    args = ["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["zeta"]), "--folds", str(p["folds"]),
            "--fold", "0", "--spec", json.dumps(SMALL), "--out-dir", str(tmp_path / "b"), "--device", "cpu"]
    lego_fails([*args, "--labels", str(p["labels"]), "--task", "classification"], capsys,
               "a classification model needs outcome column(s) ['label']", "survival outcomes")
    lego_fails([*args, "--labels", str(p["alpha"])], capsys, "a survival model needs outcome column(s) ['time', 'event']")


def test_merge_and_fuse_refuse_one_block_two_of_a_modality_and_bad_specs(tmp_path):
    from lego.steps.fusing import fuse
    from lego.steps.merging import merge

    p, dirs = trained_blocks(tmp_path, SMALL)
    with pytest.raises(InputError, match="at least two modalities"):
        merge(dirs[:1], "harmonic", "slerp", str(tmp_path / "m1"))
    with pytest.raises(InputError, match="hold the same modality"):
        merge([dirs[0], dirs[0], dirs[1]], "harmonic", "slerp", str(tmp_path / "m2"))
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    for spec, phrase in (({"mode": "foo"}, "unknown fuse mode 'foo'"), ({"freeze": "encoders"}, "freeze must be a list"),
                         ({"freeze": ["encoder"]}, r"unknown freeze name\(s\) \['encoder'\]")):
        with pytest.raises(InputError, match=phrase):
            fuse(dirs, data, labels=str(p["labels"]), folds=str(p["folds"]), spec={"epochs": 1, **spec}, out_dir=str(tmp_path / "f"), device="cpu")


def test_a_merge_folder_given_as_a_block_is_one_line(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    assert main(["merge", "--blocks", *dirs, "--out-dir", str(tmp_path / "m")]) == 0
    lego_fails(["merge", "--blocks", str(tmp_path / "m"), dirs[1], "--out-dir", str(tmp_path / "m2")], capsys,
               "a merge model, not a block")


def test_a_neural_encoder_under_a_tied_head_is_warned_about(tmp_path, caplog):
    """With a frozen shared head an SNN block ranked UCEC patients worse than chance: say so."""
    import logging

    from tests.helpers import SMALL, trained_blocks

    (tmp_path / "tied").mkdir()
    (tmp_path / "own").mkdir()
    with caplog.at_level(logging.WARNING):
        trained_blocks(tmp_path / "tied", spec={**SMALL, "encoder": "snn", "tied_head": True}, names=("zeta",))
    assert "tied (frozen) head" in caplog.text and "tied_head to auto or false" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        trained_blocks(tmp_path / "own", spec={**SMALL, "encoder": "snn", "tied_head": False}, names=("zeta",))
    assert "tied (frozen) head" not in caplog.text


@pytest.mark.parametrize("encoder, frozen", [("snn", False), ("abmil", False), ("gru", False), ("coxnet", True),
                                             ("coxrsf", True)])
def test_the_default_ties_the_head_of_fitted_encoders_only(encoder, frozen):
    """tied_head auto: a fitted score ranks patients whatever the head, a neural encoder under a
    frozen random head ranked them worse than chance (UCEC 0.42-0.53, AIDS 0.39)."""
    from lego.models.block import BlockConfig, LegoBlock

    cfg = BlockConfig(3, 4, encoder=encoder)
    assert cfg.tied_head == "auto" and cfg.frozen_head is frozen
    assert all(p.requires_grad is not frozen for p in LegoBlock(cfg).head.parameters())
