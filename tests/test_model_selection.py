"""Choices made on validation patients only: grid candidates, the best-score and one-SE rules and
their bootstrap standard error, select-block, the tuned merge (weights, scales, method) and the
choice of the final variant."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lego.data.fold_data import fold_ids
from lego.models import files as model_io
from lego.steps.block_training import train_block
from tests.helpers import SMALL, lego_fails, trained_blocks


def test_grid_candidates_are_every_combination_in_a_stable_order():
    from lego.model_selection import grid_candidates

    assert grid_candidates({}) == [{}]
    grid = grid_candidates({"lr": [0.1, 0.2], "encoder": ["linear", "snn"]})
    assert grid == [{"encoder": "linear", "lr": 0.1}, {"encoder": "linear", "lr": 0.2},
                    {"encoder": "snn", "lr": 0.1}, {"encoder": "snn", "lr": 0.2}]


def test_one_se_rule_keeps_the_first_candidate_within_one_standard_error():
    from lego.model_selection import choose

    scores, ses = [0.70, None, 0.74, 0.80], [0.05, None, 0.05, 0.08]
    assert choose(scores, ses, "best") == (3, None)
    index, threshold = choose(scores, ses, "one_se")
    # 0.70 is not within 0.80 - 0.08 but 0.74 is: the first listed within reach wins.
    assert index == 2 and threshold == pytest.approx(0.72)
    assert choose([0.70, 0.79, 0.80], [0.01, 0.01, 0.02], "one_se")[0] == 1
    assert choose([0.79, 0.70, 0.80], [0.01, 0.01, 0.02], "one_se")[0] == 0
    # Without a standard error the rule falls back to the best score.
    assert choose([0.6, 0.7], [None, None], "one_se") == (1, None)
    with pytest.raises(ValueError, match="one_se"):
        choose([0.6], [0.1], "median")


def test_a_nan_validation_score_never_wins():
    from lego.model_selection import choose

    assert choose([float("nan"), 0.6], [0.1, 0.05], "best")[0] == 1
    assert choose([float("nan"), 0.6], [float("nan"), 0.05], "one_se")[0] == 1


def test_validation_se_is_a_seeded_bootstrap_that_shrinks_with_more_patients():
    from lego.model_selection import validation_se

    rng = np.random.default_rng(0)

    def frames(n):
        risk = rng.normal(size=n)
        time = np.exp(-risk + rng.normal(size=n))
        pred = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "risk": risk})
        return pred, pd.DataFrame({"patient_id": pred.patient_id, "time": time, "event": rng.random(n) < 0.6})

    small, big = frames(40), frames(400)
    from lego.model_selection import _bootstrap_c
    from lego.survival.discrimination import c_index

    whole = small[1].merge(small[0], on="patient_id")
    t, e, r = whole["time"].to_numpy(), whole["event"].to_numpy(bool), whole["risk"].to_numpy()
    assert _bootstrap_c(t, e, r, [np.arange(len(t))])[0] == pytest.approx(c_index(t, e, r), abs=1e-12)
    for _ in range(50):  # tied times and tied risks, counted as scikit-survival counts them
        t, e, r = rng.integers(1, 5, 12).astype(float), rng.random(12) < 0.6, rng.integers(0, 4, 12).astype(float)
        if e.any() and np.isfinite(c_index(t, e, r)):
            assert _bootstrap_c(t, e, r, [np.arange(12)])[0] == pytest.approx(c_index(t, e, r), abs=1e-12)
    assert validation_se(*small, "survival") == validation_se(*small, "survival")  # seeded
    assert validation_se(*big, "survival") < validation_se(*small, "survival")
    assert validation_se(small[0].iloc[:0], small[1], "survival") is None


def test_select_candidate_keeps_the_best_validation_score(tmp_path):
    from lego.model_selection import select_candidate

    dirs = []
    for i, score in enumerate([0.61, None, 0.74, 0.74]):
        d = tmp_path / f"c{i}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(bytes([i]))
        (d / "config.json").write_text("{}")
        (d / "history.json").write_text(json.dumps({"val_score": score, "best_val_loss": 1.0 - i / 10}))
        dirs.append(str(d))
    choice = select_candidate(dirs, str(tmp_path / "out"), rule="best")
    # c2 and c3 tie on the score; c3 has the lower validation loss.
    assert choice["chosen"] == "c3" and (tmp_path / "out" / "model.safetensors").read_bytes() == bytes([3])
    assert json.loads((tmp_path / "out" / "selection.json").read_text())["candidates"]["c1"] is None


def test_select_block_names_a_damaged_history_file(tmp_path, capsys):
    for i, text in enumerate(['{"val_score": 0.6}', "[1, 2]"]):
        (tmp_path / f"c{i}").mkdir()
        (tmp_path / f"c{i}" / "history.json").write_text(text)
        (tmp_path / f"c{i}" / "config.json").write_text('{"modality": "a", "fold": 0, "task": "survival"}')
    lego_fails(["select-block", "--candidates", str(tmp_path / "c0"), str(tmp_path / "c1"), "--out-dir", str(tmp_path / "o")],
               capsys, "c1/history.json", "expected a JSON dict")


def test_select_block_refuses_candidates_of_different_blocks(tmp_path, block, capsys):
    train_block("alpha", "tabular", str(block["alpha"]), labels=str(block["labels"]), folds=str(block["folds"]), fold=0, task="survival",
                spec=SMALL, out_dir=str(tmp_path / "other"), device="cpu")
    lego_fails(["select-block", "--candidates", str(tmp_path / "blk"), str(tmp_path / "other"), "--out-dir",
                str(tmp_path / "sel")], capsys, "choose among candidates of one block and fold")


def test_tuned_merge_never_reads_test_patients_and_records_its_choice(tmp_path, monkeypatch):
    from lego.steps import inference, merging

    p, dirs = trained_blocks(tmp_path)
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    test_ids = set(fold_ids(pd.read_parquet(p["folds"]), 0)["test"])
    seen = []
    real_predict = inference.predict
    monkeypatch.setattr(inference, "predict", lambda m, c, mods, ids, **k: seen.extend(ids) or real_predict(m, c, mods, ids, **k))
    config = merging.merge_tuned(dirs, data, labels=str(p["labels"]), folds=str(p["folds"]), out_dir=str(tmp_path / "tuned"), search=True)
    assert seen and not (set(seen) & test_ids), "only validation patients are predicted"
    tried = config["selection"]["tried"]
    assert "stacking_shrinkage" in config["selection"]
    assert {tuple(t["blocks"]) for t in tried} == {("zeta", "alpha")} and {t["method"] for t in tried} == {"harmonic", "mean", "readout"}
    assert set(config["weights"]) == set(config["scales"]) == set(config["order"])
    model, cfg = model_io.load(tmp_path / "tuned")  # the weights and scales rebuild the same model
    assert model.weights == [cfg["weights"][m] for m in cfg["order"]]
    plain = merging.merge_tuned(dirs, data, labels=str(p["labels"]), folds=str(p["folds"]), out_dir=str(tmp_path / "plain"))
    # Neural blocks have no out-of-fold scores: validation alone, too few events for a choice among
    # forms -- the readout with the (shrunk) stacked weights is the merge.
    assert plain["selection"]["chosen_on"] == "validation patients"
    assert [(t["method"], t["weights"]) for t in plain["selection"]["tried"]] == [("readout", plain["selection"]["stacked_weights"])]
    assert (plain["method"], plain["weights"]) == ("readout", plain["selection"]["stacked_weights"])


def test_merge_weights_and_scales_change_the_merge():
    from lego.data.fold_data import ModalityTensors, collate
    from lego.model_selection import merge_weights
    from lego.models.block import BlockConfig, LegoBlock
    from lego.models.merge import LegoMerge

    assert merge_weights({"a": 0.7, "b": 0.45, "c": None}) == pytest.approx({"a": 0.2, "b": 0.01, "c": 0.01})
    torch.manual_seed(0)
    blocks = {m: LegoBlock(BlockConfig(3, 4, latent_rows=4, latent_dim=8, heads=1, head_dim=4, encoder_width=8, init_seed=i)).eval()
              for i, m in enumerate("ab")}
    mods = {m: ModalityTensors(m, "tabular", {"p": torch.randn(1, 3)}, {}, 3) for m in "ab"}
    inputs = collate(["p"], mods)
    plain = LegoMerge(blocks, "mean", "linear")(inputs)[1]
    only_a = LegoMerge(blocks, "mean", "linear", weights={"a": 1.0, "b": 1e-9})(inputs)[0]
    torch.testing.assert_close(only_a, blocks["a"].latent_from(*inputs["a"][:2]), rtol=1e-4, atol=1e-5)
    scaled = LegoMerge(blocks, "mean", "linear", scales={"a": 2.0, "b": 1.0})(inputs)[1]
    assert not torch.allclose(plain, scaled)
    with pytest.raises(ValueError, match="positive"):
        LegoMerge(blocks, weights={"a": 0.0, "b": 1.0})
    # readout: each latent through its own block's head, logits averaged with the weights.
    readout = LegoMerge(blocks, "readout", "linear", weights={"a": 3.0, "b": 1.0})
    per = [blocks[m].head(blocks[m].latent_from(*inputs[m][:2])) for m in "ab"]
    assert not torch.allclose(per[1], readout.head(blocks["b"].latent_from(*inputs["b"][:2])))  # heads differ
    torch.testing.assert_close(readout(inputs)[1], (3 * per[0] + per[1]) / 4)
    only_b = collate(["q"], {"a": ModalityTensors("a", "tabular", {}, {}, 3), "b": ModalityTensors("b", "tabular", {"q": torch.randn(1, 3)}, {}, 3)})
    torch.testing.assert_close(readout(only_b)[1], blocks["b"].head(blocks["b"].latent_from(*only_b["b"][:2])))


def test_a_centred_readout_shifts_a_patient_missing_a_block_by_nothing_but_that_blocks_offset():
    """Offsets centre each block's logits before the average over the blocks a patient has; their
    weighted mean is added back. A patient with every block is scored as without offsets; one
    missing a block by the other blocks' logits minus their offsets plus that common level."""
    from lego.data.fold_data import ModalityTensors, collate
    from lego.models.block import BlockConfig, LegoBlock
    from lego.models.merge import LegoMerge

    torch.manual_seed(0)
    blocks = {m: LegoBlock(BlockConfig(3, 4, latent_rows=4, latent_dim=8, heads=1, head_dim=4, encoder_width=8, init_seed=i)).eval()
              for i, m in enumerate("ab")}
    weights, offsets = {"a": 3.0, "b": 1.0}, {"a": [1.0, 2.0, 3.0, 4.0], "b": [-1.0, 0.5, 0.0, 2.0]}
    x = {"p": torch.randn(1, 3)}
    both = collate(["p"], {m: ModalityTensors(m, "tabular", x, {}, 3) for m in "ab"})
    only_b = collate(["p"], {"a": ModalityTensors("a", "tabular", {}, {}, 3), "b": ModalityTensors("b", "tabular", x, {}, 3)})
    plain, centred = LegoMerge(blocks, "readout", weights=weights), LegoMerge(blocks, "readout", weights=weights, offsets=offsets)
    torch.testing.assert_close(centred(both)[1], plain(both)[1])
    level = (3 * torch.tensor(offsets["a"]) + torch.tensor(offsets["b"])) / 4
    torch.testing.assert_close(centred(only_b)[1], plain(only_b)[1] - torch.tensor(offsets["b"]) + level)
    with pytest.raises(ValueError, match="lack"):
        LegoMerge(blocks, "readout", offsets={"a": offsets["a"]})
    with pytest.raises(ValueError, match="one value per output"):  # never broadcast over the bins
        LegoMerge(blocks, "readout", offsets={"a": offsets["a"], "b": [0.5]})


def test_a_readout_model_saved_before_readouts_read_each_blocks_own_head_is_refused_not_rebuilt(tmp_path):
    """Such a model would now predict differently from what was evaluated: one line, rerun the step."""
    from lego.errors import InputError
    from lego.models import files as model_files
    from lego.models.block import BlockConfig, LegoBlock
    from lego.steps.fold_blocks import combined_config

    blocks = {m: LegoBlock(BlockConfig(3, 4, latent_rows=4, latent_dim=8, heads=1, head_dim=4, encoder_width=8, init_seed=i))
              for i, m in enumerate("ab")}
    cfgs = {m: {"fold": 0, "task": "survival", "bins": [0, 1, 2, 3, 4], "classes": [], "block": b.cfg.to_dict()}
            for m, b in blocks.items()}
    config = combined_config("merge", cfgs, method="readout", head_method="slerp")
    model_files.build(config)  # written now: rebuilt
    old = {k: v for k, v in config.items() if k != "readout_reads"}
    with pytest.raises(InputError, match="before readouts read each block's own head"):
        model_files.build(old)
    model_files.build({**old, "method": "harmonic"})  # other forms read the merged head, as before


def test_select_variant_uses_validation_only(tmp_path):
    from lego.steps.variants import select_variant

    files = []
    for name, val, test in (("merge", 0.60, 0.90), ("merge-tuned", 0.70, 0.50), ("fuse", None, 0.99)):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame({"patient_id": ["p"], "subset": ["test"], "risk": [test]}).to_parquet(d / "predictions.parquet")
        (d / "metrics.json").write_text(json.dumps({"model": name, "fold": 0, "task": "survival",
                                                     "val": {"c_index": val}, "test": {"c_index": test}}))
        files.append(str(d / "metrics.json"))
    chosen = select_variant(files, str(tmp_path / "lego"))
    assert chosen["variant"] == "merge-tuned" and chosen["model"] == "lego" and chosen["test"]["c_index"] == 0.5
    assert pd.read_parquet(tmp_path / "lego" / "predictions.parquet")["risk"].tolist() == [0.5]


def _variant(tmp_path, name: str, risk_val: np.ndarray, time: np.ndarray, event: np.ndarray, test_c: float) -> str:
    from lego.evaluation.metrics import headline

    d = tmp_path / name
    d.mkdir(parents=True)
    val = pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(time))], "subset": "val", "risk": risk_val,
                        "time": time, "event": event})
    val.to_parquet(d / "predictions.parquet")
    (d / "metrics.json").write_text(json.dumps({"model": name, "fold": 0, "task": "survival",
                                                 "val": {"c_index": headline(val, "survival")}, "test": {"c_index": test_c}}))
    return str(d / "metrics.json")


def test_select_variant_prefers_the_tuned_merge_unless_another_is_clearly_better(tmp_path):
    from lego.steps.variants import select_variant

    rng = np.random.default_rng(0)
    n = 60
    time, event, signal = rng.exponential(10, n), rng.random(n) < 0.5, rng.normal(size=n)
    truth = -np.log(time)  # higher risk, shorter time
    files = [_variant(tmp_path, "fuse", truth + 1.5 * signal, time, event, 0.9),  # listed first: order is by name
             _variant(tmp_path, "merge-tuned", truth + 1.8 * signal, time, event, 0.6),
             _variant(tmp_path, "merge", truth + 3 * rng.normal(size=n), time, event, 0.5)]
    scores = {json.loads(open(f).read())["model"]: json.loads(open(f).read())["val"]["c_index"] for f in files}
    assert scores["fuse"] > scores["merge-tuned"] > scores["merge"]
    one_se = select_variant(files, str(tmp_path / "one_se"))
    assert one_se["variant"] == "merge-tuned" and one_se["threshold"] <= scores["merge-tuned"]
    assert one_se["variant_val_se"]["fuse"] > 0
    assert select_variant(files, str(tmp_path / "best"), rule="best")["variant"] == "fuse"
    # A clear gain on validation still wins.
    clear = [files[0], _variant(tmp_path / "noise", "merge-tuned", rng.normal(size=n), time, event, 0.6)]
    assert select_variant(clear, str(tmp_path / "clear"))["variant"] == "fuse"
