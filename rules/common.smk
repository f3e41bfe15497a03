# Shared set-up: the config validated, the run planned (lego.plan: which modalities, folds, models
# and baselines, and what each job is given), wildcard constraints and the input functions that
# need the slide index (a checkpoint).
import json
import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from lego.config import load_schema, read_yaml, validate_config
from lego.data.slides_index import named_file
from lego.errors import ConfigError
from lego.evaluation.names import CHOSEN, ENSEMBLE, METRICS_FILE, baseline_name
from lego.models.model_kinds import BLOCK, FUSE, MERGE, MERGE_TUNED
from lego.plan import EMBEDDING_EXECUTION, MODEL_FILES, Plan  # the model folder's files (lego.models.model_kinds)
from helpers import (
    by_content,
    cancel_rescheduling_timers,
    cancel_rescheduling_timers_at_exit,
    cli_args,
    content_digest,
    print_summary,
    put_python_bin_on_path,
    reprint_summary_when_cached,
    report_failed_jobs,
    slide_table,
    warn_unmatched,
)

put_python_bin_on_path()
cancel_rescheduling_timers_at_exit()

try:
    for _path in workflow.configfiles:  # Snakemake's YAML reader keeps the last of duplicate keys
        read_yaml(_path)
    validate_config(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
    PLAN = Plan(config)
    PLAN.predict_runs
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

OUT = PLAN.out
DEMO_DIR = PLAN.demo_dir
MODALITIES = PLAN.modalities
TRAIN_RUN = config["model"]["train"]
# Where a training job runs, not what it computes (lego.plan.EXECUTION) reaches a job through
# `threads:` and `resources: lego_device`, never `params:` (a rerun trigger):
# "--device {resources.lego_device} --threads {threads}" in its shell command.


PRODUCED = (OUT, DEMO_DIR)  # folders the workflow writes; other inputs are followed by content


def external(paths):
    """Input files from outside the workflow, followed by content, not modification time."""
    return by_content(paths, PRODUCED)


def digest(paths):
    """The content digest of the same files, for ``params:`` (a rerun trigger)."""
    return content_digest(paths, PRODUCED)


def grows(mem_mb):
    """Memory that doubles, triples... on each retry (``retries`` in a profile): a job killed for
    memory is resubmitted with more instead of failing the same way."""
    return lambda wildcards, attempt: mem_mb * attempt


def quoted(paths):
    """Paths as one shell word each."""
    return " ".join(shlex.quote(str(p)) for p in paths)


def folders(paths):
    """The folders of the model files among ``paths`` (one per model), shell-quoted."""
    return quoted(os.path.dirname(p) for p in paths if p.endswith(MODEL_FILES[0]))


def named_paths(names, paths):
    """MODALITY=PATH arguments for the lego CLI, every path shell-quoted."""
    return " ".join(f"{m}={shlex.quote(p)}" for m, p in zip(names, paths))


def model_files(folder, history=True):
    """A model folder's weights and config (and training history)."""
    return [f"{folder}/{f}" for f in MODEL_FILES[: 3 if history else 2]]


def every_fold_model_files(name):
    """The weights and config of a model's every fold: the inputs of a job that handles all its folds."""
    return [f for k in PLAN.folds for f in model_files(PLAN.model_folder(name, k), history=False)]


def encoder_checkpoint(wildcards):
    """The patch encoder's local checkpoint file, when one is configured (a replaced file re-embeds)."""
    path = config["encoders"].get(wildcards.encoder, {}).get("checkpoint")
    return [path] if path else []


def mpp_arg():
    fallback = config["slides"]["mpp_fallback"]
    return f"--mpp-fallback {fallback}" if fallback is not None else ""


def _alternatives(names):
    return "|".join(map(re.escape, names)) or "(?!)"


wildcard_constraints:
    slide=r"[^/]+",
    prepared=_alternatives(PLAN.prepared_modalities),
    wsi=_alternatives(PLAN.slide_modalities),
    encoder=r"[A-Za-z0-9_]+",
    modality=_alternatives(list(MODALITIES)),
    model=_alternatives(PLAN.evaluated + [m for m, _, _ in PLAN.predict_runs]),
    trained=_alternatives(list(PLAN.trained)),
    drawn=_alternatives(list(PLAN.heatmap_models)),
    pictured=_alternatives(list(PLAN.drawn_models)),
    candidate=r"\d+",
    source=_alternatives(PLAN.baseline_sources),
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
    """The slide files behind a slide modality (none for imported features: nothing to read)."""
    return [] if MODALITIES[modality].get("features_dir") else sorted(slides()["path"])


def slide_features(modality):
    """Every slide's feature file of one slide modality."""
    fs = PLAN.feature_set(modality)
    return [f"{OUT}/features/{fs}/{s}.h5" for s in slides()["slide_id"]]


def qc_thumbnails(wildcards):
    """Tissue images of the first slides (by ID) for the QC figure; none without segmented slides."""
    if not PLAN.segments_slides():
        return []
    ids = sorted(slides()["slide_id"])[: config["evaluation"]["thumbnails"]]
    return [f"{OUT}/slides/{s}/tissue.png" for s in ids]


def imported_feature_file(wildcards):
    """Where a slide's feature file sits in its imported modality's features_dir (names matched in NFC)."""
    return named_file(MODALITIES[wildcards.wsi]["features_dir"], wildcards.slide)


def predict_modalities(wildcards):
    """The modalities a trained model applied in predict mode reads."""
    return next(m for model, fold, m in PLAN.predict_runs if model == wildcards.model and fold == int(wildcards.fold))


def all_targets():
    return PLAN.targets()
