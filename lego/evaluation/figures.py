"""Report figures (PNG, matplotlib, headless) from the summary tables and the test predictions.

* ``risk_groups.png``: survival -- Kaplan-Meier curves of low- and high-risk patients from the
  pooled out-of-fold test predictions, one panel per model, with the log-rank p-value. Each fold
  is split at the median risk of *its own* test predictions (no outcome is used to choose the
  cut, and risks of different folds' models are never compared). Classification -- pooled
  one-vs-rest ROC curves per model.
* ``folds.png``: the headline metric of every model on every fold (dots), with mean and CI.
* ``merge_vs_ensemble.png``: headline test mean and bootstrap CI of each block, the late-fusion
  ensemble, LegoMerge and LegoFuse.
* ``qc_thumbnails.png``: tissue masks of a sample of slides, as the segmentation saw them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lego.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

COLOURS = {"block": "#8c8c8c", "lego": "#1f77b4", "ensemble": "#ff7f0e", "baseline": "#2ca02c"}


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _grid(n: int, size: float = 3.2):
    cols = min(n, 4)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def risk_groups(predictions: dict[str, pd.DataFrame], task: str, path: str | Path) -> None:
    """KM of median-split risk groups (survival) or ROC curves (classification), one panel per model."""
    fig, axes = _grid(len(predictions))
    for ax, (model, pred) in zip(axes, predictions.items()):
        ax.set_title(model, fontsize=10)
        if not len(pred) or not any(c == "risk" or c.startswith("p_") for c in pred.columns):
            ax.text(0.5, 0.5, "no test predictions\n(see metrics.tsv, missing)", ha="center", va="center", fontsize=8)
            ax.axis("off")
        elif task == "survival":
            _km_panel(ax, pred)
        else:
            _roc_panel(ax, pred)
    _save(fig, path)


def _km_panel(ax, pred: pd.DataFrame) -> None:
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator
    from sksurv.util import Surv

    pred = pred.dropna(subset=["time", "event", "risk"])
    high = pred.groupby("fold")["risk"].transform(lambda r: r > r.median()).astype(bool)
    for group, colour, label in ((~high, "#1f77b4", "low risk"), (high, "#d62728", "high risk")):
        sub = pred[group]
        if len(sub) and sub["event"].any():
            t, s = kaplan_meier_estimator(sub["event"].astype(bool).to_numpy(), sub["time"].to_numpy(float))
            ax.step(t, s, where="post", color=colour, label=f"{label} (n={len(sub)})")
    text = "log-rank p: n/a"
    if high.any() and (~high).any() and pred["event"].any():
        _, p = compare_survival(Surv.from_arrays(pred["event"].astype(bool), pred["time"].astype(float)), high.to_numpy())
        text = f"log-rank p = {p:.2g}"
    ax.text(0.03, 0.05, text, transform=ax.transAxes, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("survival")
    ax.legend(fontsize=7, loc="upper right")
    _at_risk(ax, pred, high)


def _at_risk(ax, pred: pd.DataFrame, high: pd.Series) -> None:
    """Numbers at risk per group under the x ticks (a KM curve's tail rests on a few patients)."""
    ticks = [t for t in ax.get_xticks() if 0 <= t <= pred["time"].max()]
    if not ticks:
        ax.set_xlabel("time (the labels' unit)")
        return
    ax.set_xticks(ticks)
    rows = {name: [int((pred.loc[mask, "time"] >= t).sum()) for t in ticks] for name, mask in (("low", ~high), ("high", high))}
    ax.set_xticklabels([f"{t:g}\n{lo}\n{hi}" for t, lo, hi in zip(ticks, rows["low"], rows["high"])], fontsize=7)
    ax.set_xlabel("time (the labels' unit); at risk: low / high", fontsize=8)


def _roc_panel(ax, pred: pd.DataFrame) -> None:
    from sklearn.metrics import roc_curve

    cols = [c for c in pred.columns if c.startswith("p_")]
    classes = [c.removeprefix("p_") for c in cols]
    y = pred["label"].astype(str)
    shown = classes[1:] if len(classes) == 2 else classes
    for c in shown:
        if (y == c).any() and (y != c).any():
            fpr, tpr, _ = roc_curve(y == c, pred[f"p_{c}"])
            ax.plot(fpr, tpr, label=f"{c} vs rest")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")


def _ordered(metrics: pd.DataFrame, key: str) -> pd.DataFrame:
    head = metrics[metrics["metric"] == key].copy()
    rank = {"block": 0, "baseline": 1, "ensemble": 2, "lego": 3}
    head["_r"] = head["kind"].map(rank)
    return head.sort_values(["_r", "model"]).drop(columns="_r").reset_index(drop=True)


def fold_dots(metrics: pd.DataFrame, folds: pd.DataFrame, key: str, path: str | Path) -> None:
    """Per-fold headline metric per model, with the mean and its bootstrap CI."""
    head = _ordered(metrics, key)
    test = folds[(folds["metric"] == key) & (folds["subset"] == "test")]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(head) + 2), 3.6))
    rng = np.random.default_rng(0)
    for i, row in head.iterrows():
        vals = test.loc[test["model"] == row["model"], "value"].dropna().to_numpy()
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, s=14, color=COLOURS[row["kind"]], alpha=0.8)
        lo, hi = row["ci_low"], row["ci_high"]
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([i, i], [lo, hi], color="black", lw=1)
        ax.plot([i - 0.25, i + 0.25], [row["test_mean"]] * 2, color="black", lw=2)
    ax.set_xticks(range(len(head)), head["model"], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {key}")
    ax.axhline(0.5, ls=":", color="grey")
    _save(fig, path)


def merge_vs_ensemble(metrics: pd.DataFrame, key: str, path: str | Path) -> None:
    """Bars: each block, the best baseline of each method, the late-fusion ensemble and the MM-Lego
    variants (test mean, bootstrap CI), on an axis from 0 with chance marked, and a legend.

    The baselines are in because a reader must see whether merging beats the classical models,
    not only the blocks; the axis starts at 0 so that bar lengths are not exaggerated.
    """
    head = _ordered(metrics, key)
    base = head[head["kind"] == "baseline"].dropna(subset=["test_mean"])
    best_base = base.loc[base.groupby(base["model"].str.split("-").str[0])["test_mean"].idxmax()] if len(base) else base
    keep = head["kind"].isin(["block", "ensemble", "lego"]) | head["model"].isin(best_base["model"])
    head = head[keep].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(head) + 1.5), 3.6))
    err = np.array([head["test_mean"] - head["ci_low"], head["ci_high"] - head["test_mean"]])
    err = np.where(np.isfinite(err), err, 0)
    ax.bar(range(len(head)), head["test_mean"], yerr=err, capsize=3, color=[COLOURS[k] for k in head["kind"]])
    ax.set_xticks(range(len(head)), head["model"], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {key} (mean, 95% CI)")
    ax.set_ylim(0.0, 1.0)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    labels = {"block": "single block", "baseline": "best baseline of its method", "ensemble": "late-fusion ensemble",
              "lego": "MM-Lego (merge, fuse)"}
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[k]) for k in labels if k in set(head["kind"])]
    ax.legend(handles, [labels[k] for k in labels if k in set(head["kind"])], fontsize=7, loc="lower right")
    _save(fig, path)


def qc_thumbnails(pngs: list[str], path: str | Path) -> None:
    """A grid of the tissue-mask images the segmentation wrote (or a note when there are none)."""
    if not pngs:
        fig, ax = plt.subplots(figsize=(4, 1.2))
        ax.text(0.5, 0.5, "no tissue masks: no slide was segmented\n(an omics-only cohort, or features imported)", ha="center", va="center", fontsize=8)
        ax.axis("off")
        _save(fig, path)
        return
    fig, axes = _grid(len(pngs), size=2.6)
    for ax, png in zip(axes, pngs):
        ax.set_title(Path(png).parent.name, fontsize=7)
        ax.axis("off")
        try:
            ax.imshow(plt.imread(png))
        except Exception as exc:  # one unreadable image (PIL and matplotlib raise several types) is said in its cell
            log.warning("%s: thumbnail not drawn (%s)", png, exc)
            ax.text(0.5, 0.5, "unreadable image", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    _save(fig, path)
