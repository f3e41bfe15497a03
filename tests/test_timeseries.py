"""The ``timeseries`` modality kind: observation window, landmark cohort, per-fold scaling, the bag
of time steps, the classical models' summaries, the recurrent encoder, and a run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lego.data.fold_data import Targets, fit_modality, load_modality_table
from lego.data.labels import ingest_labels
from lego.errors import ConfigError, InputError
from lego.evaluation.baselines import design_matrices, fit_baseline
from lego.modality_kinds import modality_kind
from lego.modality_kinds.timeseries import TIME_FEATURES, prepare_series
from lego.models.encoders import build_encoder
from tests.helpers import lego_fails
from tests.series_cohort import series_cohort, write_series_cohort
from tests.workflow_runs import snakemake

AIDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "longitudinal" / "aids.csv.gz"
LANDMARK = 6.0


def _labels(path: Path, landmark: float | None = LANDMARK) -> pd.DataFrame:
    return ingest_labels(path, id_column="pid", time_column="time2", censorship_column=None, event_column="event",
                         intervals=True, landmark=landmark)


def _prepared(path: Path, out: Path, columns=("num_marker", "num_other")) -> Path:
    df = prepare_series(path, "series", window_to=LANDMARK, id_column="pid", time_column="time", columns=list(columns),
                        outcomes=["time2", "event"])
    df.to_parquet(out)
    return out


def test_labels_in_counting_process_format_take_each_patients_last_interval(tmp_path):
    src = write_series_cohort(tmp_path / "c.csv")
    raw = pd.read_csv(src, dtype={"pid": str})
    labels = _labels(src, landmark=None)
    last = raw.sort_values("time2").groupby("pid").tail(1).set_index("pid")
    assert len(labels) == raw["pid"].nunique()
    for row in labels.itertuples():
        assert row.time == last.at[row.patient_id, "time2"] and row.event == last.at[row.patient_id, "event"]


def test_a_landmark_keeps_the_patients_at_risk_after_it_and_counts_time_from_it(tmp_path):
    src = write_series_cohort(tmp_path / "c.csv")
    full, at = _labels(src, landmark=None).set_index("patient_id"), _labels(src).set_index("patient_id")
    assert set(at.index) == set(full.index[full["time"] > LANDMARK]) and len(at) < len(full)
    assert np.allclose(at["time"], full.loc[at.index, "time"] - LANDMARK)
    assert (at["event"] == full.loc[at.index, "event"]).all()


def test_a_measurement_after_the_landmark_changes_nothing(tmp_path):
    """Planted post-landmark values (extreme, and correlated with the outcome) leave the prepared
    series, every fitted input and the Coxnet predictions exactly as they were."""
    src = write_series_cohort(tmp_path / "c.csv", n=150)
    raw = pd.read_csv(src, dtype={"pid": str})
    planted = raw.copy()
    late = planted["time"] > LANDMARK
    planted.loc[late, "num_marker"] = 1000.0 * planted.loc[late, "event"] - 500.0  # the answer, after the landmark
    extra = planted.groupby("pid").tail(1).assign(time=LANDMARK + 0.5, num_marker=1e6)
    planted = pd.concat([planted, extra], ignore_index=True)
    planted.to_csv(tmp_path / "planted.csv", index=False)
    assert late.any()

    outs = []
    for name in ("c.csv", "planted.csv"):
        prepared = _prepared(tmp_path / name, tmp_path / f"{name}.parquet")
        labels = _labels(tmp_path / name)
        ids = sorted(labels["patient_id"])
        split = {"train": ids[:90], "val": ids[90:110], "test": ids[110:]}
        targets = Targets("survival", {p: (0, int(e), t) for p, t, e in labels[["patient_id", "time", "event"]].itertuples(index=False)},
                          bins=[0.0, 5.0, 10.0, float("inf")])
        spec = {"series": {"kind": "timeseries", "path": str(prepared)}}
        data = design_matrices(spec, labels, split, targets)
        preds, _ = fit_baseline("coxnet", data, labels, targets)
        outs.append((pd.read_parquet(prepared), data, preds["test"]))
    (a, data_a, pred_a), (b, data_b, pred_b) = outs
    pd.testing.assert_frame_equal(a, b)
    for subset in data_a:
        assert data_a[subset][0] == data_b[subset][0] and np.array_equal(data_a[subset][1], data_b[subset][1])
    pd.testing.assert_frame_equal(pred_a, pred_b)


@pytest.mark.skipif(not AIDS.is_file(), reason="../shared/data/longitudinal/aids.csv.gz is absent (real cohort)")
def test_the_aids_cd4_series_keeps_months_0_to_6_and_the_cohort_is_the_patients_at_risk_at_6(tmp_path):
    df = prepare_series(AIDS, "cd4", window_to=LANDMARK, id_column="pid", time_column="time", columns=["num_CD4"],
                        outcomes=["time2", "event"])
    assert set(df["time"]) == {-6.0, -4.0, 0.0}  # months 0, 2, 6 counted from the landmark
    labels = _labels(AIDS)
    assert len(labels) == 403 and labels["time"].min() > 0 and int(labels["event"].sum()) == 126


def test_each_step_carries_the_last_measurement_forward_and_marks_what_was_measured(tmp_path):
    table = pd.DataFrame({"patient_id": ["a", "a", "a", "b", "b"], "time": [-6.0, -4.0, 0.0, -6.0, 0.0],
                          "x": [1.0, np.nan, 3.0, 2.0, 4.0], "y": [np.nan, 5.0, np.nan, 1.0, 3.0]}).astype({"x": "float32", "y": "float32"})
    mod = fit_modality("s", "timeseries", table, ["a", "b"], max_patches=100)
    mean_x, std_x = np.mean([1, 3, 2, 4]), np.std([1, 3, 2, 4])
    bag = mod.per_patient["a"].numpy()
    assert bag.shape == (3, 2 * 2 + TIME_FEATURES) and mod.dim == bag.shape[1]
    z1 = (1 - mean_x) / std_x
    assert np.allclose(bag[:, 0], [z1, z1, (3 - mean_x) / std_x], atol=1e-6)  # x carried at -4
    assert bag[0, 1] == 0.0  # y before its first measurement: the training mean
    assert np.array_equal(bag[:, 2:4], [[1, 0], [0, 1], [1, 0]])  # what was measured at each step
    assert np.allclose(bag[:, 4], [-1.0, -4 / 6, 0.0])  # tau: time over the longest look-back


def test_series_scaling_is_fitted_on_training_patients_only():
    table = series_table()
    train = ["P0", "P1"]
    changed = table.copy()
    changed.loc[changed["patient_id"] == "P2", "x"] = 1e4  # a test patient's values
    a = fit_modality("s", "timeseries", table, train, max_patches=100)
    b = fit_modality("s", "timeseries", changed, train, max_patches=100)
    assert a.state == b.state
    assert torch.equal(a.per_patient["P0"], b.per_patient["P0"])


def series_table() -> pd.DataFrame:
    rows = [(f"P{i}", t, float(i + t)) for i in range(3) for t in (-4.0, -2.0, 0.0)]
    return pd.DataFrame(rows, columns=["patient_id", "time", "x"]).astype({"x": "float32"})


def test_classical_models_read_last_mean_slope_and_count_per_variable():
    table = pd.DataFrame({"patient_id": ["a"] * 3 + ["b"] * 2, "time": [-4.0, -2.0, 0.0, -4.0, 0.0],
                          "x": [1.0, 2.0, 3.0, 5.0, 5.0]}).astype({"x": "float32"})
    mod = fit_modality("s", "timeseries", table, ["a", "b"], max_patches=100)
    rows = modality_kind("timeseries").rows(mod)
    mean, std = np.mean([1, 2, 3, 5, 5]), np.std([1, 2, 3, 5, 5])
    last, avg, slope, log_n = rows["a"]
    assert np.isclose(last, (3 - mean) / std) and np.isclose(avg, (2 - mean) / std)
    assert np.isclose(slope, 2 / std, atol=1e-5)  # one unit of x per 2 months: 2 units over the scale (4 months)
    assert np.isclose(log_n, np.log(4))
    assert np.isclose(rows["b"][2], 0.0, atol=1e-6)


def test_the_gru_encoder_gives_a_patient_the_same_token_however_the_batch_is_padded():
    torch.manual_seed(0)
    enc = build_encoder("gru", 3, width=8).eval()
    x = torch.randn(1, 4, 3)
    short, _ = enc(x, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([x, torch.randn(1, 3, 3)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    long, present = enc(padded, mask)
    assert torch.allclose(short, long, atol=1e-6) and present.all()


def test_a_series_table_with_a_repeated_patient_and_time_is_refused(tmp_path):
    table = series_table()
    pd.concat([table, table.iloc[:1]]).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(InputError, match="more than one row"):
        load_modality_table("timeseries", tmp_path / "s.parquet")


def _config(tmp_path: Path, **labels) -> dict:
    from lego.config import validate_config

    config = {"cohort": {"name": "c", "labels": {"path": "l.csv", **labels}},
              "modalities": {"s": {"kind": "timeseries", "path": "s.csv", "window_to": 6}}}
    return validate_config(config)


@pytest.mark.parametrize("labels, extra, phrase", [
    ({}, {}, "cohort.labels.landmark"),
    ({"landmark": 3}, {}, "is after the landmark 3"),
    ({"landmark": 6}, {"preprocess": {"min_variance": 0.1}}, "modalities.s.preprocess"),
    ({"landmark": 6}, {"categorical": ["x"]}, "modalities.s.categorical"),
    ({"landmark": 6}, {"window_to": None}, "modalities.s.window_to"),
])
def test_a_series_config_that_could_leak_or_be_ignored_is_refused(tmp_path, labels, extra, phrase):
    from lego.config import validate_config

    config = {"cohort": {"name": "c", "labels": {"path": "l.csv", **labels}},
              "modalities": {"s": {"kind": "timeseries", "path": "s.csv", "window_to": 6, **extra}}}
    with pytest.raises(ConfigError, match=phrase.replace(".", r"\.")):
        validate_config(config)


@pytest.mark.parametrize("edit, flags, phrase", [
    (lambda d: d.assign(time=d["time"].astype(object).where(d.index != 3, "soon")), [], "line 5"),
    (lambda d: d, ["--window-from", "9"], "swap them"),
    (lambda d: d, ["--categorical", "fac_arm"], "tabular modality"),
    (lambda d: d, ["--columns", "fac_arm"], "non-numeric value"),
    (lambda d: d, ["--time-column", "visit"], "no time column 'visit'"),
    (lambda d: d, ["--columns", "num_marker", "time"], "remove it from columns"),
])
def test_bad_series_input_is_one_line_naming_the_row_and_the_fix(tmp_path, capsys, edit, flags, phrase):
    edit(series_cohort(20)).to_csv(tmp_path / "c.csv", index=False)
    args = ["prepare-timeseries", "--table", str(tmp_path / "c.csv"), "--modality", "s", "--id-column", "pid",
            "--window-to", "6", "--outcome-columns", "time2", "event", "--out", str(tmp_path / "s.parquet")]
    if "--columns" not in flags:
        args += ["--columns", "num_marker"]
    lego_fails(args + flags, capsys, phrase)


def test_a_series_cohort_runs_end_to_end_with_blocks_merge_fuse_and_baselines(tmp_path):
    """The kind reaches the workflow, schema and CLI through the registry alone: a landmark cohort
    of a baseline table and a series gets blocks, merge, fuse, the ensemble, Coxnet on each
    modality and on both, and the trained baselines that take a bag and a table."""
    src = write_series_cohort(tmp_path / "cohort.csv", n=80, seed=3)
    config = {
        "results_dir": "results",
        "cohort": {"name": "ts", "labels": {"path": str(src), "id_column": "pid", "time_column": "time2",
                                            "event_column": "event", "intervals": True, "landmark": LANDMARK}},
        "modalities": {
            "arm": {"kind": "tabular", "path": str(src), "id_column": "pid", "include": "^fac_", "categorical": ["fac_arm"]},
            "marker": {"kind": "timeseries", "path": str(src), "id_column": "pid", "columns": ["num_marker", "num_other"],
                       "window_to": LANDMARK, "block": {"grid": [{"encoder": "abmil"}, {"encoder": "gru"}]}},
        },
        "folds": {"method": "kfold", "n_folds": 2},
        "model": {"train": {"epochs": 3}, "block": {"latent_rows": 4, "latent_dim": 16, "encoder_width": 16}},
        "evaluation": {"baseline_inputs": ["each", "early"], "baselines": ["coxnet", "ensemble", "abmil", "late-fusion"],
                       "heatmaps": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2")
    metrics = pd.read_csv(tmp_path / "results" / "ts" / "summary" / "metrics.tsv", sep="\t")
    models = set(metrics["model"])
    assert {"block-arm", "block-marker", "merge", "fuse", "lego", "ensemble", "coxnet-arm", "coxnet-marker",
            "coxnet-early", "abmil-marker", "late-fusion"} <= models, models
    assert metrics.groupby("model")["n_folds"].max().min() == 2 if "n_folds" in metrics else True


@pytest.mark.parametrize("setting", [{"landmark": 6.0}, {"intervals": True}])
def test_survival_only_label_settings_are_refused_for_classification(tmp_path, setting):
    src = write_series_cohort(tmp_path / "c.csv")
    with pytest.raises(InputError, match="survival setting"):
        ingest_labels(src, task="classification", id_column="pid", label_column="fac_arm", **setting)
