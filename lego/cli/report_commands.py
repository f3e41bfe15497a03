"""Report commands: figures, attention heatmaps and the run's provenance."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lego.cli.declare import Command, command, fold_folders, opt
from lego.cli.slide_commands import set_threads

log = logging.getLogger("lego")


@command("figures", "Report figures: risk groups, per-fold metrics, merge vs ensemble, tissue QC.")
class Figures(Command):
    summary_dir: str = opt("directory with metrics.tsv and folds.tsv", required=True)
    metrics: list = opt("metrics.json files (predictions beside)", required=True, many=True)
    thumbnails: list = opt("tissue.png files of the slides to show", many=True)
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        import pandas as pd

        from lego.evaluation.figures import fold_dots, merge_vs_ensemble, qc_thumbnails, risk_groups
        from lego.evaluation.metrics import HEADLINE
        from lego.evaluation.summary import load_evaluations

        metrics = pd.read_csv(Path(self.summary_dir) / "metrics.tsv", sep="\t")
        folds = pd.read_csv(Path(self.summary_dir) / "folds.tsv", sep="\t")
        rows, tests = load_evaluations(self.metrics)  # the checks summarise makes
        task = rows[0]["task"]
        preds: dict[str, list] = {}
        for (model, fold), p in tests.items():
            preds.setdefault(model, []).append(p.assign(fold=fold))
        pooled = {m: pd.concat(v, ignore_index=True) for m, v in preds.items()}
        out = Path(self.out_dir)
        risk_groups(pooled, task, out / "risk_groups.png")
        fold_dots(metrics, folds, HEADLINE[task], out / "folds.png")
        merge_vs_ensemble(metrics, HEADLINE[task], out / "merge_vs_ensemble.png")
        qc_thumbnails(list(self.thumbnails or []), out / "qc_thumbnails.png")
        log.info("figures written to %s", out)


@command("draw-attention", "A single-modality model's attention over its inputs (images: a PNG per image) on its "
         "fold's test patients, and a table per token.", writes=frozenset({"index.tsv"}))
class DrawAttention(Command):
    model_dir: str = opt("a model folder with attention (a block or abmil of an image modality)", required=True)
    data: str = opt("the modality's prepared table (modalities/<name>.parquet)", required=True)
    folds: str = opt("folds table written by make-folds (parquet)", required=True)
    subset: str = opt("which of the fold's patients to draw", default="test", choices=("test", "val", "train"))
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.evaluation.drawings import run_drawings

        run_drawings(self.model_dir, self.data, self.folds, self.out_dir, self.subset)


@command("heatmaps", "Attention heatmaps of a slide model on its fold's test patients: PNG, QuPath GeoJSON and a "
         "table per slide.", writes=frozenset({"index.tsv"}))
class Heatmaps(Command):
    model_dir: list = opt("model folder(s) with patch attention (a slide block, abmil, late fusion, MCAT), one per "
                          "fold; the workflow draws all folds of a model in one process, so torch loads once",
                          required=True, many=True)
    manifest: str = opt("a slide block's feature manifest (written by feature-manifest); or give --data")
    data: list = opt("each modality the model reads as NAME=PATH (a slide modality: its feature manifest)", many=True,
                     metavar="MODALITY=PATH")
    folds: str = opt("folds table written by make-folds (parquet)", required=True)
    slides: str = opt("slide index (written by index-slides), to draw over thumbnails")
    subset: str = opt("which of the fold's patients to draw", default="test", choices=("test", "val", "train"))
    threads: int = opt("torch CPU threads (default: torch's)", setting="model.train.threads", default=None)
    out_dir: list = opt("output folder(s) (created if missing), one per --model-dir, in the same order",
                        required=True, many=True, output=True)

    def run(self) -> None:
        from lego.evaluation.heatmaps import run_heatmaps

        # Every fold's inputs are checked before any fold is drawn: a refusal leaves nothing half-written.
        jobs = [(m, o, self._data(m)) for m, o in fold_folders(self.model_dir, self.out_dir)]
        set_threads(self.threads)
        for model_dir, out_dir, data in jobs:
            run_heatmaps(model_dir, data, self.folds, out_dir, self.slides, self.subset)

    def _data(self, model_dir: str) -> dict[str, str]:
        """The model's data: --data as given, or --manifest as the data of a single-modality model's
        modality; refused unless it covers every modality the model reads."""
        from lego.cli.declare import named_paths
        from lego.errors import InputError
        from lego.evaluation.heatmaps import check_data
        from lego.models.files import read_config
        from lego.models.model_kinds import model_inputs

        if bool(self.manifest) == bool(self.data):
            raise InputError("give either --manifest (a slide block or abmil) or --data MODALITY=PATH ... (any model)")
        inputs = model_inputs(read_config(model_dir))
        if self.data:
            data = named_paths(self.data)
        elif len(inputs) > 1:
            raise InputError(f"{model_dir} reads {len(inputs)} modalities ({', '.join(sorted(inputs))}); "
                             "give each with --data MODALITY=PATH instead of --manifest")
        else:
            data = {next(iter(inputs)): self.manifest}
        check_data(model_dir, inputs, data)
        return data


@command("provenance", "Record the resolved config, package versions, git commit, input digests and per-job costs.")
class Provenance(Command):
    config_json: str = opt("the resolved run config, as JSON", required=True, json=True)
    inputs: list = opt("input files or directories to digest", many=True)
    benchmarks: str = opt("directory of Snakemake benchmark files", required=True)
    code_dir: str = opt("the workflow's checkout (for the git commit)", required=True)
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.provenance import write_provenance

        run = write_provenance(json.loads(self.config_json), self.inputs or [], self.benchmarks, self.code_dir,
                               self.out_dir)
        log.info("provenance of %d jobs written to %s (commit %s)", run["jobs"]["n"], self.out_dir, run["git"]["commit"])


@command("settings", "Print every config setting (type, range, default, description) as markdown: docs/settings.md.")
class Settings(Command):
    def run(self) -> None:
        from lego.reference import settings_markdown

        print(settings_markdown())
