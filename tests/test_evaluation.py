"""Metrics against hand-computed values and the libraries, bootstrap intervals, baselines, ensemble."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from lego.data.folds import make_folds
from lego.evaluation.baseline_runs import BaselineRun, run_baselines, run_ensemble
from lego.evaluation.bootstrap import mean_ci, pair_matrices, pair_score, paired_difference
from lego.evaluation.metrics import classification_metrics, curve_at, score_subset, survival_metrics
from lego.evaluation.scoring import EvalOptions, write_evaluation
from lego.evaluation.summary import best_block, summarise

EDGES = [0.0, 1.0, 2.0, 3.0, np.inf]


def _surv_frame(time, event, risk, surv=None):
    df = pd.DataFrame({"patient_id": [f"P{i}" for i in range(len(time))], "time": time, "event": event, "risk": risk})
    if surv is not None:
        for k in range(surv.shape[1]):
            df[f"surv_{k}"] = surv[:, k]
    return df


def test_harrell_c_by_hand_and_pair_formula_equals_scikit_survival():
    # Comparable pairs (event first): (0,1) (0,2) (0,3) (2,3); concordant: (0,1) (0,3); (0,2) tied risk.
    df = _surv_frame([1.0, 2.0, 3.0, 4.0], [1, 0, 1, 0], [0.9, 0.1, 0.9, 0.5])
    values, missing = survival_metrics(df, df, None, [])
    assert values["c_index"] == pytest.approx((2 + 0.5 + 1) / 4) and "c_index" not in missing
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 30
        t = rng.integers(1, 8, n).astype(float)  # many tied times
        e = rng.integers(0, 2, n)
        r = rng.integers(0, 4, n).astype(float)  # many tied risks
        frame = _surv_frame(t, e, r)
        expected = concordance_index_censored(e.astype(bool), t, r)[0]
        assert pair_score(pair_matrices(frame, "survival"), np.ones(n))[0] == pytest.approx(expected)


def test_auc_pair_formula_equals_scikit_learn_binary_and_macro_ovr():
    rng = np.random.default_rng(1)
    y3 = rng.integers(0, 3, 40)
    p3 = rng.dirichlet([1, 1, 1], 40).round(1)  # ties
    frame = pd.DataFrame({"label": np.array(["a", "b", "c"])[y3], "p_a": p3[:, 0], "p_b": p3[:, 1], "p_c": p3[:, 2]})
    expected = np.mean([roc_auc_score(y3 == k, p3[:, k]) for k in range(3)])
    assert pair_score(pair_matrices(frame, "classification"), np.ones(40))[0] == pytest.approx(expected)
    y2 = rng.integers(0, 2, 40)
    binary = pd.DataFrame({"label": np.array(["neg", "pos"])[y2], "p_neg": 1 - p3[:, 0], "p_pos": p3[:, 0]})
    assert pair_score(pair_matrices(binary, "classification"), np.ones(40))[0] == pytest.approx(roc_auc_score(y2, p3[:, 0]))


def test_uno_c_equals_harrell_without_censoring_and_horizons_outside_follow_up_are_missing():
    rng = np.random.default_rng(2)
    t = rng.exponential(10, 60) + 0.1
    risk = -t + rng.normal(0, 5, 60)
    df = _surv_frame(t, np.ones(60, int), risk)
    train = _surv_frame(np.concatenate([t, [t.max() + 1]]), np.ones(61, int), np.zeros(61))
    values, missing = survival_metrics(df, train, None, [5.0, 1000.0], tau_quantile=1.0)
    assert values["uno_c"] == pytest.approx(values["c_index"])  # no censoring: every IPCW weight is 1
    assert values["auc_1000"] is None and "outside the test follow-up" in missing["auc_1000"]
    assert values["auc_5"] is not None and values["mean_auc"] == pytest.approx(values["auc_5"])
    assert "ibs" in missing and "no survival curve" in missing["ibs"]


def test_integrated_brier_score_of_a_constant_half_curve_is_a_quarter():
    # S(t) = 0.5 from t = 1 on (every bin says 0.5); with no censoring BS(t) = mean((1{T>t} - 0.5)^2) = 0.25.
    t = np.array([1.0, 1.5, 2.0, 2.5, 3.5, 4.0])
    df = _surv_frame(t, np.ones(6, int), np.zeros(6), np.full((6, 4), 0.5))
    train = _surv_frame(np.linspace(0.5, 5, 20), np.ones(20, int), np.zeros(20))
    values, missing = survival_metrics(df, train, EDGES, [], tau_quantile=1.0)
    assert values["ibs"] == pytest.approx(0.25), missing


def test_survival_curve_is_linear_between_bin_edges_and_starts_at_one():
    s = curve_at(np.array([[0.8, 0.6, 0.4, 0.1]]), np.array(EDGES), np.array([0.0, 0.5, 1.0, 2.5, 3.0, 9.0]))
    assert s[0].tolist() == pytest.approx([1.0, 0.9, 0.8, 0.5, 0.4, 0.4])


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    values, missing = classification_metrics(labels, scores)
    assert values["auc"] == pytest.approx(0.75)  # pos scores .7 .4 vs neg .1 .6: 3 of 4 pairs right
    assert values["balanced_accuracy"] == pytest.approx(0.5)
    assert values["brier"] == pytest.approx(np.mean([0.01, 0.36, 0.09, 0.36]))
    one_class, why = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.5, 0.5]]))
    assert one_class["auc"] is None and "one class" in why["auc"]


def test_a_set_without_events_gives_missing_metrics_with_the_reason():
    df = _surv_frame([1.0, 2.0, 3.0], [0, 0, 0], [0.1, 0.2, 0.3])
    out = score_subset(df, "survival", df, EDGES, [2.0])
    assert out["n"] == 3 and out["events"] == 0
    for k in ("c_index", "uno_c", "auc_2", "mean_auc", "ibs"):
        assert out[k] is None and out["missing"][k] == "0 events among 3 patients"


def test_bootstrap_interval_covers_the_estimate_and_identical_models_differ_by_zero():
    rng = np.random.default_rng(3)
    folds = []
    for _ in range(3):
        t = rng.exponential(10, 50)
        folds.append(_surv_frame(t, rng.integers(0, 2, 50), -t + rng.normal(0, 8, 50)))
    point = np.mean([pair_score(pair_matrices(f, "survival"), np.ones(50))[0] for f in folds])
    lo, hi = mean_ci(folds, "survival", n_boot=300)
    assert lo < point < hi and hi - lo < 0.3
    same = [f.assign(a_risk=f["risk"], b_risk=f["risk"]) for f in folds]
    res = paired_difference(same, "survival", n_boot=200)
    assert res["difference"] == 0 and res["ci_low"] == 0 and res["ci_high"] == 0 and res["p_not_better"] == 1
    better = [f.assign(a_risk=-f["time"], b_risk=f["risk"]) for f in folds]  # a is a perfect ranking
    res = paired_difference(better, "survival", n_boot=200)
    assert res["difference"] > 0 and res["ci_low"] > 0 and res["p_not_better"] == 0


def _cohort(n=160, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    x = rng.normal(size=n)
    time = rng.exponential(20 / np.exp(1.2 * x)) + 0.5
    event = (rng.uniform(size=n) < 0.8).astype(int)
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": event})
    omics = pd.DataFrame({"patient_id": ids, "g1": x + rng.normal(0, 0.3, n), **{f"n{k}": rng.normal(size=n) for k in range(5)}})
    clinical = pd.DataFrame({"patient_id": ids, "age": rng.normal(60, 5, n), "site": rng.choice(["A", "B"], n)})
    return labels, omics, clinical


def test_baselines_choose_on_validation_and_never_see_test_patients(tmp_path):
    labels, omics, clinical = _cohort()
    folds = make_folds(labels, n_folds=2)
    paths = {}
    for name, df in (("labels", labels), ("folds", folds), ("omics", omics), ("clinical", clinical)):
        paths[name] = tmp_path / f"{name}.parquet"
        df.to_parquet(paths[name])
    specs = {"omics": {"kind": "tabular", "path": str(paths["omics"]), "preprocess": {"select_k": 3}},
             "clinical": {"kind": "tabular", "path": str(paths["clinical"]), "categorical": ["site"]}}
    opts = EvalOptions(horizons=[10.0])
    common = {"labels": str(paths["labels"]), "folds": str(paths["folds"]), "fold": 0, "task": "survival", "n_bins": 4,
              "opts": opts}
    first = run_baselines(BaselineRun(["coxnet", "rsf"], "early", specs), **common, out_root=str(tmp_path / "a"))
    assert set(first) == {"coxnet-early", "rsf-early"}
    assert first["coxnet-early"]["test"]["c_index"] > 0.65 and first["rsf-early"]["test"]["c_index"] > 0.6

    # Scramble every test patient's features and outcome: nothing fitted may change.
    test_ids = set(folds[(folds["fold"] == 0) & (folds["subset"] == "test")]["patient_id"])
    rng = np.random.default_rng(9)
    is_test = omics["patient_id"].isin(test_ids)
    omics.loc[is_test, "g1"] = rng.normal(0, 100, is_test.sum())
    lab_test = labels["patient_id"].isin(test_ids)
    labels.loc[lab_test, "time"] = rng.uniform(0.1, 500, lab_test.sum())
    omics.to_parquet(paths["omics"])
    labels.to_parquet(paths["labels"])
    second = run_baselines(BaselineRun(["coxnet", "rsf"], "early", specs), **common, out_root=str(tmp_path / "b"))
    for name in first:
        assert first[name]["baseline"] == second[name]["baseline"]
        a = pd.read_parquet(tmp_path / "a" / name / "fold0" / "predictions.parquet")
        b = pd.read_parquet(tmp_path / "b" / name / "fold0" / "predictions.parquet")
        pd.testing.assert_frame_equal(a[a["subset"] == "val"], b[b["subset"] == "val"])
        assert first[name]["val"] == second[name]["val"]


def test_ensemble_averages_the_blocks_a_patient_has(tmp_path):
    labels = pd.DataFrame({"patient_id": ["A", "B", "C", "D"], "time": [1.0, 2.0, 3.0, 4.0], "event": [1, 1, 0, 1]})
    folds = pd.DataFrame({"patient_id": ["A", "B", "C", "D"], "fold": 0, "subset": ["train", "train", "test", "test"]})
    labels.to_parquet(tmp_path / "labels.parquet")
    folds.to_parquet(tmp_path / "folds.parquet")
    files = []
    for name, pids, risk in (("block-x", ["C", "D"], [-1.0, -3.0]), ("block-y", ["D"], [-2.0])):
        pred = {"test": pd.DataFrame({"patient_id": pids, "risk": risk}), "val": pd.DataFrame({"patient_id": [], "risk": []})}
        write_evaluation(pred, labels, {"train": ["A", "B"], "val": [], "test": ["C", "D"]}, task="survival", edges=None,
                         opts=EvalOptions(horizons=[]), name=name, fold=0, out_dir=tmp_path / name)
        files.append(str(tmp_path / name / "metrics.json"))
    result = run_ensemble(files, str(tmp_path / "labels.parquet"), str(tmp_path / "folds.parquet"), EvalOptions(horizons=[]),
                          str(tmp_path / "ens"))
    pred = pd.read_parquet(tmp_path / "ens" / "predictions.parquet").set_index("patient_id")
    assert pred.loc["C", "risk"] == -1.0 and pred.loc["D", "risk"] == -2.5 and pred.loc["D", "n_blocks"] == 2
    # C censored at 3, D's event at 4: no comparable pair, so C is missing with the reason (never 0 or 0.5).
    assert result["test"]["c_index"] is None and "no comparable pair" in result["test"]["missing"]["c_index"]
    assert json.loads((tmp_path / "ens" / "metrics.json").read_text())["blocks"] == ["block-x", "block-y"]


def test_the_ensemble_centres_each_blocks_risk_on_validation_so_a_missing_modality_shifts_nobody():
    from lego.evaluation.baselines import ensemble

    # block-s sits 10 below block-b (fitted apart, another level) and only P1, P2, V1 have its modality.
    rows = lambda pids, subs, risk: pd.DataFrame({"patient_id": pids, "subset": subs, "risk": risk})  # noqa: E731
    b = rows(["P1", "P2", "P3", "P4", "V1", "V2"], ["test"] * 4 + ["val"] * 2, [3.0, 1.0, 2.0, 0.0, 1.0, 3.0])
    s = rows(["P1", "P2", "V1"], ["test", "test", "val"], [-7.0, -9.0, -8.0])
    out = ensemble({"block-b": b, "block-s": s}).set_index("patient_id")["risk"]
    # each risk minus its validation mean (b: 2, s: -8), then averaged over the blocks a patient has
    assert out["P1"] == pytest.approx((1 + 1) / 2) and out["P2"] == pytest.approx((-1 - 1) / 2)
    assert out["P3"] == pytest.approx(0.0) and out["P4"] == pytest.approx(-2.0)
    assert out["P3"] > out["P2"] and out["P1"] > out["P3"]  # uncentred, P3 and P4 outranked both P1 and P2
    # the centre is read on validation patients only: another test prediction moves nobody else
    s2 = s.assign(risk=[-7.0, -100.0, -8.0])
    assert ensemble({"block-b": b, "block-s": s2}).set_index("patient_id")["risk"]["P1"] == pytest.approx(out["P1"])
    # where every patient has every block the ranking is the plain mean's
    full = ensemble({"block-b": b, "block-s": b.assign(risk=b["risk"] * 2 - 10)}).set_index("patient_id")["risk"]
    plain = b.set_index("patient_id")["risk"] * 1.5 - 5
    assert full.rank().equals(plain.loc[full.index].rank())


def test_the_ensemble_leaves_risks_uncentred_when_a_block_has_no_validation_patient_and_probabilities_alone(caplog):
    from lego.evaluation.baselines import ensemble

    b = pd.DataFrame({"patient_id": ["P1", "V1"], "subset": ["test", "val"], "risk": [1.0, 3.0]})
    s = pd.DataFrame({"patient_id": ["P1"], "subset": ["test"], "risk": [-9.0]})
    with caplog.at_level("WARNING"):
        out = ensemble({"block-b": b, "block-s": s}).set_index("patient_id")["risk"]
    assert out["P1"] == pytest.approx(-4.0) and "block-s have no validation patient" in caplog.text  # all or none
    probs = {m: pd.DataFrame({"patient_id": ["P1", "V1"], "subset": ["test", "val"], "p_a": [p, 0.5], "p_b": [1 - p, 0.5]})
             for m, p in (("block-x", 0.2), ("block-y", 0.6))}
    cls = ensemble(probs).set_index("patient_id")
    assert cls.loc["P1", "p_a"] == pytest.approx(0.4) and cls.loc["P1", "p_b"] == pytest.approx(0.6)


def test_summary_picks_the_best_block_on_validation_and_reports_missing_folds(tmp_path):
    labels, omics, _ = _cohort(120, seed=4)
    folds = make_folds(labels, n_folds=2)
    ids = {f: {s: sorted(folds[(folds.fold == f) & (folds.subset == s)].patient_id) for s in ("train", "val", "test")} for f in (0, 1)}
    files = []
    truth = labels.set_index("patient_id")
    for name, noise in (("block-good", 0.1), ("block-bad", 50.0), ("merge", 0.05)):
        rng = np.random.default_rng(len(name))
        for f in (0, 1):
            pred = {s: pd.DataFrame({"patient_id": ids[f][s], "risk": -truth.loc[ids[f][s], "time"].to_numpy()
                                     + rng.normal(0, noise, len(ids[f][s]))}) for s in ("test", "val")}
            if name == "block-bad" and f == 1:
                pred["test"] = pred["test"].iloc[:0]  # a fold where the block predicts nobody
            out = tmp_path / name / f"fold{f}"
            write_evaluation(pred, labels, ids[f], task="survival", edges=None, opts=EvalOptions(horizons=[]), name=name, fold=f, out_dir=out)
            files.append(str(out / "metrics.json"))
    tables = summarise(files, tmp_path / "summary", n_boot=100)
    m = tables["metrics"].set_index(["model", "metric"])
    assert best_block(tables["metrics"], "c_index") == "block-good"
    assert m.loc[("block-bad", "c_index"), "folds"] == 1 and "fold 1: 0 events among 0 patients" in m.loc[("block-bad", "c_index"), "missing"]
    assert m.loc[("merge", "c_index"), "ci_low"] <= m.loc[("merge", "c_index"), "test_mean"] <= m.loc[("merge", "c_index"), "ci_high"]
    comp = tables["comparisons"]
    merge_rows = comp[comp["model"] == "merge"]
    assert merge_rows.iloc[0]["reference"] == "block-good" and merge_rows.iloc[0]["reference_is"] == "best block (validation)"
    assert set(merge_rows["reference"]) == {"block-good", "block-bad"}
    assert (tmp_path / "summary" / "folds.tsv").exists() and (tmp_path / "summary" / "comparisons.tsv").exists()
    page = (tmp_path / "summary" / "tables.html").read_text()  # the report shows numbers, not downloads
    assert page.count("<table") == 3 and "block-good" in page and f"{m.loc[('merge', 'c_index'), 'test_mean']:.3f}" in page


def test_a_baseline_that_cannot_be_fitted_is_missing_with_the_reason(tmp_path):
    labels, omics, _ = _cohort(40, seed=5)
    folds = make_folds(labels, n_folds=1)
    few = omics[omics["patient_id"].isin(folds[folds["subset"] != "train"]["patient_id"]) | (omics.index < 3)]
    for name, df in (("labels", labels), ("folds", folds), ("omics", few)):
        df.to_parquet(tmp_path / f"{name}.parquet")
    run = BaselineRun(["coxnet"], "omics", {"omics": {"kind": "tabular", "path": str(tmp_path / "omics.parquet")}})
    res = run_baselines(run, labels=str(tmp_path / "labels.parquet"), folds=str(tmp_path / "folds.parquet"), fold=0,
                        task="survival", n_bins=4, opts=EvalOptions(), out_root=str(tmp_path / "out"))["coxnet-omics"]
    assert res["test"]["c_index"] is None and "it needs at least 5" in res["test"]["missing"]["c_index"]
    assert res["baseline"]["chosen"] is None and (tmp_path / "out" / "coxnet-omics" / "fold0" / "predictions.parquet").exists()


def test_summary_copes_with_a_model_that_predicts_nobody(tmp_path):
    labels, _, _ = _cohort(60, seed=6)
    folds = make_folds(labels, n_folds=1)
    ids = {s: sorted(folds[folds.subset == s].patient_id) for s in ("train", "val", "test")}
    files = []
    for name, pred in (("block-x", {s: pd.DataFrame({"patient_id": ids[s], "risk": np.arange(len(ids[s]), dtype=float)})
                                    for s in ("test", "val")}),
                       ("coxnet-x", {s: pd.DataFrame({"patient_id": pd.Series([], dtype=str)}) for s in ("test", "val")})):
        write_evaluation(pred, labels, ids, task="survival", edges=None, opts=EvalOptions(horizons=[]), name=name, fold=0, out_dir=tmp_path / name,
                         not_fitted="too few patients" if name == "coxnet-x" else None)
        files.append(str(tmp_path / name / "metrics.json"))
    m = summarise(files, tmp_path / "summary", n_boot=50)["metrics"].set_index(["model", "metric"])
    assert m.loc[("coxnet-x", "c_index"), "folds"] == 0 and np.isnan(m.loc[("coxnet-x", "c_index"), "ci_low"])
    assert "not fitted: too few patients" in m.loc[("coxnet-x", "c_index"), "missing"]


def test_figures_show_a_model_without_predictions_as_such(tmp_path):
    from lego.evaluation.figures import risk_groups

    rng = np.random.default_rng(7)
    ok = pd.DataFrame({"patient_id": [f"P{i}" for i in range(40)], "time": rng.exponential(10, 40),
                       "event": rng.integers(0, 2, 40), "risk": rng.normal(size=40), "fold": np.repeat([0, 1], 20)})
    empty = pd.DataFrame({"patient_id": [], "time": [], "event": [], "fold": []})
    risk_groups({"block-x": ok, "coxnet-x": empty}, "survival", tmp_path / "km.png")
    assert (tmp_path / "km.png").stat().st_size > 5000


def test_km_panels_show_numbers_at_risk_under_the_time_axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lego.evaluation.figures import _km_panel

    rng = np.random.default_rng(3)
    pred = pd.DataFrame({"time": rng.exponential(20, 60), "event": rng.integers(0, 2, 60), "risk": rng.normal(size=60),
                         "fold": 0})
    fig, ax = plt.subplots()
    _km_panel(ax, pred)
    labels = [t.get_text().split("\n") for t in ax.get_xticklabels()]
    first = next(lab for lab in labels if float(lab[0]) == 0)
    assert [int(first[1]), int(first[2])] == [30, 30]  # everyone is at risk at time 0, split at the median
    counts = [int(lab[1]) + int(lab[2]) for lab in labels]
    assert counts == sorted(counts, reverse=True) and "at risk" in ax.get_xlabel()
    plt.close(fig)
