"""Evaluation commands: scoring a model on its fold, predicting a new cohort, the classical
baselines, the ensemble and the summary tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lego.cli.declare import Command, command, fold_folders, named_paths, opt
from lego.cli.guards import EVAL_FILES
from lego.cli.model_commands import FoldCommand, modality_specs
from lego.cli.slide_commands import set_threads
from lego.evaluation.classical import CLASSICAL

log = logging.getLogger("lego")


@dataclass
class ScoringCommand(Command):
    """The evaluation settings of every command that scores predictions."""

    evaluation: str = opt('JSON: {"horizons", "tau_quantile", "n_boot", "ci", "seed"} (config section evaluation)',
                          json=True)

    def eval_options(self):
        from lego.evaluation.scoring import EvalOptions

        return EvalOptions.from_json(self.evaluation)


@command("evaluate", "Predict each fold's test and validation patients; write predictions and metrics.",
         writes=EVAL_FILES)
class Evaluate(FoldCommand, ScoringCommand):
    model_dir: list = opt("model folder(s) (model.safetensors + config.json), one per fold; the workflow scores "
                          "all folds of a model in one process, so torch and scikit-survival load once",
                          required=True, many=True)
    name: str = opt("model name in the summary, e.g. block-rna, merge, fuse", required=True)
    data: list = opt("each modality's prepared data as NAME=PATH", required=True, many=True, metavar="MODALITY=PARQUET")
    out_dir: list = opt("output folder(s) (created if missing), one per --model-dir, in the same order",
                        required=True, many=True, output=True)

    def run(self) -> None:
        from lego.steps.inference import evaluate

        pairs = fold_folders(self.model_dir, self.out_dir)
        set_threads(self.threads)
        data, opts = named_paths(self.data), self.eval_options()
        for model_dir, out_dir in pairs:
            result = evaluate(model_dir, data, labels=self.labels, folds=self.folds, out_dir=out_dir, name=self.name,
                              opts=opts)
            log.info("%s fold %s: test %s | val %s", self.name, result["fold"], result["test"], result["val"])


@command("predict", "Apply a trained model to a new cohort (no labels needed); with --labels, external metrics.",
         writes=EVAL_FILES)
class Predict(ScoringCommand):
    model_dir: str = opt("model folder (model.safetensors + config.json)", required=True)
    data: list = opt("each modality's table prepared by prepare-modality (or a feature manifest) for the new cohort",
                     required=True, many=True, metavar="NAME=PATH")
    labels: str = opt("outcomes of the new cohort (ingest-labels parquet), for metrics")
    name: str = opt("model name recorded in metrics.json (default: the model folder's)")
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.inference import predict_cohort

        predict_cohort(self.model_dir, named_paths(self.data), self.out_dir, self.labels, self.eval_options(), self.name)


@command("predict-summary",
         "Mean and spread over folds of each model's external metrics (metrics.json files written by predict).")
class PredictSummary(Command):
    metrics: list = opt("metrics.json files written by predict", required=True, many=True)
    out: str = opt("summary.tsv to write", required=True, output=True)

    def run(self) -> None:
        from lego.evaluation.summary import external_summary
        from lego.io import write_tsv

        table = external_summary(self.metrics)
        write_tsv(table, self.out)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@command("baselines", f"Fit reference models ({', '.join(CLASSICAL)}) on one input of one fold with in-fold "
         "preprocessing; evaluate each.")
class Baselines(FoldCommand, ScoringCommand):
    methods: list = opt("baseline methods to fit", required=True, many=True, choices=lambda: tuple(CLASSICAL))
    source: str = opt("input name: a modality, or early (several concatenated)", required=True)
    data: list = opt("each modality's prepared data as NAME=PATH", required=True, many=True, metavar="MODALITY=PARQUET")
    modalities: str = opt('JSON: {modality: {"kind", "categorical"?, "preprocess"?}} for the --data entries',
                          required=True, json=True)
    fold: int = opt("fold number (from the folds table)", required=True, kind=int, low=0)
    task: str = opt(setting="cohort.task")
    n_bins: int = opt("survival bins (for the predicted curves)", setting="model.n_bins")
    seed: int = opt("random seed (same seed, same result)", setting="evaluation.seed")
    out_root: str = opt("each method writes <out-root>/<method>-<source>/fold<k>/", required=True, output=True)

    def run(self) -> None:
        from lego.evaluation.baseline_runs import BaselineRun, run_baselines

        set_threads(self.threads)
        specs, paths = modality_specs(self.modalities, self.data)
        modalities = {m: {**s, "path": paths[m]} for m, s in specs.items()}
        results = run_baselines(BaselineRun(self.methods, self.source, modalities), labels=self.labels,
                                folds=self.folds, fold=self.fold, task=self.task, n_bins=self.n_bins,
                                opts=self.eval_options(), out_root=self.out_root, seed=self.seed)
        for name, r in results.items():
            log.info("%s fold %s: chose %s | test %s", name, self.fold, r["baseline"]["chosen"], r["test"])


@command("ensemble", "Late-fusion ensemble of a fold's evaluated blocks (mean of their predictions).", writes=EVAL_FILES)
class Ensemble(ScoringCommand):
    block_metrics: list = opt("the blocks' metrics.json (predictions beside)", required=True, many=True)
    labels: str = opt("patient outcome table written by ingest-labels (parquet)", required=True)
    folds: str = opt("folds table written by make-folds (parquet)", required=True)
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.evaluation.baseline_runs import run_ensemble

        result = run_ensemble(self.block_metrics, self.labels, self.folds, self.eval_options(), self.out_dir)
        log.info("ensemble of %s, fold %s: test %s", result["blocks"], result["fold"], result["test"])


@command("summarise", "metrics.tsv (mean, std, bootstrap CI per model and metric), folds.tsv and comparisons.tsv.",
         writes=frozenset({"metrics.tsv", "folds.tsv", "comparisons.tsv", "tables.html"}))
class Summarise(ScoringCommand):
    metrics: list = opt("metrics.json files of evaluate; the predictions.parquet beside each is read too",
                        required=True, many=True)
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.evaluation.summary import summarise

        opts = self.eval_options()
        tables = summarise(self.metrics, self.out_dir, opts.n_boot, opts.ci, opts.seed)
        fmt = lambda v: f"{v:.3f}"  # noqa: E731
        print(tables["metrics"].drop(columns="missing").to_string(index=False, float_format=fmt))
        print(tables["comparisons"].to_string(index=False, float_format=fmt))
