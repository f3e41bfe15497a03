"""The MM-Lego variant a fold reports as ``lego``, chosen on validation."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lego.errors import InputError
from lego.evaluation.metrics import HEADLINE, prediction_columns
from lego.evaluation.names import CHOSEN, METRICS_FILE, PREDICTIONS_FILE
from lego.io import copy_atomic, read_json, write_json
from lego.model_selection import choose, validation_se
from lego.models.model_kinds import by_role
from lego.settings import default

log = logging.getLogger(__name__)


def variant_order() -> tuple[str, ...]:
    """The one-SE rule's preference among the variants: training-free merges before the fine-tune."""
    return tuple(k.name for k in sorted(by_role("variant"), key=lambda k: k.preference))


def _variant_se(metrics_file: str, task: str) -> float | None:
    """Bootstrap SE of a variant's validation score, from its saved validation predictions (which carry the labels)."""
    path = Path(metrics_file).with_name(PREDICTIONS_FILE)
    if not path.exists():
        return None
    pred = pd.read_parquet(path)
    pred = pred[pred["subset"] == "val"] if "subset" in pred else pred.iloc[0:0]
    outputs = prediction_columns(pred)
    return validation_se(pred[["patient_id", *outputs]], pred.drop(columns=outputs), task)


def select_variant(metrics_files: list[str], out_dir: str, name: str = CHOSEN, rule: str = default("model.selection")) -> dict:
    """The MM-Lego variant (merge, tuned merge, fuse) a fold reports, chosen on validation; its test results are copied.

    ``one_se`` (default): variants in :func:`variant_order`, the first within one bootstrap SE of
    the best validation score. Why: a fold's validation part holds ~10-25 events, and the
    fine-tuned fuse, fitted on the same small data, wins validation by luck more often than the
    training-free merges (measured on the paper's UCEC folds: the validation-best fuse lost 0.10
    test C to the tuned merge in one of five folds). ``best``: the highest validation score.
    """
    rows = [read_json(f) for f in metrics_files]
    if len({r["fold"] for r in rows}) != 1:
        raise InputError(f"variants come from different folds: {sorted({r['fold'] for r in rows})}")
    rank = {v: i for i, v in enumerate(variant_order())}
    order = sorted(range(len(rows)), key=lambda i: rank.get(rows[i]["model"], len(rank)))
    rows, metrics_files = [rows[i] for i in order], [metrics_files[i] for i in order]
    task = rows[0]["task"]
    key = HEADLINE[task]
    scores = [r["val"].get(key) for r in rows]
    ses = [_variant_se(f, task) for f in metrics_files] if rule == "one_se" else [None] * len(rows)
    best, threshold = choose(scores, ses, rule)
    chosen = {**rows[best], "model": name, "variant": rows[best]["model"], "rule": rule, "threshold": threshold,
              "variant_val_scores": {r["model"]: r["val"].get(key) for r in rows},
              "variant_val_se": {r["model"]: se for r, se in zip(rows, ses)}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy_atomic(Path(metrics_files[best]).with_name(PREDICTIONS_FILE), out / PREDICTIONS_FILE)
    write_json(chosen, out / METRICS_FILE)
    log.info("fold %s: %s chose %s on validation (%s)", rows[0]["fold"], name, chosen["variant"], rule)
    return chosen
