"""Uninformative inputs never score: scores equal up to float32 arithmetic are ties in every
metric, and a slide modality whose patch features never vary is refused (issue 27, class 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lego.errors import InputError
from lego.evaluation.metrics import survival_metrics
from lego.survival.discrimination import as_ties, auc, c_index

NOISE = np.array([-1.958392977715, -1.958392858505, -1.958392918110, -1.958392739296])  # measured: identical slides


def test_risks_that_differ_by_float32_noise_are_ties_for_harrells_c():
    time, event = np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4, bool)
    assert c_index(time, event, NOISE) == 0.5
    assert c_index(time, event, np.sort(NOISE)[::-1].copy()) == 0.5  # the noise ordered to match: still a tie
    assert c_index(time, event, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0  # real differences still count


def test_every_survival_metric_sees_the_same_ties():
    pred = pd.DataFrame({"time": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "event": [1, 1, 1, 0, 1, 0],
                         "risk": np.linspace(-1.9583929, -1.9583928, 6)[::-1]})
    train = pd.DataFrame({"time": np.arange(1.0, 21.0), "event": np.tile([1, 0], 10)})
    values, _ = survival_metrics(pred, train, None, [3.0])
    assert values["c_index"] == 0.5 and values["uno_c"] == pytest.approx(0.5)
    assert values["mean_auc"] is None or values["mean_auc"] == pytest.approx(0.5)


def test_class_scores_that_differ_by_float32_noise_give_auc_one_half():
    p1 = np.array([0.5, 0.5 + 3e-8, 0.5, 0.5 + 3e-8])
    assert auc(np.array([0, 1, 0, 1]), np.stack([1 - p1, p1], 1)) == 0.5


def test_ties_keep_real_differences_of_small_and_large_scores():
    for scale in (1e-6, 1.0, 1e6):
        x = np.array([1.0, 1.001, 1.002]) * scale
        np.testing.assert_array_equal(as_ties(x), x)


def test_a_slide_modality_with_the_same_features_for_every_patch_is_refused(tmp_path):
    from lego.modality_kinds.wsi import fit_bags
    from lego.slides.features import write_feature_bag

    rows = []
    for i in range(4):
        path = tmp_path / f"s{i}.h5"
        write_feature_bag(path, np.tile([0.3, -1.2, 2.0], (5, 1)), np.zeros((5, 2)), {"encoder": "toy"})
        rows.append({"patient_id": f"P{i}", "slide_id": f"s{i}", "features": str(path), "status": "ok"})
    opts = {"max_patches": 0, "seed": 0, "name": "wsi", "kind": "wsi", "where": "fold 0"}
    with pytest.raises(InputError, match="carry no information"):
        fit_bags(pd.DataFrame(rows), {"P0", "P1", "P2"}, opts)


def test_ties_never_chain_small_steps_into_one_group():
    x = np.array([0.0, 3e-7, 6e-7, 9e-7, 1.2e-6, 1.0])  # steps of 3e-7 under a tolerance of 5e-7
    tied = as_ties(x)
    assert tied.max() - tied.min() == 1.0 and len(set(tied[:5])) == 3  # groups span at most the tolerance
    assert (np.abs(tied - x) <= 5e-7).all()
