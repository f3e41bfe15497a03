"""Workflow planning: a validated config -> what a run makes (modalities and how each is prepared,
folds, models, baselines, output paths) and what each job is given.

The Snakemake rules (``rules/common.smk``) read a :class:`Plan` and hold no decisions of their own,
so everything a run decides is testable here without Snakemake. Which models exist comes from
the registries (modality kinds, model kinds, classical baselines), never from a list of names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lego.config import BUILD_BLOCKS, config_paths
from lego.data.folds import fold_files, n_folds_in
from lego.data.labels import source_outcome_columns
from lego.errors import ConfigError, LegoError
from lego.evaluation.names import (
    CHOSEN,
    DEFAULT_BASELINES,
    EARLY,
    ENSEMBLE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    TASK_BASELINES,
    baseline_name,
    trained_baselines,
)
from lego.modality_kinds import ModalityKind, modality_kind
from lego.model_selection import grid_candidates
from lego.models.model_kinds import BLOCK, MODEL_FILES, ModelKind, by_role, kind_of, modality_of, role_folder
from lego.plan_predict import predict_runs, refuse_overwriting_the_source

# Execution settings: where and how fast a job runs, never what it computes. Snakemake must not
# rerun anything when they change (each rerun of a real cohort costs hours of cluster time), so the
# rules give them to jobs through `threads:` and `resources:`, never through `params:`.
EXECUTION = ("device", "threads", "gpus")  # model.train keys
EMBEDDING_EXECUTION = (*EXECUTION, "batch_size", "num_workers")  # embedding keys (features equal up to float rounding)


@dataclass(frozen=True)
class TrainedRun:
    """One trained baseline model of the run: its kind and the modalities it reads."""

    kind: ModelKind
    modalities: tuple[str, ...]


@dataclass
class Plan:
    """What one run of the workflow makes, from its validated ``config``."""

    config: dict[str, Any]
    task: str = field(init=False)

    def __post_init__(self) -> None:
        self.task = self.config["cohort"]["task"]
        _check(self)

    # ------------------------------------------------------------------ places and inputs

    @property
    def out(self) -> str:
        return os.path.normpath(f"{self.config['results_dir']}/{self.config['cohort']['name']}")  # "./x" is "x"

    @property
    def demo_dir(self) -> str:
        return os.path.normpath(f"{self.config['results_dir']}/demo_input")

    @property
    def modalities(self) -> dict[str, dict]:
        return self.config["modalities"]

    def kind(self, modality: str) -> ModalityKind:
        return modality_kind(self.modalities[modality]["kind"])

    @cached_property
    def slide_modalities(self) -> list[str]:
        """Modalities read from slides (patch features)."""
        return [m for m in self.modalities if self.kind(m).slides]

    @cached_property
    def prepared_modalities(self) -> list[str]:
        """Modalities prepared from a table by their kind's command (everything not from slides)."""
        return [m for m in self.modalities if self.kind(m).prepare is not None]

    def read_as(self, table: str) -> list[str]:
        """Modalities whose prepared file is a ``table`` (lego.io.TABLES: "modality" or "manifest")."""
        return [m for m in self.modalities if self.kind(m).table == table]

    @property
    def outcomes(self) -> list[str]:
        """The labels table's outcome columns: never features (prepare commands leave them out)."""
        return source_outcome_columns(self.config["cohort"]["labels"])

    def prepare_args(self, modality: str) -> tuple[str, dict[str, Any]]:
        """The command that prepares a table modality and its flags (the modality's own settings only)."""
        prep = self.kind(modality).prepare
        spec = self.modalities[modality]
        return prep.command, {**{k: spec.get(k) for k in prep.settings}, "outcome_columns": self.outcomes}

    def preparation_files(self, modality: str) -> list[str]:
        """Files a modality's preparation reads besides its ``path`` (its kind says which)."""
        return self._preparation_files[modality]

    @cached_property
    def _preparation_files(self) -> dict[str, list[str]]:
        """Listed once per plan: the preparation job and every drawing job of a modality ask for
        them, and an image folder would otherwise be listed once per job when the DAG is built."""
        files = {m: self.kind(m).prepare.files for m in self.prepared_modalities}
        return {m: f(self.modalities[m]) if f is not None else [] for m, f in files.items()}

    def data_path(self, modality: str) -> str:
        return f"{self.out}/modalities/{modality}.parquet"

    def feature_set(self, modality: str) -> str:
        """Folder name of a slide modality's features: its encoder, or imported-<modality>."""
        spec = self.modalities[modality]
        return f"imported-{modality}" if spec.get("features_dir") else spec["encoder"]

    def slide_sources(self) -> dict[str, Any]:
        """Where index_slides looks: slides.dir/list, else the slide modalities' existing feature files."""
        sl = self.config["slides"]
        if sl["dir"] or sl["list"]:
            return {"dir": [sl["dir"]] if sl["dir"] else None, "list": sl["list"], "ext": sl["extensions"]}
        imported = [self.modalities[m]["features_dir"] for m in self.slide_modalities
                    if self.modalities[m].get("features_dir")]
        # Every imported folder is indexed: a slide missing from one of them is that modality's failed
        # slide (rule import_features records it), not a missing input that stops the DAG.
        return {"dir": imported, "list": None, "ext": [".h5"]} if imported else {"dir": None, "list": None, "ext": []}

    def slide_source_paths(self) -> list[str]:
        """The folders and list file index_slides reads (its declared inputs)."""
        src = self.slide_sources()
        return [p for p in (src["dir"] or []) + [src["list"]] if p]

    def segments_slides(self) -> bool:
        """Whether any slide is segmented (a slide modality not made of imported features)."""
        return any(not self.modalities[m].get("features_dir") for m in self.slide_modalities)

    # ------------------------------------------------------------------ folds

    @cached_property
    def fold_sources(self) -> list[str]:
        folds = self.config["folds"]
        return _fold_files(folds["path"]) if folds["method"] == "file" else []

    @cached_property
    def folds(self) -> list[int]:
        folds = self.config["folds"]
        if folds["method"] == "file":
            return list(range(_fold_count(folds["path"])))
        if folds["method"] == "kfold":
            return list(range(folds["n_folds"] * folds["repeats"]))
        return list(range(len(folds["seeds"]) if folds.get("seeds") else folds["n_folds"]))

    # ------------------------------------------------------------------ models

    @property
    def build(self) -> list[str]:
        return self.config["model"]["build"]

    @cached_property
    def blocks(self) -> list[str]:
        return [BLOCK.model_name(m) for m in self.modalities] if BUILD_BLOCKS in self.build else []

    @cached_property
    def variants(self) -> list[str]:
        """The MM-Lego variants built (they need two modalities or more)."""
        return [k.name for k in by_role("variant") if k.name in self.build and len(self.modalities) >= k.min_modalities]

    @cached_property
    def models(self) -> list[str]:
        """The blocks and variants, and "lego" (the variant chosen per fold) when there are two or more."""
        return self.blocks + self.variants + ([CHOSEN] if len(self.variants) >= 2 else [])

    @cached_property
    def baselines(self) -> list[str]:
        """The names ``evaluation.baselines`` asks for (its default: the task's defaults and the rest)."""
        asked = self.config["evaluation"].get("baselines")
        if asked is not None:
            return list(asked)
        return [*DEFAULT_BASELINES[self.task], *trained_baselines(defaults_only=True), ENSEMBLE]

    @cached_property
    def classical(self) -> list[str]:
        return [b for b in self.baselines if b in TASK_BASELINES[self.task]]

    @cached_property
    def baseline_sources(self) -> list[str]:
        """The inputs the classical baselines are fitted on: each modality and/or all of them (early)."""
        if not self.classical:
            return []
        inputs = self.config["evaluation"]["baseline_inputs"]
        return (list(self.modalities) if "each" in inputs else []) + (
            [EARLY] if "early" in inputs and len(self.modalities) >= 2 else [])

    @cached_property
    def trained(self) -> dict[str, TrainedRun]:
        """Each trained baseline model by name: one per accepted modality (modality scope) or one per run."""
        runs = {}
        for kind in by_role("baseline"):
            if kind.name not in self.baselines:
                continue
            if kind.scope == "modality":
                for m in self.modalities:
                    if not kind.bags_only or self.kind(m).bags:
                        runs[kind.model_name(m)] = TrainedRun(kind, (m,))
            elif kind.problem(self.families) is None:  # a default that does not fit the modalities is left out
                runs[kind.name] = TrainedRun(kind, tuple(self.modalities))
        return runs

    @property
    def families(self) -> dict[str, str]:
        """Each modality's form ("table" or "bag"): what a trained baseline can read."""
        return {m: self.kind(m).form for m in self.modalities}

    @cached_property
    def all_models(self) -> list[str]:
        """Every model the summary holds."""
        names = self.models + [baseline_name(m, s) for s in self.baseline_sources for m in self.classical]
        names += list(self.trained)
        if ENSEMBLE in self.baselines and self.blocks and len(self.modalities) >= 2:
            names.append(ENSEMBLE)
        return names

    @cached_property
    def evaluated(self) -> list[str]:
        """Models with a folder of their own that the evaluate rule scores (blocks, variants, trained baselines)."""
        return self.blocks + self.variants + list(self.trained)

    def evaluation(self, model: str, fold: int | str, stage: str = "eval") -> dict[str, str]:
        """The two files a model's scoring on a fold ends as (``stage`` eval, or predict in predict
        mode; ``model`` and ``fold`` may be wildcard patterns)."""
        folder = f"{self.out}/{stage}/{model}/fold{fold}"
        return {"metrics": f"{folder}/{METRICS_FILE}", "predictions": f"{folder}/{PREDICTIONS_FILE}"}

    def evaluations(self, models: list[str], folds: list[int] | None = None) -> list[str]:
        """Every metrics file of ``models`` over the folds (model by model), then their predictions."""
        pairs = [self.evaluation(m, k) for m in models for k in (self.folds if folds is None else folds)]
        return [p["metrics"] for p in pairs] + [p["predictions"] for p in pairs]

    def model_folder(self, name: str, fold: int | str, base: str | None = None) -> str:
        return kind_of(name).folder(name, fold, base or self.out)

    def trained_folder(self, name: str, fold: int | str) -> str:
        """A trained baseline's fold (``name`` may be a wildcard pattern)."""
        return role_folder("baseline", name, fold, self.out)

    def block_folder(self, modality: str, fold: int | str) -> str:
        return self.model_folder(BLOCK.model_name(modality), fold)

    def candidate_folder(self, modality: str, fold: int | str, candidate: int | str) -> str:
        """Where one grid candidate of a block is trained (select_block keeps one of them)."""
        return f"{self.block_folder(modality, fold)}/candidates/c{candidate}"

    def fold_block_files(self, fold: int | str) -> list[str]:
        """Every selected block of a fold: weights, config and history (merging and fusing read all three)."""
        return [f"{self.block_folder(m, fold)}/{f}" for m in self.modalities for f in MODEL_FILES]

    def model_modalities(self, name: str) -> list[str]:
        """The modalities a model reads."""
        if name in self.trained:
            return list(self.trained[name].modalities)
        modality = modality_of(name)
        return [modality] if modality is not None else list(self.modalities)

    @cached_property
    def attention_models(self) -> dict[str, list[str]]:
        """The run's models with patch attention, with the slide modalities it is over."""
        out = {}
        for name in self.blocks + list(self.trained):
            slides = [m for m in self.model_modalities(name) if m in self.slide_modalities]
            if kind_of(name).heatmaps and slides:
                out[name] = slides
        return out

    @cached_property
    def drawable_models(self) -> dict[str, str]:
        """Single-modality models with attention over a modality whose kind draws it (e.g. images),
        with that modality."""
        out = {}
        for name in self.blocks + list(self.trained):
            mods = self.model_modalities(name)
            if kind_of(name).heatmaps and len(mods) == 1 and self.kind(mods[0]).draw is not None:
                out[name] = mods[0]
        return out

    @cached_property
    def drawn_models(self) -> dict[str, str]:
        """The drawable models ``evaluation.heatmaps`` asks for (all of them, none, or those listed)."""
        wanted = self.config["evaluation"]["heatmaps"]
        return {m: d for m, d in self.drawable_models.items() if wanted is True or (wanted and m in wanted)}

    @cached_property
    def heatmap_models(self) -> dict[str, list[str]]:
        """Models whose patch attention is drawn (``evaluation.heatmaps``: all of them, none, or
        those listed), with the slide modalities it is drawn over."""
        wanted = self.config["evaluation"]["heatmaps"]
        if wanted is True:
            return self.attention_models
        return {m: s for m, s in self.attention_models.items() if wanted and m in wanted}

    def gpus(self, kind: ModelKind) -> int:
        """GPUs a model kind's training job asks for on a cluster."""
        return self.config["model"]["train"]["gpus"] if kind.gpu else 0

    # ------------------------------------------------------------------ what each job is given

    def block_spec(self, modality: str) -> dict[str, Any]:
        """Everything one modality's block training depends on (and nothing about other modalities)."""
        model = self.config["model"]
        spec = {**model["block"], **model["train"], "n_bins": model["n_bins"]}
        for key in EXECUTION:
            spec.pop(key)
        spec["encoder"] = self.kind(modality).encoder
        spec.update(self.modalities[modality].get("block", {}))
        if self.modalities[modality].get("preprocess"):
            spec["preprocess"] = self.modalities[modality]["preprocess"]
        return spec

    def block_grid(self, modality: str) -> list[dict]:
        """The modality's hyper-parameter candidates (a list of overrides; one empty dict without a grid)."""
        return grid_candidates(self.modalities[modality].get("block", {}).get("grid", self.config["model"].get("grid")))

    def candidate_spec(self, modality: str, candidate: int | str) -> dict[str, Any]:
        """block_spec with one grid candidate applied (select_k goes into the table preprocessing), and
        ``tied_head: auto`` resolved for the run's encoders (:func:`lego.models.model_kinds.run_tied_head`)."""
        from lego.models.model_kinds import run_tied_head

        spec = self._grid_spec(modality, candidate)
        spec["tied_head"] = run_tied_head(spec["tied_head"], self._run_encoders)
        return spec

    @cached_property
    def _run_encoders(self) -> set[str]:
        """Every encoder a block candidate of this run uses (once per plan, not per job's params)."""
        return {self._grid_spec(m, c)["encoder"] for m in self.modalities for c in range(len(self.block_grid(m)))}

    def _grid_spec(self, modality: str, candidate: int | str) -> dict[str, Any]:
        spec = self.block_spec(modality)
        spec.pop("grid", None)
        overrides = dict(self.block_grid(modality)[int(candidate)])
        if "select_k" in overrides:
            spec["preprocess"] = {**spec.get("preprocess", {}), "select_k": overrides.pop("select_k")}
        spec.update(overrides)
        return spec

    def baseline_modalities(self, source: str) -> list[str]:
        return list(self.modalities) if source == EARLY else [source]

    def modality_specs(self, modalities: list[str]) -> dict[str, dict]:
        """What a baseline needs of each modality: its kind, categories and in-fold preprocessing."""
        keys = ("kind", "categorical", "preprocess")
        return {m: {k: self.modalities[m][k] for k in keys if self.modalities[m].get(k)} for m in modalities}

    def trained_spec(self, name: str) -> dict[str, Any]:
        """A trained baseline's settings: its modality's block settings (modality scope: the comparison
        with the block isolates the architecture), else the run's training settings; then its own
        (``trained_baselines.<kind>``, which may override training settings such as ``lr``)."""
        run = self.trained[name]
        own = self.trained_settings(run.kind)
        if run.kind.scope == "modality":
            return {**self.block_spec(run.modalities[0]), **own}
        model = self.config["model"]
        spec = {**model["train"], "n_bins": model["n_bins"], **own}
        return {k: v for k, v in spec.items() if k not in EXECUTION}

    def trained_settings(self, kind: ModelKind) -> dict[str, Any]:
        """A trained baseline kind's own section of the config (``trained_baselines.<kind>``)."""
        return self.config.get("trained_baselines", {}).get(kind.name, {})

    def trained_files(self, name: str) -> list[str]:
        """The input files a trained baseline's settings name (e.g. MCAT's gene signatures)."""
        kind = self.trained[name].kind
        own = self.trained_settings(kind)
        return [own[k] for k in kind.files if own.get(k)]

    def fuse_spec(self) -> dict[str, Any]:
        model = self.config["model"]
        return {**model["fuse"], "alpha": model["train"]["alpha"], "patience": model["fuse"]["epochs"],
                "head_method": model["merge"]["head"]}

    @property
    def metric_options(self) -> str:
        """Metric settings (every evaluation job); bootstrap settings reach only the summary, so
        changing the number of replicates does not re-evaluate every model."""
        return json.dumps({k: self.config["evaluation"][k] for k in ("horizons", "tau_quantile")}, sort_keys=True)

    @property
    def bootstrap_options(self) -> str:
        return json.dumps({k: self.config["evaluation"][k] for k in ("n_boot", "ci", "seed")}, sort_keys=True)

    def recorded_config(self) -> dict[str, Any]:
        """The config the provenance record keeps: everything that decides results, without the
        execution settings (:data:`EXECUTION`, :data:`EMBEDDING_EXECUTION`), which are no rerun
        trigger anywhere else either; how each job ran is in provenance/jobs.tsv."""
        import copy

        out = copy.deepcopy(self.config)
        for key in EMBEDDING_EXECUTION:
            out.get("embedding", {}).pop(key, None)
        for key in EXECUTION:
            out.get("model", {}).get("train", {}).pop(key, None)
        return out

    # ------------------------------------------------------------------ targets

    @cached_property
    def predict_runs(self) -> list[tuple[str, int, list[str]]]:
        """(model, fold, modalities) of every trained model the predict section applies."""
        source = self.config["predict"]["from"]
        if not source:
            return []
        inputs = [v for k, v in config_paths(self.config) if k.split(".")[-1] not in ("results_dir", "from", "checkpoint")]
        refuse_overwriting_the_source(source, self.out, self.config["results_dir"], self.demo_dir, inputs)
        return predict_runs(self.config["predict"]["models"], source, self.modalities)

    def targets(self, provenance: bool = True) -> list[str]:
        """Every file the run ends with (``provenance=False``: all but the provenance record, which
        reads the others' benchmarks and so comes last)."""
        out = self.out
        targets = [f"{out}/cohort/patients.parquet", f"{out}/cohort/folds.parquet", f"{out}/qc/failed.tsv"]
        if self.config["predict"]["from"]:  # external validation: models of another run applied here, nothing trained
            targets.append(f"{out}/predict/summary.tsv")
        else:
            if self.models:
                targets += [f"{out}/summary/metrics.tsv", f"{out}/summary/figures/risk_groups.png"]
            targets += [f"{out}/heatmaps/{m}/fold{k}" for m in self.heatmap_models for k in self.folds]
            targets += [f"{out}/attention/{m}/fold{k}" for m in self.drawn_models for k in self.folds]
        return targets + ([f"{out}/provenance/run.json"] if provenance else [])

    def provenance_inputs(self) -> list[str]:
        """The run's input files and folders: outcomes, tables, slides or feature files."""
        paths = [self.config["cohort"]["labels"]["path"]] + [self.modalities[m]["path"] for m in self.prepared_modalities]
        return sorted(set(paths + self.slide_source_paths()))


def _check(plan: Plan) -> None:
    """The config's combinations that the schema cannot refuse, each one line naming the key."""
    asked = plan.config["evaluation"].get("baselines")
    needs_bags = [k.name for k in by_role("baseline") if k.bags_only]
    if asked is not None and not any(plan.kind(m).bags for m in plan.modalities) and any(b in needs_bags for b in asked):
        name = next(b for b in asked if b in needs_bags)
        raise ConfigError(f"evaluation.baselines names {name}, which needs a bag modality (slides, a series, images); this config has none "
                          f"(remove {name} from the list)")
    other_task = [b for b in plan.baselines if b in {n for t in TASK_BASELINES.values() for n in t}
                  and b not in TASK_BASELINES[plan.task]]
    if other_task:
        raise ConfigError(f"evaluation.baselines {other_task} do not fit task {plan.task!r}; "
                          f"use {list(TASK_BASELINES[plan.task])} (and the trained baselines, {ENSEMBLE})")
    if EARLY in plan.modalities and plan.baseline_sources:
        raise ConfigError(f"a modality named '{EARLY}' clashes with the early-fusion baseline; rename the modality")
    for run in plan.trained.values():
        own = plan.trained_settings(run.kind)
        missing = [k for k in run.kind.files if not own.get(k)]
        if missing:
            raise ConfigError(f"config key 'trained_baselines.{run.kind.name}.{missing[0]}': {run.kind.name} needs it "
                              f"({run.kind.settings[missing[0]].get('description', 'a file')})")
    for kind in by_role("baseline"):
        problem = kind.problem(plan.families) if kind.scope == "fold" and asked and kind.name in asked else None
        if problem:
            shown = ", ".join(f"{m} ({f})" for m, f in plan.families.items())
            raise ConfigError(f"evaluation.baselines names {kind.name}, which {problem}; this config's modalities are "
                              f"{shown} (remove {kind.name} from the list)")
    drawn = plan.config["evaluation"]["heatmaps"]
    known = sorted({*plan.attention_models, *plan.drawable_models})
    unknown = [m for m in drawn if m not in known] if isinstance(drawn, list) else []
    if unknown:
        raise ConfigError(f"evaluation.heatmaps names {unknown[0]}, which is not a model of this run with attention "
                          f"over a slide or image modality; choose from {known} (or true: all of them)")
    plan.folds  # noqa: B018  (a fold file that cannot be read fails here, when the DAG is built)


def _fold_files(path: str | None) -> list[str]:
    if not path:
        raise ConfigError("folds.method is 'file' but folds.path is not set; point it at a splits_<k>.csv folder "
                          "or a fold table")
    try:
        return fold_files(path)
    except (LegoError, OSError) as exc:
        raise ConfigError(f"folds.path: {exc}") from None


def _fold_count(path: str | None) -> int:
    _fold_files(path)
    return n_folds_in(path)
