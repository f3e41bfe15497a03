# Shared set-up: config validation, output layout, wildcard constraints and input functions.
import json
import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from lego.config import load_schema, read_yaml, validate_config
from lego.data.fold_data import KINDS, is_slide_kind
from lego.data.folds import fold_files, n_folds_in
from lego.data.labels import source_outcome_columns
from lego.errors import ConfigError, LegoError
from lego.evaluation.names import (DEFAULT_BASELINES, OTHER_BASELINES, TASK_BASELINES, baseline_name, block_modality,
                                   block_name, model_folder)
from lego.selection import grid_candidates
from helpers import (cli_args, print_summary, put_python_bin_on_path, reprint_summary_when_cached, report_failed_jobs,
                     slide_table, warn_unmatched)

put_python_bin_on_path()

try:
    for _path in workflow.configfiles:  # Snakemake's YAML reader keeps the last of duplicate keys
        read_yaml(_path)
    validate_config(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

OUT = f"{config['results_dir']}/{config['cohort']['name']}"
DEMO_DIR = f"{config['results_dir']}/demo_input"
MODALITIES = config["modalities"]
OUTCOMES = source_outcome_columns(config["cohort"]["labels"])  # never features: prepare-modality leaves them out
WSI = [m for m, s in MODALITIES.items() if is_slide_kind(s["kind"])]  # slide kinds (lego.data.fold_data.KINDS)
TABULAR = [m for m in MODALITIES if m not in WSI]  # kinds prepared from a table


def feature_set(modality):
    """Directory name of a WSI modality's features: its encoder, or imported-<modality>."""
    spec = MODALITIES[modality]
    return f"imported-{modality}" if spec.get("features_dir") else spec["encoder"]


TRAIN_RUN = config["model"]["train"]
_folds = config["folds"]
if _folds["method"] == "file":
    if not _folds.get("path"):
        raise WorkflowError("folds.method is 'file' but folds.path is not set; point it at a splits_<k>.csv folder or a fold table")
    try:  # the number of folds must be known when the DAG is built
        FOLD_SOURCES = fold_files(_folds["path"])
        FOLDS = list(range(n_folds_in(_folds["path"])))
    except (LegoError, OSError) as exc:
        raise WorkflowError(f"folds.path: {exc}") from None
elif _folds["method"] == "kfold":
    FOLD_SOURCES, FOLDS = [], list(range(_folds["n_folds"] * _folds["repeats"]))
else:
    FOLD_SOURCES = []
    FOLDS = list(range(len(_folds["seeds"]) if _folds.get("seeds") else _folds["n_folds"]))
_build = config["model"]["build"]
MODELS = [block_name(m) for m in MODALITIES] if "blocks" in _build else []
# MM-Lego variants (model name -> build keyword); "lego" is the one chosen on validation per fold.
VARIANTS = {"merge": "merge", "merge-tuned": "tuned_merge", "fuse": "fuse"}
LEGO_VARIANTS = [name for name, key in VARIANTS.items() if key in _build] if len(MODALITIES) >= 2 else []
MODELS += LEGO_VARIANTS
if len(LEGO_VARIANTS) >= 2:
    MODELS.append("lego")

EVALUATION = config["evaluation"]
# Metric settings reach every evaluation job; bootstrap settings only the summary (so changing
# the number of replicates does not re-evaluate every model).
METRIC_OPTIONS = json.dumps({k: EVALUATION[k] for k in ("horizons", "tau_quantile")}, sort_keys=True)
BOOTSTRAP_OPTIONS = json.dumps({k: EVALUATION[k] for k in ("n_boot", "ci", "seed")}, sort_keys=True)
_TASK_BASELINES = {task: list(methods) for task, methods in TASK_BASELINES.items()}
_baselines = EVALUATION.get("baselines")
if _baselines is not None and "abmil" in _baselines and not WSI:
    raise WorkflowError("evaluation.baselines names abmil, which needs a slide modality; this config has none "
                        "(remove abmil from the list)")
if _baselines is None:
    _baselines = list(DEFAULT_BASELINES[config["cohort"]["task"]]) + list(OTHER_BASELINES)
_wrong = [b for b in _baselines if b not in OTHER_BASELINES and b not in _TASK_BASELINES[config["cohort"]["task"]]]
if _wrong:
    raise WorkflowError(
        f"evaluation.baselines {_wrong} do not fit task {config['cohort']['task']!r}; "
        f"use {_TASK_BASELINES[config['cohort']['task']]} (and ensemble)"
    )
BASELINE_METHODS = [b for b in _baselines if b not in OTHER_BASELINES]
BASELINE_SOURCES = []
if BASELINE_METHODS:
    BASELINE_SOURCES += list(MODALITIES) if "each" in EVALUATION["baseline_inputs"] else []
    BASELINE_SOURCES += ["early"] if "early" in EVALUATION["baseline_inputs"] and len(MODALITIES) >= 2 else []
if "early" in MODALITIES and BASELINE_SOURCES:
    raise WorkflowError("a modality named 'early' clashes with the early-fusion baseline; rename the modality")
ALL_MODELS = MODELS + [baseline_name(m, s) for s in BASELINE_SOURCES for m in BASELINE_METHODS]
ALL_MODELS += [baseline_name("abmil", m) for m in WSI] if "abmil" in _baselines else []
if "ensemble" in _baselines and "blocks" in _build and len(MODALITIES) >= 2:
    ALL_MODELS.append("ensemble")


def baseline_modalities(source):
    return list(MODALITIES) if source == "early" else [source]


def baseline_specs(source):
    """What a baseline needs of each modality: its kind, categories and in-fold preprocessing."""
    keys = ("kind", "categorical", "preprocess")
    return {m: {k: MODALITIES[m][k] for k in keys if MODALITIES[m].get(k)} for m in baseline_modalities(source)}


def qc_thumbnails(wildcards):
    """Tissue images of the first slides (by ID) for the QC figure; none without a WSI modality."""
    if not any(not MODALITIES[m].get("features_dir") for m in WSI):
        return []  # no slide is segmented (no WSI modality, or imported features only)
    ids = sorted(slides()["slide_id"])[: EVALUATION["thumbnails"]]
    return [f"{OUT}/slides/{s}/tissue.png" for s in ids]


def block_spec(modality):
    """Everything one modality's block training depends on (and nothing about other modalities)."""
    model = config["model"]
    spec = {**model["block"], **model["train"], "n_bins": model["n_bins"]}
    for key in ("device", "threads", "gpus"):
        spec.pop(key)
    spec["encoder"] = KINDS[MODALITIES[modality]["kind"]].encoder
    spec.update(MODALITIES[modality].get("block", {}))
    if MODALITIES[modality].get("preprocess"):
        spec["preprocess"] = MODALITIES[modality]["preprocess"]
    return spec


def block_grid(modality):
    """The modality's hyper-parameter candidates (a list of overrides; one empty dict without a grid)."""
    grid = MODALITIES[modality].get("block", {}).get("grid", config["model"].get("grid"))
    return grid_candidates(grid)


def candidate_spec(modality, candidate):
    """block_spec with one grid candidate applied (select_k goes into the table preprocessing)."""
    spec = block_spec(modality)
    spec.pop("grid", None)
    overrides = dict(block_grid(modality)[int(candidate)])
    if "select_k" in overrides:
        spec["preprocess"] = {**spec.get("preprocess", {}), "select_k": overrides.pop("select_k")}
    spec.update(overrides)
    return spec


def block_candidates(wildcards):
    """Every grid candidate's weights, config and history (select_block reads all three)."""
    n = len(block_grid(wildcards.modality))
    return [f"{OUT}/blocks/{wildcards.modality}/fold{wildcards.fold}/candidates/c{i}/{f}" for i in range(n)
            for f in ("model.safetensors", "config.json", "history.json")]


def grows(mem_mb):
    """Memory that doubles, triples... on each retry (``retries`` in a profile): a job killed for
    memory is resubmitted with more instead of failing the same way."""
    return lambda wildcards, attempt: mem_mb * attempt


def encoder_checkpoint(wildcards):
    """The patch encoder's local checkpoint file, when one is configured (a replaced file re-embeds)."""
    path = config["encoders"].get(wildcards.encoder, {}).get("checkpoint")
    return [path] if path else []


def named_paths(names, paths):
    """MODALITY=PATH arguments for the lego CLI, every path shell-quoted."""
    return " ".join(f"{m}={shlex.quote(p)}" for m, p in zip(names, paths))


def fold_blocks(wildcards):
    """Every selected block of a fold: weights, config and history (all are read)."""
    return [f"{OUT}/blocks/{m}/fold{wildcards.fold}/{f}" for m in MODALITIES
            for f in ("model.safetensors", "config.json", "history.json")]


def block_dirs(input_files):
    return " ".join(shlex.quote(os.path.dirname(p)) for p in input_files if p.endswith("model.safetensors"))


def fuse_spec():
    fuse = dict(config["model"]["fuse"])
    return {**fuse, "alpha": config["model"]["train"]["alpha"], "patience": fuse["epochs"],
            "head_method": config["model"]["merge"]["head"]}


def model_modalities(model):
    return [block_modality(model)] if block_modality(model) is not None else list(MODALITIES)


def model_dir(wildcards):
    return model_folder(wildcards.model, wildcards.fold, OUT)


def model_weights(wildcards):
    return f"{model_dir(wildcards)}/model.safetensors"


def model_config(wildcards):
    return f"{model_dir(wildcards)}/config.json"


def model_data(wildcards):
    return [f"{OUT}/modalities/{m}.parquet" for m in model_modalities(wildcards.model)]


def _alternatives(names):
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    slide=r"[^/]+",
    tabular=_alternatives(TABULAR),
    wsi=_alternatives(WSI),
    encoder=r"[A-Za-z0-9_]+",
    modality=_alternatives(list(MODALITIES)),
    model=r"block-[^/]+|merge|merge-tuned|fuse",
    candidate=r"\d+",
    source=_alternatives(list(MODALITIES) + ["early"]),
    fold=r"\d+",


def slides():
    """Slide table from the index_slides checkpoint (re-read when it changes)."""
    output = checkpoints.index_slides.get().output
    warn_unmatched(output.unmatched)
    return slide_table(output.slides)


def slide_path(wildcards):
    table = slides()
    match = table.loc[table["slide_id"] == wildcards.slide, "path"]
    if match.empty:
        raise WorkflowError(f"slide {wildcards.slide!r} is not in {OUT}/cohort/slides.parquet")
    return match.iloc[0]


def slide_files(modality):
    """The slide files behind a WSI modality (none for imported features: nothing to read)."""
    return [] if MODALITIES[modality].get("features_dir") else sorted(slides()["path"])


def slide_features(wildcards):
    """Every slide's feature file of one WSI modality."""
    fs = feature_set(wildcards.wsi)
    return [f"{OUT}/features/{fs}/{s}.h5" for s in slides()["slide_id"]]


def slide_sources():
    """Where index_slides looks: slides.dir/list, else a WSI modality's existing feature files."""
    sl = config["slides"]
    if sl["dir"] or sl["list"]:
        return {"dir": [sl["dir"]] if sl["dir"] else None, "list": sl["list"], "ext": sl["extensions"]}
    imported = [MODALITIES[m]["features_dir"] for m in WSI if MODALITIES[m].get("features_dir")]
    # Every imported folder is indexed: a slide missing from one of them is that modality's failed
    # slide (rule import_features records it), not a missing input that stops the DAG.
    return {"dir": imported, "list": None, "ext": [".h5"]} if imported else {"dir": None, "list": None, "ext": []}


def imported_feature_file(wildcards):
    """Where a slide's feature file sits in its imported modality's features_dir."""
    return os.path.join(MODALITIES[wildcards.wsi]["features_dir"], f"{wildcards.slide}.h5")


def slide_source_paths():
    """The folders and list file index_slides reads (its declared inputs)."""
    src = slide_sources()
    return [p for p in (src["dir"] or []) + [src["list"]] if p]


def mpp_arg():
    fallback = config["slides"]["mpp_fallback"]
    return f"--mpp-fallback {fallback}" if fallback is not None else ""


PREDICT_FROM = config["predict"]["from"]


def _predict_runs():
    """(model, fold, modalities) of every trained model the predict section applies."""
    runs = []
    for model in config["predict"]["models"]:
        folds = sorted(int(p.name[4:]) for p in Path(model_folder(model, 0, PREDICT_FROM)).parent.glob("fold*")
                       if p.name[4:].isdigit() and (p / "config.json").is_file())
        if not folds:
            raise WorkflowError(f"predict.from: no trained {model} under {PREDICT_FROM}; run the training config first")
        for fold in folds:
            trained = json.loads(Path(model_folder(model, fold, PREDICT_FROM), "config.json").read_text())
            mods = [trained["modality"]] if trained["kind"] == "block" else sorted(trained["blocks"])
            missing = [m for m in mods if m not in MODALITIES]
            if missing:
                raise WorkflowError(f"predict: {model} fold {fold} needs modalities {missing}, which this config lacks")
            runs.append((model, fold, mods))
    return runs


PREDICT_RUNS = _predict_runs() if PREDICT_FROM else []


def predict_modalities(wildcards):
    """The modalities a trained model applied in predict mode reads."""
    return next(m for model, fold, m in PREDICT_RUNS if model == wildcards.model and fold == int(wildcards.fold))


def all_targets():
    targets = [f"{OUT}/cohort/patients.parquet", f"{OUT}/cohort/folds.parquet", f"{OUT}/qc/failed.tsv"]
    if PREDICT_FROM:  # external validation: models of another run applied here, nothing trained
        return targets + [f"{OUT}/predict/summary.tsv", f"{OUT}/provenance/run.json"]
    if MODELS:
        targets += [f"{OUT}/summary/metrics.tsv", f"{OUT}/summary/figures/risk_groups.png"]
    if EVALUATION["heatmaps"] and "blocks" in _build:
        targets += expand(f"{OUT}/heatmaps/{{m}}/fold{{fold}}", m=WSI, fold=FOLDS)
    if EVALUATION["heatmaps"] and "abmil" in _baselines:
        targets += expand(f"{OUT}/heatmaps/abmil-{{m}}/fold{{fold}}", m=WSI, fold=FOLDS)
    return targets + [f"{OUT}/provenance/run.json"]


def provenance_inputs():
    """The run's input files and folders: outcomes, tabular modalities, slides or feature files."""
    paths = [config["cohort"]["labels"]["path"]] + [MODALITIES[m]["path"] for m in TABULAR]
    paths += slide_source_paths()
    return sorted(set(paths))
