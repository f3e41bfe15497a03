"""bench/demo_seeds.py: issue 26's demo targets per demo and pooled, each judged met, within noise or missed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_bench


def load():
    return load_bench("demo_seeds")


def scores(**cols) -> pd.DataFrame:
    """model x fold test C of one demo, as bench/paper_table.fold_scores gives it."""
    return pd.DataFrame(cols).rename_axis(index="fold").rename(columns=lambda c: c.replace("_", "-"))


def test_each_target_is_paired_by_fold_and_pooled_over_the_demos():
    ds = load()
    a = scores(block_rna=[0.6, 0.7, 0.65], coxnet_rna=[0.6, 0.7, 0.65], merge=[0.70, 0.71, 0.72],
               ensemble=[0.72, 0.72, 0.73], lego=[0.75, 0.74, 0.76], rsf_early=[0.70, 0.70, 0.70])
    b = scores(block_rna=[0.5, 0.6], coxnet_rna=[0.55, 0.66], merge=[0.6, 0.61], ensemble=[0.59, 0.62],
               lego=[0.6, 0.6], rsf_early=[0.6, 0.6])
    rows = ds.compare({"seed7": a, "s2": b, "s3": b})
    get = lambda m, r, d: next(x for x in rows if (x["model"], x["reference"], x["demo"]) == (m, r, d))  # noqa: E731
    assert get("block-rna", "coxnet-rna", "seed7")["verdict"] == "met"  # equal: within 0.02
    pooled = get("merge", "ensemble", "pooled")
    assert pooled["n"] == 7 and pooled["diff"] == pytest.approx(np.mean([-0.02, -0.01, -0.01, 0.01, -0.01, 0.01, -0.01]))
    untuned = get("merge", "ensemble", "pooled, untuned")  # the demo the defaults were chosen on is left out
    assert untuned["n"] == 4 and untuned["diff"] == pytest.approx(0.0)
    assert get("lego", "rsf-early", "seed7")["verdict"] == "met" and get("lego", "rsf-early", "pooled")["n"] == 7
    # a model or reference a demo lacks (no slides, no abmil) is left out, not compared with NaN
    assert not [x for x in rows if x["reference"] == "abmil-wsi"]


@pytest.mark.parametrize("diff, low, high, threshold, verdict", [
    (0.001, -0.01, 0.012, 0.0, "met"),
    (-0.004, -0.02, 0.01, 0.0, "missed within noise"),
    (-0.008, -0.016, -0.001, 0.0, "missed"),
    (-0.019, -0.05, 0.01, -0.02, "met"),
    (-0.03, -0.05, -0.021, -0.02, "missed"),
    (0.98 - 1.0, -0.05, 0.01, -0.02, "met"),  # -0.020000000000000018: the threshold itself, up to rounding
])
def test_a_target_is_met_or_missed_within_noise_or_missed_by_where_its_mean_and_interval_lie(diff, low, high,
                                                                                              threshold, verdict):
    assert load().verdict({"diff": diff, "low": low, "high": high, "n": 5}, threshold) == verdict


def test_a_target_without_two_paired_folds_has_no_verdict():
    ds = load()
    assert ds.verdict({"diff": 0.01, "low": np.nan, "high": np.nan, "n": 1}, 0.0) == "n/a"


def test_a_demo_config_is_the_default_with_only_its_overrides_changed():
    import yaml

    ds = load()
    base = yaml.safe_load(ds.BASE.read_text())
    seed11 = ds.merged(base, ds.DEMOS["seed11"])
    assert seed11["demo"] == {**base["demo"], "seed": 11}
    assert seed11["evaluation"]["baseline_inputs"] == ["each", "early"] and seed11["modalities"] == base["modalities"]
    assert base["demo"]["seed"] == 7 and ds.merged(base, ds.DEMOS["seed7"])["evaluation"]["baselines"] == \
        base["evaluation"]["baselines"]
