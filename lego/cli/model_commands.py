"""Model commands: LegoBlocks and their grid choice, LegoMerge, LegoFuse, the reported variant,
and trained baselines."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from lego.cli.declare import Command, command, named_paths, opt
from lego.cli.guards import EVAL_FILES, MODEL_FILES
from lego.cli.slide_commands import set_threads
from lego.errors import InputError
from lego.evaluation.names import CHOSEN

log = logging.getLogger("lego")


@dataclass
class FoldCommand(Command):
    """The options of every command that fits on a fold: its labels, folds and where it runs."""

    labels: str = opt("patient outcome table written by ingest-labels (parquet)", required=True)
    folds: str = opt("folds table written by make-folds (parquet)", required=True)
    device: str = opt("auto (CUDA when visible), cpu or cuda", setting="model.train.device")
    threads: int = opt("torch CPU threads (default: torch's)", setting="model.train.threads", default=None)


@command("train-block", "Train one modality's LegoBlock for one fold on every training patient who has that modality.",
         writes=MODEL_FILES)
class TrainBlock(FoldCommand):
    modality: str = opt("modality name (as in the config)", required=True)
    kind: str = opt("modality kind (lego.modality_kinds; an unknown one is refused with the list)", required=True)
    data: str = opt("modalities/<modality>.parquet (table or slide feature manifest)", required=True)
    fold: int = opt("fold number (from the folds table)", required=True, kind=int, low=0)
    task: str = opt(setting="cohort.task")
    spec: str = opt("JSON: architecture and training options (config/schema.yaml, model)", default="{}", json=True)
    categorical: list = opt(setting="table_modality.categorical")
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.block_training import train_block

        set_threads(self.threads)
        train_block(self.modality, self.kind, self.data, labels=self.labels, folds=self.folds, fold=self.fold,
                    task=self.task, spec=json.loads(self.spec), out_dir=self.out_dir, categorical=self.categorical,
                    device=self.device)


@command("select-block", "Keep the grid candidate chosen on validation (C-index or AUC) of one block and fold.",
         writes=MODEL_FILES)
class SelectBlock(Command):
    candidates: list = opt("candidate block directories (each with history.json)", required=True, many=True)
    rule: str = opt(setting="model.selection")
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.model_selection import select_candidate

        select_candidate(self.candidates, self.out_dir, self.rule)


@command("merge", "LegoMerge a fold's blocks (no training): merged latents and merged head.", writes=MODEL_FILES)
class Merge(Command):
    blocks: list = opt("block model directories of one fold", required=True, many=True)
    method: str = opt(setting="model.merge.method")
    head: str = opt("how block heads are merged: slerp (spherical mean) or linear", setting="model.merge.head")
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.merging import merge

        merge(self.blocks, self.method, self.head, self.out_dir)


@command("merge-tuned",
         "LegoMerge using validation: latents normalised, blocks weighted, subset and method chosen on validation.",
         writes=MODEL_FILES)
class MergeTuned(FoldCommand):
    blocks: list = opt("block model directories of one fold", required=True, many=True)
    data: list = opt("each modality's prepared data as NAME=PATH", required=True, many=True, metavar="MODALITY=PARQUET")
    head: str = opt("how block heads are merged: slerp (spherical mean) or linear", setting="model.merge.head")
    search: bool = opt(setting="model.merge.search")
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.merging import merge_tuned

        set_threads(self.threads)
        merge_tuned(self.blocks, named_paths(self.data), labels=self.labels, folds=self.folds, out_dir=self.out_dir,
                    head_method=self.head, search=self.search)


@command("select-variant", "Report, per fold, the MM-Lego variant (merge, tuned merge, fuse) chosen on validation.",
         writes=EVAL_FILES)
class SelectVariant(Command):
    metrics: list = opt("the variants' eval metrics.json files of one fold", required=True, many=True)
    name: str = opt("model name in the summary", default=CHOSEN)
    rule: str = opt(setting="model.selection")
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.variants import select_variant

        select_variant(self.metrics, self.out_dir, self.name, self.rule)


@command("fuse", "LegoFuse a fold's blocks (stack, weave, or the tuned merge itself) and fine-tune for a few epochs.", writes=MODEL_FILES)
class Fuse(FoldCommand):
    blocks: list = opt("block model directories of one fold", required=True, many=True)
    data: list = opt("each modality's prepared data as NAME=PATH", required=True, many=True, metavar="MODALITY=PARQUET")
    spec: str = opt("JSON: mode, epochs, lr, freeze, ... (config/schema.yaml, model.fuse)", default="{}", json=True)
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.fusing import fuse

        set_threads(self.threads)
        fuse(self.blocks, named_paths(self.data), labels=self.labels, folds=self.folds, spec=json.loads(self.spec),
             out_dir=self.out_dir, device=self.device)


@command("train-model", "Train a registered trained baseline (e.g. abmil) on one fold; evaluate it with `lego evaluate`.",
         writes=MODEL_FILES)
class TrainModel(FoldCommand):
    model: str = opt("the trained baseline's name (lego.baselines; an unknown one is refused with the list)",
                     required=True)
    data: list = opt("each modality's prepared data as NAME=PATH", required=True, many=True, metavar="MODALITY=PARQUET")
    modalities: str = opt('JSON: {modality: {"kind", "categorical"?, "preprocess"?}} for the --data entries',
                          required=True, json=True)
    fold: int = opt("fold number (from the folds table)", required=True, kind=int, low=0)
    task: str = opt(setting="cohort.task")
    spec: str = opt("JSON: training options (model.train, the modality's block overrides, n_bins)", default="{}",
                    json=True)
    out_dir: str = opt("output folder (created if missing)", required=True, output=True)

    def run(self) -> None:
        from lego.steps.model_training import train_model

        set_threads(self.threads)
        specs, data = modality_specs(self.modalities, self.data)
        train_model(self.model, specs, data, labels=self.labels, folds=self.folds, fold=self.fold, task=self.task,
                    spec=json.loads(self.spec), out_dir=self.out_dir, device=self.device)


def modality_specs(text: str, data: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """``--modalities`` JSON and ``--data`` NAME=PATH entries, each naming the same modalities."""
    specs, paths = json.loads(text), named_paths(data)
    if not isinstance(specs, dict) or not all(isinstance(s, dict) and "kind" in s for s in specs.values()):
        raise InputError('--modalities must be a JSON object {modality: {"kind": ...}}')
    extra, missing = sorted(set(paths) - set(specs)), sorted(set(specs) - set(paths))
    if extra:
        raise InputError(f"--data names modality {extra[0]!r} but --modalities does not describe it")
    if missing:
        raise InputError(f"--modalities describes {missing} but --data gives no file for them")
    return specs, paths
