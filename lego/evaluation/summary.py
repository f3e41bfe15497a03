"""The run's tables: every model x metric over folds, per-fold values, and paired comparisons.

* ``metrics.tsv``: per model and metric the test mean and std over the folds where the metric
  exists, the validation mean and std, how many folds had it, the missing folds with reasons, and
  for the headline metric (Harrell's C / AUC) a 95 % fold-stratified bootstrap CI.
* ``folds.tsv``: one row per model, fold, subset and metric (value or reason).
* ``comparisons.tsv``: LegoMerge, LegoFuse and the late-fusion ensemble against every single block
  (the one with the best *validation* score -- never test -- is marked and listed first), and
  merge/fuse against the ensemble; each a paired bootstrap of the difference on the test patients
  both models predict (a block only predicts patients with its modality, so the blocks' own-set
  means are not comparable with each other or with the merge).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lego.errors import InputError
from lego.evaluation.bootstrap import mean_ci, paired_difference
from lego.evaluation.metrics import CLASSIFICATION_METRICS, HEADLINE, LOWER_IS_BETTER, SURVIVAL_METRICS, headline
from lego.evaluation.names import CHOSEN, EARLY, ENSEMBLE, PREDICTIONS_FILE, lego_models, model_kind
from lego.io import read_json, write_tsv
from lego.models.model_kinds import FUSE, kind_of
from lego.settings import default

log = logging.getLogger(__name__)


def _metric_names(rows: list[dict], task: str) -> list[str]:
    if task != "survival":
        return list(CLASSIFICATION_METRICS)
    horizons = sorted({k for r in rows for k in r["test"] if k.startswith("auc_")}, key=lambda k: float(k[4:]))
    # The per-horizon AUCs go just before their mean, in SURVIVAL_METRICS' order otherwise.
    at = SURVIVAL_METRICS.index("mean_auc")
    return [*SURVIVAL_METRICS[:at], *horizons, *SURVIVAL_METRICS[at:]]


def folds_table(rows: list[dict], task: str) -> pd.DataFrame:
    names = _metric_names(rows, task)
    out = []
    for r in rows:
        for subset in ("test", "val"):
            res = r[subset]
            for m in names:
                out.append({"model": r["model"], "fold": r["fold"], "subset": subset, "metric": m, "value": res.get(m),
                            "n": res.get("n", 0), "missing": res.get("missing", {}).get(m, "" if m in res else "not computed")})
    df = pd.DataFrame(out)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def _test_frames(preds: dict[tuple[str, int], pd.DataFrame], model: str, folds: list[int]) -> list[pd.DataFrame]:
    return [preds.get((model, f), pd.DataFrame()) for f in folds]


def _paired_frames(preds, a: str, b: str, folds: list[int], task: str) -> list[pd.DataFrame]:
    """Per fold: test patients both models predict, labels once, predictions prefixed a_/b_."""
    out = []
    label_cols = ["time", "event"] if task == "survival" else ["label"]
    for f in folds:
        pa, pb = preds.get((a, f)), preds.get((b, f))
        if pa is None or pb is None:
            out.append(pd.DataFrame())
            continue
        keep = lambda p: [c for c in p.columns if c == "risk" or c.startswith("p_")]  # noqa: E731
        left = pa[["patient_id", *label_cols, *keep(pa)]].rename(columns={c: f"a_{c}" for c in keep(pa)})
        right = pb[["patient_id", *keep(pb)]].rename(columns={c: f"b_{c}" for c in keep(pb)})
        out.append(left.merge(right, on="patient_id").dropna(subset=label_cols))
    return out


def summarise(metric_files: list[str], out_dir: str | Path, n_boot: int = default("evaluation.n_boot"),
              level: float = default("evaluation.ci"), seed: int = 0) -> dict[str, pd.DataFrame]:
    """Write metrics.tsv, folds.tsv and comparisons.tsv under ``out_dir``; return them."""
    rows, preds = load_evaluations(metric_files)
    task = rows[0]["task"]
    key = HEADLINE[task]
    folds = sorted({r["fold"] for r in rows})
    long = folds_table(rows, task)
    models = list(dict.fromkeys(r["model"] for r in rows))

    table = []
    for model in models:
        mine = long[long["model"] == model]
        for metric in _metric_names(rows, task):
            t = mine[(mine["metric"] == metric) & (mine["subset"] == "test")]
            v = mine[(mine["metric"] == metric) & (mine["subset"] == "val")]
            missing = "; ".join(f"fold {fo}: {why}" for fo, val, why in zip(t["fold"], t["value"], t["missing"]) if np.isnan(val))
            row = {"model": model, "kind": model_kind(model), "metric": metric, "test_mean": t["value"].mean(),
                   "test_std": t["value"].std(), "ci_low": np.nan, "ci_high": np.nan, "val_mean": v["value"].mean(),
                   "val_std": v["value"].std(), "folds": int(t["value"].notna().sum()), "n_test": t["n"].mean(),
                   "missing": missing}
            if metric == key:
                row["ci_low"], row["ci_high"] = mean_ci(_test_frames(preds, model, folds), task, n_boot, level, seed)
            table.append(row)
    metrics = pd.DataFrame(table)
    comparisons = _comparisons(metrics, preds, folds, task=task, key=key, n_boot=n_boot, level=level, seed=seed)
    out_dir = Path(out_dir)
    write_tsv(metrics.round(4), out_dir / "metrics.tsv")
    write_tsv(long.round(4), out_dir / "folds.tsv")
    write_tsv(comparisons.round(4), out_dir / "comparisons.tsv")
    tables = {"metrics": metrics, "folds": long, "comparisons": comparisons}
    write_tables_html(tables, out_dir / "tables.html")
    return tables


def load_evaluations(metric_files: list[str]) -> tuple[list[dict], dict[tuple[str, int], pd.DataFrame]]:
    """The metrics.json files of one run's evaluations and their test predictions, checked: each
    written by `lego evaluate`, one task, each model and fold once, each predictions file the one
    its metrics were computed from, and every model of a fold tested on that fold's patients."""
    rows = [read_json(f) for f in metric_files]
    if not rows:
        raise InputError("no metrics files to summarise")
    seen: dict[tuple, str] = {}
    folds: dict[int, tuple[str, str]] = {}
    for r, f in zip(rows, metric_files):
        if not {"model", "fold", "task"} <= set(r) or not all(isinstance(r.get(s), dict) for s in ("test", "val")):
            raise InputError(f"{f}: not a metrics.json written by `lego evaluate` (needs model, fold, task, test and "
                             "val; `lego predict` writes another kind: summarise those with `lego predict-summary`)")
        if r["task"] not in HEADLINE or r["task"] != rows[0]["task"]:
            raise InputError(f"{f}: task {r['task']!r} where {metric_files[0]} has {rows[0]['task']!r}; summarise "
                             "the models of one run (one task) together")
        _first_of_its_fold(seen, r, f)
        first = folds.setdefault(r["fold"], (r.get("fold_digest"), f))
        if None not in (first[0], r.get("fold_digest")) and first[0] != r["fold_digest"]:
            raise InputError(f"{f}: fold {r['fold']} has other test/validation patients than in {first[1]} (another "
                             "folds table); summarise the models of one run together")
    preds = {(r["model"], r["fold"]): _test_predictions(r, f, rows[0]["task"]) for r, f in zip(rows, metric_files)}
    return rows, preds


def _test_predictions(r: dict, f: str, task: str) -> pd.DataFrame:
    """The test predictions beside a metrics.json, checked against it: a file copied from another
    model or an older run would pair one model's metrics with another's intervals and differences."""
    pf = Path(f).with_name(PREDICTIONS_FILE)
    if not pf.is_file():
        raise InputError(f"{pf}: missing beside {Path(f).name}; an evaluation writes both files: rerun `lego evaluate` "
                         f"for model {r['model']!r}, fold {r['fold']}")
    p = pd.read_parquet(pf)
    test = p[p["subset"] == "test"].reset_index(drop=True)
    stated, again = r["test"].get(HEADLINE[task]), headline(test, task) if len(test) else float("nan")
    if len(test) != r["test"].get("n") or (stated is not None and np.isfinite(again) and abs(again - stated) > 1e-6):
        raise InputError(f"{pf}: does not match {Path(f).name} beside it ({len(test)} test rows, {HEADLINE[task]} "
                         f"{again:.4f}; the metrics say {r['test'].get('n')} and {stated}); rerun `lego evaluate` for "
                         f"model {r['model']!r}, fold {r['fold']}")
    return test


TABLE_TITLES = {"metrics": "Every model and metric over the folds (metrics.tsv)",
                "comparisons": "Paired comparisons on shared test patients (comparisons.tsv)",
                "folds": "Per fold, subset and metric (folds.tsv)"}


def write_tables_html(tables: dict[str, pd.DataFrame], path: Path) -> None:
    """The summary tables as one self-contained HTML page, so the Snakemake report shows the
    numbers in the page instead of offering three downloads."""
    from lego.io import atomic_path

    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#f3f3f3}"
             "td:first-child{text-align:left}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>"]
    for key in ("metrics", "comparisons", "folds"):
        frame = tables[key]
        parts.append(f"<h3>{TABLE_TITLES[key]}</h3>")
        counts = {c: (lambda v: f"{v:g}") for c in frame.columns if c in ("n", "n_test", "folds", "n_events")}
        parts.append(frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", formatters=counts, na_rep="",
                                   border=0))  # a mean count reads 36.4, not 36.400
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")


def best_block(metrics: pd.DataFrame, key: str) -> str | None:
    """The single block with the best *validation* mean of the headline metric."""
    blocks = metrics[(metrics["kind"] == "block") & (metrics["metric"] == key)].dropna(subset=["val_mean"])
    if blocks.empty:
        return None
    order = blocks.sort_values("val_mean", ascending=key in LOWER_IS_BETTER)
    return str(order.iloc[0]["model"])


def _comparisons(metrics, preds, folds, *, task, key, n_boot, level, seed) -> pd.DataFrame:
    models = set(metrics["model"])
    ref = best_block(metrics, key)
    blocks = sorted(m for m in models if model_kind(m) == "block")
    pairs = [(m, b, "best block (validation)" if b == ref else "block")
             for m in (*lego_models(), ENSEMBLE) if m in models for b in sorted(blocks, key=lambda b: b != ref)]
    pairs += [(m, ENSEMBLE, "late-fusion ensemble") for m in lego_models() if m in models and ENSEMBLE in models]
    early = sorted(m for m in models if model_kind(m) == "baseline" and m.endswith(f"-{EARLY}"))
    pairs += [(CHOSEN, b, "classical baseline (all modalities)") for b in early if CHOSEN in models]
    trained = sorted(m for m in models if _trained(m))
    pairs += [(a, b, _trained_is(b)) for b in trained for a in (CHOSEN, FUSE.name) if a in models]
    head = metrics[metrics["metric"] == key].set_index("model")
    out = []
    for a, b, what in pairs:
        frames = _paired_frames(preds, a, b, folds, task)
        res = paired_difference(frames, task, n_boot, level, seed)
        out.append({"model": a, "reference": b, "reference_is": what, "metric": key,
                    "own_sets_difference": head.loc[a, "test_mean"] - head.loc[b, "test_mean"],
                    "paired_difference": res["difference"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
                    "p_not_better": res["p_not_better"], "n_paired": float(np.mean([len(f) for f in frames]))})
    return pd.DataFrame(out, columns=["model", "reference", "reference_is", "metric", "own_sets_difference",
                                      "paired_difference", "ci_low", "ci_high", "p_not_better", "n_paired"])



def _trained(name: str) -> bool:
    """A trained baseline (HEALNet, MCAT, the plain ABMIL, ...): the models MM-Lego is compared with end to end."""
    kind = kind_of(name)
    return kind is not None and kind.role == "baseline"


def _trained_is(name: str) -> str:
    """How the comparisons table names a trained reference: one modality's (the plain ABMIL) or end to end on all."""
    return "trained baseline (one modality)" if kind_of(name).scope == "modality" else "trained multimodal baseline"


def _first_of_its_fold(seen: dict, r: dict, f: str) -> None:
    """Record ``f`` as the metrics of its model and fold; the same model and fold twice would count as two folds."""
    key = (r["model"], r["fold"])
    if key in seen:
        raise InputError(f"{f}: model {r['model']!r} fold {r['fold']} is already given by {seen[key]}")
    seen[key] = f


def _same_cohort(digests: dict, r: dict, f: str) -> None:
    """One model's folds must have scored the same labelled patients (one external cohort)."""
    digest = r.get("labelled_digest")
    if digest is None:
        return  # written before the digest was recorded: not comparable
    first = digests.setdefault(r["model"], (digest, f))
    if first[0] != digest:
        raise InputError(f"{f}: model {r['model']!r} scored other labelled patients than in {first[1]}; "
                         "summarise the predictions of one cohort together")


def external_summary(metric_files: list[str]) -> pd.DataFrame:
    """Per model and metric of an external cohort (``lego predict`` with labels): mean, std and
    range over the folds whose model was applied, and how many patients were labelled."""
    rows, seen, digests = [], {}, {}
    for f in metric_files:
        r = read_json(f, dict)
        if not isinstance(r.get("external"), dict) or not r.get("model") or not isinstance(r.get("fold"), int):
            raise InputError(f"{f}: not a metrics.json of `lego predict --labels` (needs model, fold and external)")
        _first_of_its_fold(seen, r, f)
        _same_cohort(digests, r, f)
        for metric, value in r["external"].items():
            if metric in ("n", "events", "tau", "missing") or value is None or isinstance(value, (list, dict)):
                continue  # counts, settings, and metrics the cohort could not give (their reason is in "missing")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
                raise InputError(f"{f}: external {metric} = {value!r} is not a number; rerun `lego predict`")
            rows.append({"model": r["model"], "fold": r["fold"], "metric": metric, "value": float(value),
                         "labelled": r.get("labelled")})
    cols = ["model", "metric", "folds", "mean", "std", "min", "max", "labelled"]
    if not rows:
        return pd.DataFrame(columns=cols)
    long = pd.DataFrame(rows)
    out = long.groupby(["model", "metric"], sort=True).agg(folds=("value", "size"), mean=("value", "mean"),
                                                          std=("value", "std"), min=("value", "min"),
                                                          max=("value", "max"), labelled=("labelled", "max"))
    return out.reset_index()[cols]
