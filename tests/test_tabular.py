import numpy as np
import pandas as pd
import pytest

from lego.data.labels import ingest_labels
from lego.errors import InputError
from lego.tabular.modality import prepare_modality
from lego.tabular.transforms import TabularTransform
from tests.conftest import shared_path

MCAT_META = "^(case_id|slide_id|site|is_female|oncotree_code|age|survival_months|censorship|train)$"


def write(tmp_path, name, rows, columns):
    path = tmp_path / name
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",")
    return path


# ----------------------------------------------------------------- real TCGA cohorts


def test_ucec_real_cohort():
    path = shared_path("data", "tcga", "tcga_ucec_all_clean.csv.gz")
    labels = ingest_labels(path)
    assert len(labels) == 480 and labels["event"].sum() == 75
    assert labels["patient_id"].is_unique
    mutation = prepare_modality(path, "mutation", exclude=[MCAT_META, "_(cnv|rnaseq)$"])
    cnv = prepare_modality(path, "cnv", include="_cnv$")
    assert mutation.shape == (480, 1 + 8137) and "Y_RNA" in mutation.columns  # unsuffixed, one with "_"
    assert cnv.shape == (480, 1 + 935)
    assert set(np.unique(mutation.drop(columns="patient_id").to_numpy())) <= {0.0, 1.0}
    assert cnv.drop(columns="patient_id").abs().max().max() <= 2
    clinical = prepare_modality(path, "clinical", columns=["age", "is_female"])
    assert clinical["age"].isna().sum() == 2  # kept as missing; imputed inside each fold


def test_blca_real_cohort():
    path = shared_path("data", "tcga", "tcga_blca_all_clean.csv.gz")
    labels = ingest_labels(path)
    assert len(labels) == 373 and labels["event"].sum() == 169
    rna = prepare_modality(path, "rna", include="_rnaseq$")
    cnv = prepare_modality(path, "cnv", include="_cnv$")
    assert rna.shape == (373, 1 + 2814) and cnv.shape == (373, 1 + 248)
    assert "Unnamed: 0" not in rna.columns
    assert rna.drop(columns="patient_id").max().max() > 14000  # raw values kept; clipped per fold
    # Several slides per patient collapse to one row, and the outcome is per patient.
    raw = pd.read_csv(path, usecols=["case_id"])
    assert raw["case_id"].duplicated().any()


# ----------------------------------------------------------------- labels: bad input


def test_identical_duplicate_rows_collapse(tmp_path):
    p = write(tmp_path, "l.csv", [["P1", 10.0, 0], ["P1", 10.0, 0], ["P2", 5.0, 1]], ["case_id", "survival_months", "censorship"])
    labels = ingest_labels(p)
    assert labels.to_dict("list") == {"patient_id": ["P1", "P2"], "time": [10.0, 5.0], "event": [1, 0]}


def test_conflicting_duplicate_rows(tmp_path):
    p = write(tmp_path, "l.csv", [["P1", 10.0, 0], ["P1", 12.0, 0]], ["case_id", "survival_months", "censorship"])
    with pytest.raises(InputError, match=r"patient P1 has 2 rows with different outcomes \(lines 2, 3\)"):
        ingest_labels(p)


@pytest.mark.parametrize(
    "time, status, message",
    [
        (-1.0, 0, "missing, negative or infinite for patient P2"),
        (None, 0, "missing, negative or infinite for patient P2"),
        (float("inf"), 0, "missing, negative or infinite for patient P2"),
        ("ten", 0, "non-numeric value 'ten' for patient P2"),
        (3.0, 2, "must be 0 or 1 but is 2 for patient P2"),
    ],
)
def test_bad_outcomes_name_patient_and_line(tmp_path, time, status, message):
    p = write(tmp_path, "l.csv", [["P1", 1.0, 0], ["P2", time, status]], ["case_id", "survival_months", "censorship"])
    with pytest.raises(InputError, match=message) as info:
        ingest_labels(p)
    assert "line 3" in str(info.value) and "l.csv" in str(info.value)


def test_event_column_and_classification(tmp_path):
    p = write(tmp_path, "l.tsv", [["P1", 1.0, 1, "A"], ["P2", 2.0, 0, "B"]], ["pid", "t", "dead", "grade"])
    surv = ingest_labels(p, id_column="pid", time_column="t", censorship_column=None, event_column="dead")
    assert surv["event"].tolist() == [1, 0]
    cls = ingest_labels(p, task="classification", id_column="pid", label_column="grade")
    assert cls["label"].tolist() == ["A", "B"]
    with pytest.raises(InputError, match="no class label column 'subtype'"):
        ingest_labels(p, task="classification", id_column="pid", label_column="subtype")


# ----------------------------------------------------------------- modalities: bad input


def test_non_numeric_feature_names_column_patient_and_line(tmp_path):
    p = write(tmp_path, "m.csv", [["P1", 1, 0.5], ["P2", 0, "high"]], ["case_id", "TP53", "ESR1_rnaseq"])
    with pytest.raises(InputError, match=r"column 'ESR1_rnaseq': non-numeric value 'high' for patient P2 \(line 3\)"):
        prepare_modality(p, "rna", include="_rnaseq$")


def test_categorical_columns_and_parquet_and_empty_selection(tmp_path):
    p = tmp_path / "c.parquet"
    pd.DataFrame({"case_id": ["P1", "P2"], "age": [50, None], "stage": ["II", "IV"]}).to_parquet(p)
    df = prepare_modality(p, "clinical", columns=["age"], categorical=["stage"])
    assert df["stage"].tolist() == ["II", "IV"] and df["age"].dtype == np.float32
    with pytest.raises(InputError, match="selects no column"):
        prepare_modality(p, "rna", include="_rnaseq$")


def test_modality_duplicate_rows(tmp_path):
    p = write(tmp_path, "m.csv", [["P1", 1], ["P1", 1], ["P2", 0], ["P2", 1]], ["case_id", "TP53"])
    with pytest.raises(InputError, match="patient P2 has rows with different values"):
        prepare_modality(p, "mutation")


def test_rows_without_any_value_mean_the_modality_is_missing(tmp_path):
    p = write(tmp_path, "m.csv", [["P1", 1.0, 2.0], ["P2", None, None]], ["case_id", "A_rnaseq", "B_rnaseq"])
    assert prepare_modality(p, "rna")["patient_id"].tolist() == ["P1"]


# ----------------------------------------------------------------- per-fold transforms


def test_transform_is_fitted_on_training_patients_only():
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"patient_id": [f"T{i}" for i in range(100)], "g_rnaseq": rng.normal(size=100), "flat": 1.0})
    test = pd.DataFrame({"patient_id": ["X1", "X2"], "g_rnaseq": [16000.0, np.nan], "flat": [5.0, 1.0]})
    tf = TabularTransform().fit(train)
    before = dict(tf.state)
    out = tf.transform(test)
    assert tf.state == before, "transforming test data must not refit"
    assert tf.feature_names == ["g_rnaseq"], "constant-on-train feature dropped"
    g = train["g_rnaseq"]
    lo, hi = np.quantile(g, 0.001), np.quantile(g, 0.999)
    clipped = g.clip(lo, hi)
    z_hi = (hi - clipped.mean()) / clipped.std(ddof=0)
    assert out[0, 0] == pytest.approx(z_hi, rel=1e-4), "extreme value clipped at the training quantile"
    median = (np.median(clipped) - clipped.mean()) / clipped.std(ddof=0)
    assert out[1, 0] == pytest.approx(median, abs=1e-3), "missing value imputed with the training median"
    z = tf.transform(train)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_transform_categories_roundtrip_and_feature_mismatch():
    train = pd.DataFrame({"patient_id": ["a", "b", "c"], "age": [40.0, 50.0, 60.0], "stage": ["I", "II", "I"]})
    tf = TabularTransform(categorical=["stage"], max_features=1).fit(train)
    new = pd.DataFrame({"patient_id": ["d"], "age": [45.0], "stage": ["IV"]})  # unseen category
    out = tf.transform(new)
    assert out.shape == (1, 3) and out[0, 1:].tolist() == [0.0, 0.0]
    again = TabularTransform.from_dict(tf.to_dict())
    np.testing.assert_array_equal(again.transform(new), out)
    with pytest.raises(InputError, match="different feature set"):
        tf.transform(new.drop(columns="age"))


def test_a_few_huge_outliers_do_not_flatten_a_feature():
    """Two values of 15000 among 150 (as in BLCA's RNA): the 0.999 quantile is itself an outlier,
    so only the robust (MAD) bound keeps the feature's real variation after standardising."""
    rng = np.random.default_rng(3)
    g = rng.normal(size=150)
    raw = g.copy()
    raw[[10, 99]] = [15000.0, 12000.0]
    train = pd.DataFrame({"patient_id": [f"T{i}" for i in range(150)], "g": raw})
    robust = TabularTransform().fit_transform(train)[:, 0]
    quantile_only = TabularTransform(clip_mad=None).fit_transform(train)[:, 0]
    normal = np.setdiff1d(np.arange(150), [10, 99])
    assert np.corrcoef(robust[normal], g[normal])[0, 1] > 0.99
    assert robust[normal].std() > 0.8, "the normal patients keep about unit spread"
    assert quantile_only[normal].std() < 0.2, "quantile clipping alone leaves the feature flat (why clip_mad exists)"
    assert robust.max() <= robust[normal].max() + 6, "outliers end at the robust bound"


def _naive_cox_score(x, time, event):
    u = info = 0.0
    for i in np.flatnonzero(event):
        risk = x[time >= time[i]]
        u += x[i] - risk.mean()
        info += risk.var()
    return u * u / info


def test_cox_score_matches_the_textbook_formula_with_ties():
    from lego.tabular.feature_selection import cox_score_z2

    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 3))
    time = rng.integers(1, 15, 60).astype(float)  # many ties
    event = rng.random(60) < 0.6
    got = cox_score_z2(x, time, event)
    want = [_naive_cox_score(x[:, j], time, event) for j in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-8)


@pytest.mark.parametrize("task", ["survival", "classification"])
def test_select_k_keeps_the_outcome_features_from_training_patients_only(task):
    rng = np.random.default_rng(5)
    n = 200
    signal = rng.normal(size=(n, 2))
    x = np.column_stack([rng.normal(size=(n, 10)), signal])
    df = pd.DataFrame(x, columns=[f"noise{i}" for i in range(10)] + ["sig0", "sig1"])
    df.insert(0, "patient_id", [f"P{i}" for i in range(n)])
    eta = signal.sum(1)
    if task == "survival":
        target = {"task": task, "time": rng.exponential(np.exp(-1.5 * eta)), "event": rng.random(n) < 0.8}
    else:
        target = {"task": task, "label": (eta > 0).astype(int)}
    tf = TabularTransform(select_k=2).fit(df, target)
    assert tf.feature_names == ["sig0", "sig1"]
    assert len(tf.state["selection_score"]) == 2
    assert tf.transform(df).shape == (n, 2)
    with pytest.raises(InputError, match="select_k needs"):
        TabularTransform(select_k=2).fit(df)


def test_selection_in_a_fold_ignores_validation_and_test_outcomes():
    from lego.data.fold_data import fit_modality, make_targets

    rng = np.random.default_rng(6)
    n = 300
    ids = [f"P{i:03d}" for i in range(n)]
    x = rng.normal(size=(n, 12))
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(12)])
    table.insert(0, "patient_id", ids)
    time = rng.exponential(np.exp(-x[:, 0]))
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": 1})
    train = ids[:150]
    a = fit_modality("rna", "tabular", table, train, preprocess={"select_k": 3},
                     targets=make_targets(labels, train, "survival"))
    shuffled = labels.copy()
    shuffled.loc[150:, "time"] = rng.permutation(shuffled.loc[150:, "time"].to_numpy()) * 7  # other patients' outcomes
    b = fit_modality("rna", "tabular", table, train, preprocess={"select_k": 3},
                     targets=make_targets(shuffled, train, "survival"))
    assert a.state["transform"]["state"]["numeric"] == b.state["transform"]["state"]["numeric"]
    assert "f0" in a.state["transform"]["state"]["numeric"]


def test_a_semicolon_table_names_the_delimiter(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("case_id;survival_months;censorship\nP1;3;0\n")
    with pytest.raises(InputError, match="labels.csv: read as one column .* semicolon-delimited"):
        ingest_labels(p)


def test_an_omics_row_without_an_id_is_refused_with_its_line(tmp_path):
    p = tmp_path / "rna.csv"
    p.write_text("case_id,g1_rnaseq\nP1,1\n,2\nP3,3\n")
    with pytest.raises(InputError, match=r"rna.csv: modality 'rna': 1 row\(s\) without a patient ID .*line 3"):
        prepare_modality(p, "rna")


def test_an_all_constant_table_is_one_clear_error():
    df = pd.DataFrame({"patient_id": list("abcd"), "g": [1.0] * 4, "h": [2.0] * 4})
    with pytest.raises(InputError, match="no feature varies among the 4 training patients"):
        TabularTransform().fit(df)


def test_a_saved_transform_encodes_categories_in_the_order_it_was_trained_with(tmp_path):
    """A model's JSON is written with sorted keys: the category columns came back alphabetical and a
    model trained with them in the listed order was evaluated on permuted one-hot columns."""
    import json

    from lego.io import read_json, write_json

    df = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "z_drug": ["x", "y", "x", "y"],
                       "a_sex": ["f", "f", "m", "m"], "age": [50.0, 60.0, 70.0, 80.0]})
    tf = TabularTransform(categorical=["z_drug", "a_sex"]).fit(df)
    before = tf.transform(df)
    write_json(tf.to_dict(), tmp_path / "t.json")
    saved = read_json(tmp_path / "t.json")
    assert list(saved["state"]["categories"]) == ["a_sex", "z_drug"]  # what sorted keys do to the dict
    after = TabularTransform.from_dict(json.loads(json.dumps(saved))).transform(df)
    np.testing.assert_array_equal(before, after)
    assert TabularTransform.from_dict(saved).feature_names == tf.feature_names
