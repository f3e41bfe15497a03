"""summarise, predict-summary and figures refuse metrics they would miscount (a fold twice, stale or
foreign files, two folds tables, two cohorts) and evaluation settings that are not valid.
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from lego.cli import main
from lego.errors import InputError
from tests.helpers import SMALL, _evaluated, cohort, lego_fails, trained_blocks


@pytest.mark.parametrize("text, phrase", [
    ('{"nboot": 5}', "unknown evaluation setting(s) ['nboot']"),
    ("[1]", "must be a JSON object"),
    ('{"horizons": "12"}', "evaluation setting horizons='12'"),
    ('{"tau_quantile": 5}', "tau_quantile=5"),
    ('{"n_boot": "many"}', "n_boot='many'"),
])
def test_bad_evaluation_options_are_one_line(text, phrase):
    from lego.errors import ConfigError
    from lego.evaluation.scoring import EvalOptions

    with pytest.raises(ConfigError, match=phrase.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        EvalOptions.from_json(text)


def test_summarise_refuses_the_same_fold_twice(tmp_path):
    from lego.evaluation.summary import summarise

    f = tmp_path / "m" / "metrics.json"
    f.parent.mkdir()
    f.write_text(json.dumps({"model": "block-a", "fold": 0, "task": "survival", "test": {}, "val": {}}))
    with pytest.raises(InputError, match="fold 0 is already given"):
        summarise([str(f), str(f)], tmp_path / "out")


def test_summarise_names_a_missing_predictions_file_and_a_negative_seed(tmp_path, capsys):
    d = tmp_path / "m" / "fold0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text('{"model": "x", "fold": 0, "task": "survival", "test": {}, "val": {}}')
    lego_fails(["summarise", "--metrics", str(d / "metrics.json"), "--out-dir", str(tmp_path / "s")], capsys,
               "predictions.parquet: missing beside metrics.json")
    lego_fails(["summarise", "--metrics", str(d / "metrics.json"), "--out-dir", str(tmp_path / "s"),
                "--evaluation", '{"seed": -1}'], capsys, "seed=-1")


def test_summaries_refuse_stale_mixed_or_foreign_metrics(tmp_path, capsys):
    p, dirs, metrics = _evaluated(tmp_path)
    out = ["--out-dir", str(tmp_path / "s")]
    lego_fails(["summarise", "--metrics", *metrics, *out, "--evaluation", '{"n_boot": 3}'], capsys,
               "evaluation setting n_boot=3 is outside [10, inf)")
    stale = tmp_path / "stale"
    stale.mkdir()
    shutil.copy(metrics[0], stale / "metrics.json")
    shutil.copy(tmp_path / "ev" / "alpha" / "predictions.parquet", stale / "predictions.parquet")
    lego_fails(["summarise", "--metrics", str(stale / "metrics.json"), metrics[1], *out], capsys,
               "predictions.parquet: does not match metrics.json beside it")
    other = json.loads((tmp_path / "ev" / "alpha" / "metrics.json").read_text()) | {"task": "classification"}
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "metrics.json").write_text(json.dumps(other))
    lego_fails(["summarise", "--metrics", metrics[0], str(tmp_path / "cls" / "metrics.json"), *out], capsys,
               "task 'classification' where", "has 'survival'")
    assert main(["predict", "--model-dir", dirs[0], "--data", f"zeta={p['zeta']}", "--out-dir", str(tmp_path / "pr")]) == 0
    lego_fails(["summarise", "--metrics", str(tmp_path / "pr" / "metrics.json"), metrics[1], *out], capsys,
               "not a metrics.json written by `lego evaluate`", "lego predict-summary")
    assert main(["summarise", "--metrics", *metrics, *out, "--evaluation", '{"n_boot": 20}']) == 0


def test_summarise_refuses_one_fold_from_two_folds_tables(tmp_path, capsys):
    _, _, metrics = _evaluated(tmp_path)
    moved = json.loads((tmp_path / "ev" / "alpha" / "metrics.json").read_text()) | {"fold_digest": "0" * 16}
    (tmp_path / "ev" / "alpha" / "metrics.json").write_text(json.dumps(moved))
    lego_fails(["summarise", "--metrics", *metrics, "--out-dir", str(tmp_path / "s")], capsys,
               "fold 0 has other test/validation patients than in")


def test_figures_check_their_metrics_as_summarise_does(tmp_path, capsys):
    p, dirs, metrics = _evaluated(tmp_path)
    assert main(["summarise", "--metrics", *metrics, "--out-dir", str(tmp_path / "s"), "--evaluation", '{"n_boot": 20}']) == 0
    lego_fails(["figures", "--summary-dir", str(tmp_path / "s"), "--metrics", metrics[0], metrics[0], "--out-dir",
                str(tmp_path / "f")], capsys, "is already given by")
    assert main(["figures", "--summary-dir", str(tmp_path / "s"), "--metrics", *metrics, "--out-dir",
                 str(tmp_path / "f")]) == 0


def test_predict_summary_refuses_what_it_would_miscount(tmp_path, capsys):
    import json

    good = {"model": "m", "fold": 0, "labelled": 9, "external": {"n": 9, "c_index": 0.7, "uno_c": None}}
    cases = {"dup": good, "none": {**good, "fold": 1, "external": None}, "nomodel": {**good, "fold": 2, "model": None},
             "text": {**good, "fold": 3, "external": {"c_index": "0.7"}}}
    for name, body in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
    run = lambda *f: ["predict-summary", "--metrics", *[str(tmp_path / f"{x}.json") for x in f], "--out", str(tmp_path / "s.tsv")]  # noqa: E731
    lego_fails(run("dup", "dup"), capsys, "fold 0 is already given")
    lego_fails(run("none"), capsys, "needs model, fold and external")
    lego_fails(run("nomodel"), capsys, "needs model, fold and external")
    lego_fails(run("text"), capsys, "external c_index = '0.7' is not a number")
    assert main(run("dup")) == 0 and pd.read_table(tmp_path / "s.tsv").set_index("metric").loc["c_index", "folds"] == 1


def test_predict_summary_refuses_one_model_applied_to_two_cohorts(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    p, dirs = trained_blocks(tmp_path / "train", {**SMALL, "epochs": 1}, names=("zeta",))
    runs = []
    for k, (n, seed) in enumerate(((40, 5), (30, 6))):
        (tmp_path / f"ext{k}").mkdir()
        ext = cohort(tmp_path / f"ext{k}", n=n, seed=seed, prefix="Q" if k == 0 else "R")
        out = tmp_path / f"pr{k}"
        assert main(["predict", "--model-dir", dirs[0], "--name", "block-zeta", "--data", f"zeta={ext['zeta']}",
                     "--labels", str(ext["labels"]), "--out-dir", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        metrics["fold"] = k  # as if fold k's model had been applied
        (out / "metrics.json").write_text(json.dumps(metrics))
        runs.append(str(out / "metrics.json"))
    lego_fails(["predict-summary", "--metrics", *runs, "--out", str(tmp_path / "ps.tsv")], capsys,
               "scored other labelled patients than in")


def test_predict_summary_accepts_metrics_from_before_the_digest(tmp_path):
    from lego.evaluation.summary import external_summary

    base = {"model": "merge-tuned", "task": "survival", "labelled": 50, "external": {"n": 50, "c_index": 0.6}}
    (tmp_path / "a.json").write_text(json.dumps({**base, "fold": 0}))
    (tmp_path / "b.json").write_text(json.dumps({**base, "fold": 1, "labelled_digest": "0123456789abcdef"}))
    table = external_summary([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert table.loc[table["metric"] == "c_index", "folds"].item() == 2
