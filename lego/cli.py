"""lego: one sub-command per pipeline stage of the MM-Lego workflow.

The Snakemake rules call these, and users can run any stage by hand on one slide or one table,
e.g. ``lego segment --slide S.svs --out-tissue t.parquet --out-png t.png``. Bad input exits with
status 2 and a one-line message naming the file and the fix (no traceback); ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

import lego
from lego.errors import InputError, LegoError
from lego.evaluation import names
from lego.slides.params import SLIDE_EXTENSIONS, PatchParams, TissueParams

log = logging.getLogger("lego")


# --------------------------------------------------------------------------- commands


def cmd_make_demo(a) -> None:
    try:
        import imagecodecs  # noqa: F401  (tifffile's JPEG codec: missing, it fails only at the first slide)

        from lego.demo.cohort import make_demo_cohort
    except ImportError as exc:
        raise LegoError(f"the demo needs the 'demo' extra ({exc.name} is not installed): "
                        "pip install -e '.[demo]'") from None

    summary = make_demo_cohort(a.out, n_patients=a.patients, seed=a.seed, workers=a.workers, prefix=a.prefix)
    log.info("demo cohort written to %s: %s", a.out, json.dumps(summary))


def cmd_ingest_labels(a) -> None:
    from lego.data.labels import censorship_column_of, ingest_labels
    from lego.io import write_parquet

    labels = ingest_labels(
        a.table, task=a.task, id_column=a.id_column, time_column=a.time_column,
        censorship_column=censorship_column_of(a.censorship_column, a.event_column),
        event_column=a.event_column or None, label_column=a.label_column,
    )
    write_parquet(labels, a.out, metadata={"source": str(a.table), "task": a.task})
    if a.task == "survival":
        log.info("%d patients, %d events", len(labels), int(labels["event"].sum()))
    else:
        log.info("%d patients, classes %s", len(labels), labels["label"].value_counts().to_dict())


def cmd_index_slides(a) -> None:
    import pandas as pd

    from lego.data.slides_index import index_slides
    from lego.io import read_frame, write_parquet, write_tsv

    if not a.dir and not a.list:
        log.warning("no --dir or --list: writing an empty slide index (a cohort without slides)")
    labels = read_frame(a.labels, "labels")
    slides, unmatched = index_slides(
        a.dir, a.list, a.ext, a.prefix_length, a.regex, patients=labels["patient_id"].tolist()
    )
    write_parquet(slides, a.out)
    write_tsv(unmatched, a.unmatched)
    no_slide = len(set(labels["patient_id"]) - set(slides["patient_id"]))
    log.info("%d slides for %d patients; %d unmatched slides; %d patients without a slide",
             len(slides), slides["patient_id"].nunique(), len(unmatched), no_slide)


def _params_args(p, cls, choices: dict[str, list[str]] | None = None) -> None:
    """One flag per field of a settings dataclass, its type and default taken from the field.

    The type is the field's annotation, not its default's: ``seg_downsample: float = 32`` must
    accept 16.5."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        p.add_argument("--" + f.name.replace("_", "-"), type=hints[f.name], default=f.default,
                       choices=(choices or {}).get(f.name))


def _params_from(a, cls):
    return cls(**{f.name: getattr(a, f.name) for f in dataclasses.fields(cls)})


def _report(slide: str, status: str) -> None:
    if status == "ok":
        log.info("%s: ok", slide)
    else:
        log.warning("%s: FAILED, recorded: %s", slide, status)


def cmd_segment(a) -> None:
    from lego.slides.stages import run_segment

    _report(a.slide, run_segment(a.slide, a.out_tissue, a.out_png, _params_from(a, TissueParams), a.mpp_fallback, a.record_failure))


def cmd_extract(a) -> None:
    from lego.slides.stages import run_extract

    params = _params_from(a, PatchParams)
    _report(a.slide, run_extract(a.slide, a.tissue, a.out, params, a.mpp_fallback, a.record_failure))


def cmd_embed(a) -> None:
    from lego.slides.encoders import create_encoder
    from lego.slides.stages import run_embed

    _threads(a.threads)
    encoder = create_encoder(a.encoder, a.checkpoint)
    status = run_embed(
        a.slide, a.patches, encoder, a.out, a.record_failure, batch_size=a.batch_size,
        num_workers=a.num_workers, device=a.device, mpp_fallback=a.mpp_fallback, progress=a.progress,
    )
    _report(a.slide, status)


def cmd_import_features(a) -> None:
    from lego.slides.features import import_feature_file, write_failed_bag

    src = Path(a.src)
    if not a.slide_name.strip():
        raise InputError("--slide-name is empty; name the slide (its file name without the extension)")
    if not src.is_file():
        if not a.record_failure:
            raise LegoError(f"{src}: feature file not found")
        write_failed_bag(a.out, a.slide_name, f"no feature file {src}", stage="import_features")
        log.warning("%s: FAILED, recorded: no feature file", a.slide_name)
        return
    try:
        bag = import_feature_file(src, a.out, a.slide_name, a.mpp)
    except Exception as exc:  # any unreadable file is one failed slide in a batch, not a stopped run
        if not a.record_failure:
            raise
        reason = str(exc) if isinstance(exc, LegoError) else f"{src}: unreadable feature file ({type(exc).__name__}: {exc})"
        write_failed_bag(a.out, a.slide_name, reason, stage="import_features")
        log.warning("%s: FAILED, recorded: %s", a.slide_name, reason)
        return
    log.info("%s: imported %d x %d features", a.slide_name, *bag.features.shape)


def cmd_export_features(a) -> None:
    from lego.slides.features import read_feature_bag
    from lego.slides.interop import write_clam_pt, write_stamp

    bag = read_feature_bag(a.src)
    if not bag.ok or len(bag.features) == 0:
        raise InputError(f"{a.src}: a failed slide ({bag.attrs.get('reason', 'no features')}); nothing to export")
    if a.format == "clam-pt":
        write_clam_pt(bag.features, a.out)
    else:
        if bag.coords_attrs.get("unit", "px") != "px":
            raise InputError(f"{a.src}: coordinates are not level-0 pixels (unit {bag.coords_attrs.get('unit')!r}); "
                             "re-import it with --mpp")
        write_stamp(bag.features, bag.coords, {**bag.attrs, **bag.coords_attrs}, a.out, a.src)
    log.info("%s: %d x %d features written as %s to %s", a.src, *bag.features.shape, a.format, a.out)


def cmd_heatmaps(a) -> None:
    from lego.evaluation.heatmaps import run_heatmaps

    _threads(a.threads)
    run_heatmaps(a.model_dir, a.manifest, a.folds, a.out_dir, a.slides, a.subset)


def cmd_encoders(a) -> None:
    from lego.slides.encoders import encoder_info

    print(f"{'encoder':18s} {'dim':>5s} {'input':>6s}  weights")
    for name, info in encoder_info().items():
        size = f"{info['input_px']} px" if info["input_px"] else "any"
        print(f"{name:18s} {info['dim'] or '?':>5} {size:>6s}  {info['weights']}")


def cmd_prepare_modality(a) -> None:
    from lego.io import write_parquet
    from lego.tabular.modality import prepare_modality

    df = prepare_modality(a.table, a.modality, a.id_column, a.include, a.exclude, a.columns, a.categorical,
                          a.outcome_columns)
    write_parquet(df, a.out, metadata={"modality": a.modality, "source": str(a.table)})
    log.info("modality %s: %d patients x %d features", a.modality, len(df), df.shape[1] - 1)


def cmd_make_folds(a) -> None:
    import pandas as pd

    from lego.data.folds import make_folds
    from lego.io import read_frame, write_parquet

    folds = make_folds(read_frame(a.labels, "labels"), a.method, a.n_folds, a.seeds, tuple(a.fractions), a.stratify,
                       a.repeats, a.path)
    write_parquet(folds, a.out, metadata={"method": a.method, "seeds": a.seeds, "fractions": a.fractions,
                                          "repeats": a.repeats, "path": a.path})
    log.info("%s", folds.groupby(["fold", "subset"]).size().unstack().to_string())


def cmd_feature_manifest(a) -> None:
    import pandas as pd

    from lego.data.cohort_table import feature_manifest
    from lego.io import read_frame, write_parquet

    slides = read_frame(a.slides, "slides")
    files = {s: str(Path(a.features_dir) / f"{s}.h5") for s in slides["slide_id"]}
    manifest = feature_manifest(slides, files)
    write_parquet(manifest, a.out, metadata={"modality": a.modality})
    log.info("modality %s: %d slides ok, %d failed", a.modality, (manifest.status == "ok").sum(), (manifest.status != "ok").sum())


def _named_paths(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise LegoError(f"expected NAME=PATH, got {item!r}")
        if name in out:  # the last one would silently win: a block fed another modality's file
            raise LegoError(f"{name!r} is given twice ({out[name]} and {path}); give each name once")
        out[name] = path
    return out


def cmd_cohort_table(a) -> None:
    import pandas as pd

    from lego.data.cohort_table import build_patients_table
    from lego.io import read_frame, write_parquet

    tabular, slides = _named_paths(a.tabular), _named_paths(a.wsi)
    both = sorted(set(tabular) & set(slides))
    if both:
        raise LegoError(f"modality {both[0]!r} is given as tabular and as wsi; give each name once")
    tab = {k: read_frame(v, "modality") for k, v in tabular.items()}
    wsi = {k: read_frame(v, "manifest") for k, v in slides.items()}
    patients = build_patients_table(read_frame(a.labels, "labels"), tab, wsi)
    write_parquet(patients, a.out)
    has = [c for c in patients.columns if c.startswith("has_")]
    log.info("%d patients; modality coverage: %s", len(patients), patients[has].sum().to_dict())


def cmd_collect_qc(a) -> None:
    import pandas as pd

    from lego.io import read_frame, write_tsv

    parts = []
    for name, path in _named_paths(a.manifest).items():
        m = read_frame(path, "manifest")
        bad = m[m["status"] != "ok"]
        stage = bad["stage"] if "stage" in bad.columns else "unknown"  # manifests of releases before the field
        parts.append(pd.DataFrame({"slide_id": bad["slide_id"], "patient_id": bad["patient_id"], "modality": name,
                                   "stage": stage, "reason": bad["reason"]}))
    for path in a.unmatched or []:
        u = read_frame(path, "slide-QC")
        if len(u):
            parts.append(pd.DataFrame({"slide_id": u["slide_id"], "patient_id": u["patient_id"], "modality": "-",
                                       "stage": "index_slides", "reason": u["reason"]}))
    cols = ["slide_id", "patient_id", "modality", "stage", "reason"]
    failed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    write_tsv(failed[cols].sort_values(["slide_id", "modality"]), a.out)
    log.info("%d slide problem(s) recorded in %s", len(failed), a.out)


def cmd_train_block(a) -> None:
    from lego.stages import train_block

    _threads(a.threads)
    train_block(a.modality, a.kind, a.data, a.labels, a.folds, a.fold, a.task, json.loads(a.spec), a.out_dir,
                a.categorical, a.device)


def cmd_merge(a) -> None:
    from lego.stages import merge

    merge(a.blocks, a.method, a.head, a.out_dir)


def cmd_select_block(a) -> None:
    from lego.selection import select_candidate

    select_candidate(a.candidates, a.out_dir, a.rule)


def cmd_merge_tuned(a) -> None:
    from lego.stages import merge_tuned

    _threads(a.threads)
    merge_tuned(a.blocks, _named_paths(a.data), a.labels, a.folds, a.out_dir, a.head, a.search)


def cmd_select_variant(a) -> None:
    from lego.stages import select_variant

    select_variant(a.metrics, a.out_dir, a.name, a.rule)


def cmd_fuse(a) -> None:
    from lego.stages import fuse

    _threads(a.threads)
    fuse(a.blocks, _named_paths(a.data), a.labels, a.folds, json.loads(a.spec), a.out_dir, a.device)


def _eval_options(a):
    from lego.evaluation.stages import EvalOptions

    return EvalOptions.from_json(a.evaluation)


def cmd_evaluate(a) -> None:
    from lego.stages import evaluate

    _threads(a.threads)
    result = evaluate(a.model_dir, _named_paths(a.data), a.labels, a.folds, a.out_dir, a.name, _eval_options(a))
    log.info("%s fold %s: test %s | val %s", a.name, result["fold"], result["test"], result["val"])


def cmd_predict(a) -> None:
    from lego.stages import predict_cohort

    predict_cohort(a.model_dir, _named_paths(a.data), a.out_dir, a.labels, _eval_options(a), a.name)


def cmd_predict_summary(a) -> None:
    from lego.evaluation.summary import external_summary
    from lego.io import write_tsv

    table = external_summary(a.metrics)
    write_tsv(table, a.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def cmd_baselines(a) -> None:
    from lego.evaluation.stages import run_baselines

    _threads(a.threads)
    specs = json.loads(a.modalities)
    for name, path in _named_paths(a.data).items():
        if name not in specs:
            raise InputError(f"--data names modality {name!r} but --modalities does not describe it")
        specs[name]["path"] = path
    missing = [m for m in specs if "path" not in specs[m]]
    if missing:
        raise InputError(f"--modalities describes {missing} but --data gives no file for them")
    results = run_baselines(a.methods, a.source, specs, a.labels, a.folds, a.fold, a.task, a.n_bins, _eval_options(a),
                            a.out_root, a.seed)
    for name, r in results.items():
        log.info("%s fold %s: chose %s | test %s", name, a.fold, r["baseline"]["chosen"], r["test"])


def cmd_abmil(a) -> None:
    from lego.evaluation.abmil import run_abmil

    _threads(a.threads)
    result = run_abmil(a.modality, a.data, a.labels, a.folds, a.fold, a.task, json.loads(a.spec), _eval_options(a),
                       a.out_dir, a.device)
    log.info("abmil-%s fold %s: test %s", a.modality, a.fold, result["test"])


def cmd_ensemble(a) -> None:
    from lego.evaluation.stages import run_ensemble

    result = run_ensemble(a.block_metrics, a.labels, a.folds, _eval_options(a), a.out_dir)
    log.info("ensemble of %s, fold %s: test %s", result["blocks"], result["fold"], result["test"])


def cmd_summarise(a) -> None:
    from lego.evaluation.summary import summarise

    opts = _eval_options(a)
    tables = summarise(a.metrics, a.out_dir, opts.n_boot, opts.ci, opts.seed)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    print(tables["metrics"].drop(columns="missing").to_string(index=False, float_format=fmt))
    print(tables["comparisons"].to_string(index=False, float_format=fmt))


def cmd_figures(a) -> None:
    import pandas as pd

    from lego.evaluation.figures import fold_dots, merge_vs_ensemble, qc_thumbnails, risk_groups
    from lego.evaluation.metrics import HEADLINE
    from lego.evaluation.summary import load_evaluations

    metrics = pd.read_csv(Path(a.summary_dir) / "metrics.tsv", sep="\t")
    folds = pd.read_csv(Path(a.summary_dir) / "folds.tsv", sep="\t")
    rows, tests = load_evaluations(a.metrics)  # the checks summarise makes
    task = rows[0]["task"]
    preds = {}
    for (model, fold), p in tests.items():
        preds.setdefault(model, []).append(p.assign(fold=fold))
    pooled = {m: pd.concat(v, ignore_index=True) for m, v in preds.items()}
    out = Path(a.out_dir)
    risk_groups(pooled, task, out / "risk_groups.png")
    fold_dots(metrics, folds, HEADLINE[task], out / "folds.png")
    merge_vs_ensemble(metrics, HEADLINE[task], out / "merge_vs_ensemble.png")
    qc_thumbnails(list(a.thumbnails), out / "qc_thumbnails.png")
    log.info("figures written to %s", out)


def cmd_provenance(a) -> None:
    from lego.provenance import write_provenance

    run = write_provenance(json.loads(a.config_json), a.inputs, a.benchmarks, a.code_dir, a.out_dir)
    log.info("provenance of %d jobs written to %s (commit %s)", run["jobs"]["n"], a.out_dir, run["git"]["commit"])


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# --------------------------------------------------------------------------- parser


def _add_slide_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slide", required=True, help="whole-slide image file (any OpenSlide format)")
    p.add_argument("--mpp-fallback", type=float, default=None, help="microns/pixel for slides without mpp metadata")
    p.add_argument("--record-failure", action="store_true",
                   help="on a bad slide, write failure records (status=failed + reason) instead of exiting non-zero")


# Help for options shared by several commands (or too plain to repeat at each add_argument):
# applied wherever an option has none, so every option explains itself in --help.
OPTION_HELP = {
    "--out": "output file (written under a temporary name, then renamed)",
    "--out-dir": "output folder (created if missing)",
    "--out-tissue": "tissue contours (parquet)",
    "--out-png": "tissue overlay thumbnail (PNG)",
    "--patients": "number of synthetic patients",
    "--seed": "random seed (same seed, same result)",
    "--task": "survival (discrete-time hazards, C-index) or classification (cross-entropy, AUC)",
    "--id-column": "column holding the patient ID (read as text: leading zeros kept)",
    "--time-column": "follow-up time column (any unit; bins and horizons use the same unit)",
    "--label-column": "class label column (classification task)",
    "--dir": "folder of slide files (one level, by extension)",
    "--ext": "slide file extensions to index",
    "--seg-downsample": "downsample factor of the thumbnail tissue is segmented on",
    "--method": "method (see the choices)",
    "--saturation-threshold": "HSV saturation (0-255) above which a pixel is tissue (method fixed)",
    "--median-blur": "median blur kernel in pixels (odd)",
    "--close-px": "morphological closing radius in thumbnail pixels",
    "--min-tissue-area-um2": "smallest tissue region kept, in square micrometres",
    "--min-hole-area-um2": "smallest hole kept inside tissue, in square micrometres",
    "--patch-px": "patch size in pixels at the target magnification",
    "--patch-mpp": "microns per pixel of a patch (0.5 = 20x)",
    "--min-tissue-fraction": "share of a patch that must be tissue (0-1)",
    "--overlap": "overlap between neighbouring patches (0 to <1)",
    "--batch-size": "patches per forward pass",
    "--num-workers": "data-loader processes reading patches",
    "--device": "auto (CUDA when visible), cpu or cuda",
    "--progress": "show a progress bar (terminals only; logs get per-step lines)",
    "--src": "existing TRIDENT/CLAM/STAMP feature file (.h5; or a CLAM/MCAT .pt bag)",
    "--slide-name": "slide ID recorded in the output",
    "--record-failure": "batch mode: on a bad item write a failure record (status=failed, reason) and exit 0",
    "--table": "input table (CSV, TSV or parquet)",
    "--modality": "modality name (as in the config)",
    "--categorical": "columns to one-hot encode (categories fitted on training patients)",
    "--labels": "patient outcome table written by ingest-labels (parquet)",
    "--n-folds": "number of folds (default 5, or one per --seeds value)",
    "--seeds": "one seed per fold (random_split; default 1..n_folds)",
    "--fractions": "train, validation and test shares (sum to 1)",
    "--stratify": "keep the event rate (or class mix) equal across subsets",
    "--slides": "slide index written by index-slides (parquet)",
    "--features-dir": "folder of per-slide feature files (<slide>.h5)",
    "--tabular": "tabular modalities as NAME=PATH (parquet written by prepare-modality)",
    "--wsi": "slide modalities as NAME=PATH (feature manifests)",
    "--kind": "modality kind: a key of lego.data.fold_data.KINDS (an unknown one is refused with the list)",
    "--fold": "fold number (from the folds table)",
    "--head": "how block heads are merged: slerp (spherical mean) or linear",
    "--data": "each modality's prepared data as NAME=PATH",
    "--blocks": "block model folders of one fold",
    "--model-dir": "model folder (model.safetensors + config.json)",
    "--methods": "baseline methods to fit",
    "--folds": "folds table written by make-folds (parquet)",
    "--manifest": "feature manifests as NAME=PATH",
    "--unmatched": "unmatched-slide tables written by index-slides (TSV)",
}


# Numeric options with a valid range (low, high; inclusive; within the schema's): argparse then
# refuses 0 patches, negative sizes or an overlap of 1 with one line, before any work starts.
RANGES = {
    "--patch-px": (8, 1 << 15), "--patch-mpp": (1e-3, 100.0), "--mpp": (1e-3, 100.0), "--batch-size": (1, 1 << 16),
    "--num-workers": (0, 256), "--threads": (0, 1024), "--patients": (8, 1_000_000),
    "--workers": (1, 256), "--seg-downsample": (1, 1024), "--median-blur": (1, 255),
    "--close-px": (0, 1000), "--n-bins": (2, 50), "--min-tissue-fraction": (0.0, 1.0),
    "--overlap": (0.0, 0.999999), "--n-folds": (1, 100), "--repeats": (1, 100),
    "--saturation-threshold": (0, 255), "--min-tissue-area-um2": (0.0, 1e12), "--min-hole-area-um2": (0.0, 1e12),
    "--mpp-fallback": (1e-3, 100.0), "--seed": (0, 2**32 - 1),
}


def _ranged(kind: type, low: float, high: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not low <= value <= high:
            shown = (f"{low}, {high}") if kind is int else f"{low:g}, {high:g}"
            raise argparse.ArgumentTypeError(f"{value} is outside [{shown}]")
        return value

    return parse


JSON_OPTIONS = ("--spec", "--evaluation", "--modalities", "--config-json")  # inline JSON text


def _json_text(text: str) -> str:
    """An inline-JSON option, checked when parsed so the error names the option (the text is kept)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "; give the JSON itself, not a file path" if not text.lstrip().startswith(("{", "[")) else ""
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}){hint}; check the quoting") from None
    return text


def _fill_help(parser: argparse.ArgumentParser) -> None:
    """Give every option of every subcommand a help line (and show its default)."""
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            if action.option_strings and action.option_strings[0] in RANGES and action.type in (int, float):
                action.type = _ranged(action.type, *RANGES[action.option_strings[0]])
            if action.option_strings and action.option_strings[0] in JSON_OPTIONS:
                action.type = _json_text
            if action.option_strings and action.help is None:
                action.help = OPTION_HELP.get(action.option_strings[0], "see the README")
            shown = action.default is not None and action.default is not False and action.default != [] \
                and action.default is not argparse.SUPPRESS
            if action.option_strings and shown and "default" not in (action.help or ""):
                action.help = f"{action.help} (default: %(default)s)"


def eval_args(p: argparse.ArgumentParser) -> None:
    """The evaluation options every command that scores predictions takes."""
    p.add_argument("--evaluation", default=None,
                   help='JSON: {"horizons", "tau_quantile", "n_boot", "ci", "seed"} (config section evaluation)')


def model_args(p: argparse.ArgumentParser) -> None:
    """Labels, folds and where the model runs: shared by every model command."""
    p.add_argument("--labels", required=True, help="labels.parquet")
    p.add_argument("--folds", required=True, help="folds.parquet")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")


def _cohort_commands(add) -> None:
    """The demo cohort, outcomes and the slide index."""
    p = add("make-demo", cmd_make_demo, "Write the synthetic demo cohort (slides, MCAT omics CSV, clinical CSV) from a seed.")
    p.add_argument("--out", required=True)
    p.add_argument("--patients", type=int, default=250)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--prefix", default="DEMO", help="four letters starting every patient ID (default DEMO)")
    p.add_argument("--workers", type=int, default=1, help="processes writing slides (the output does not depend on it)")

    p = add("ingest-labels", cmd_ingest_labels,
            "Read patient outcomes (survival time + event, or a class label) into labels.parquet, one row per patient.")
    p.add_argument("--table", required=True, help="CSV(.gz/.zip), TSV or parquet; MCAT 'all_clean' files work as is")
    p.add_argument("--task", choices=["survival", "classification"], default="survival")
    p.add_argument("--id-column", default="case_id")
    p.add_argument("--time-column", default="survival_months")
    p.add_argument("--censorship-column", default=None, help="1 = censored (MCAT; default 'censorship' unless --event-column)")
    p.add_argument("--event-column", default=None, help="1 = event")
    p.add_argument("--label-column", default=None)
    p.add_argument("--out", required=True)

    p = add("index-slides", cmd_index_slides,
            "List slides (directory and/or list file), map each to a patient and write slides.parquet.")
    p.add_argument("--labels", required=True, help="labels.parquet from ingest-labels")
    p.add_argument("--dir", nargs="*", default=None,
                   help="slide folder(s); several are imported feature folders naming the same slides")
    p.add_argument("--list", default=None, help="table with a 'path' column and optional 'patient_id'")
    p.add_argument("--ext", nargs="*", default=list(SLIDE_EXTENSIONS))
    p.add_argument("--prefix-length", type=int, default=12, help="patient ID = first N characters (TCGA: 12)")
    p.add_argument("--regex", default=None, help="patient ID = group 1 of this regex on the slide ID")
    p.add_argument("--out", required=True)
    p.add_argument("--unmatched", required=True, help="TSV of slides that match no labelled patient")



def _slide_commands(add) -> None:
    """Per-slide stages: tissue, patches, embeddings, imported features."""
    p = add("segment", cmd_segment, "Segment tissue (CLAM-style HSV saturation); write contours parquet + QC PNG.")
    _add_slide_args(p)
    p.add_argument("--out-tissue", required=True)
    p.add_argument("--out-png", required=True)
    _params_args(p, TissueParams, {"method": ["fixed", "otsu"]})

    p = add("extract", cmd_extract, "Lay out a micron-based patch grid on the tissue; write coords HDF5 (TRIDENT/CLAM layout).")
    _add_slide_args(p)
    p.add_argument("--tissue", required=True, help="tissue.parquet from segment")
    p.add_argument("--out", required=True)
    _params_args(p, PatchParams)

    p = add("embed", cmd_embed, "Embed a slide's patches with a registered encoder; write features HDF5.")
    _add_slide_args(p)
    p.add_argument("--patches", required=True, help="patches.h5 from extract")
    p.add_argument("--encoder", default="stain_texture", help="see `lego encoders`")
    p.add_argument("--checkpoint", default=None, help="local weights file for the encoder")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--progress", action="store_true")

    p = add("import-features", cmd_import_features,
            "Convert an existing TRIDENT/CLAM ('features' .h5, or a CLAM/MCAT .pt bag) or STAMP ('feats' .h5) file.")
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--slide-name", required=True)
    p.add_argument("--mpp", type=float, default=None,
                   help="the slide's level-0 microns per pixel: turns STAMP's micrometre coordinates into level-0 "
                        "pixels (default: keep micrometres, recorded as unit=um)")
    p.add_argument("--record-failure", action="store_true")

    p = add("export-features", cmd_export_features,
            "Write a feature file of ours as STAMP reads it (feats, coordinates in um) or as a CLAM/MCAT pt_files bag.")
    p.add_argument("--src", required=True, help="feature file written by embed or import-features (.h5)")
    p.add_argument("--format", required=True, choices=["stamp", "clam-pt"],
                   help="stamp: .h5 with feats and um coordinates; clam-pt: one (patches x dim) tensor, torch.save")
    p.add_argument("--out", required=True)

    add("encoders", cmd_encoders, "List the registered patch encoders.")



def _table_commands(add) -> None:
    """Tabular modalities, folds and the per-patient cohort table."""
    p = add("prepare-modality", cmd_prepare_modality, "Select, validate and type one tabular modality; write a parquet table.")
    p.add_argument("--table", required=True)
    p.add_argument("--modality", required=True)
    p.add_argument("--id-column", default="case_id")
    p.add_argument("--include", default=".*", help="regex a feature column must match")
    p.add_argument("--exclude", nargs="*", default=[], help="regexes of columns to leave out")
    p.add_argument("--columns", nargs="*", default=None, help="explicit feature columns")
    p.add_argument("--categorical", nargs="*", default=[])
    p.add_argument("--outcome-columns", nargs="*", default=[],
                   help="the cohort's outcome columns (time, event/censorship, label): never features")
    p.add_argument("--out", required=True)

    p = add("make-folds", cmd_make_folds, "Patient-level train/val/test folds (default: 5 random 70/15/15 splits, seeds 1..5).")
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=["random_split", "kfold", "file"], default="random_split",
                   help="random_split (default), kfold, or file (published splits from --path)")
    p.add_argument("--n-folds", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1, help="kfold: repeated cross-validation (default 1)")
    p.add_argument("--path", default=None,
                   help="file: folder of splits_<k>.csv (MCAT/PORPOISE/CLAM) or a patient_id,fold,subset table")
    p.add_argument("--seeds", type=int, nargs="*", default=None)
    p.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15])
    p.add_argument("--stratify", action="store_true")

    p = add("feature-manifest", cmd_feature_manifest, "Summarise a WSI modality's feature files (status, patches) per slide.")
    p.add_argument("--slides", required=True)
    p.add_argument("--features-dir", required=True)
    p.add_argument("--modality", required=True)
    p.add_argument("--out", required=True)

    p = add("cohort-table", cmd_cohort_table, "Write patients.parquet: outcome plus which modalities each patient has.")
    p.add_argument("--labels", required=True)
    p.add_argument("--tabular", nargs="*", default=[], metavar="NAME=PARQUET")
    p.add_argument("--wsi", nargs="*", default=[], metavar="NAME=MANIFEST")
    p.add_argument("--out", required=True)



def _model_commands(add) -> None:
    """LegoBlocks, merges, fuse and evaluation."""
    p = add("train-block", cmd_train_block,
            "Train one modality's LegoBlock for one fold on every training patient who has that modality.")
    p.add_argument("--modality", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--data", required=True, help="modalities/<modality>.parquet (table or WSI feature manifest)")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--task", choices=["survival", "classification"], default="survival")
    p.add_argument("--spec", default="{}", help="JSON: architecture and training options (see config/schema.yaml, model)")
    p.add_argument("--categorical", nargs="*", default=[])
    p.add_argument("--out-dir", required=True)
    model_args(p)

    p = add("merge", cmd_merge, "LegoMerge a fold's blocks (no training): merged latents and merged head.")
    p.add_argument("--blocks", nargs="+", required=True, help="block model directories of one fold")
    p.add_argument("--method", choices=["sum", "mean", "harmonic", "readout"], default="harmonic", help="latent merge (default harmonic)")
    p.add_argument("--head", choices=["slerp", "linear"], default="slerp")
    p.add_argument("--out-dir", required=True)

    p = add("select-block", cmd_select_block,
            "Keep the grid candidate chosen on validation (C-index or AUC) of one block and fold.")
    p.add_argument("--candidates", nargs="+", required=True, help="candidate block directories (each with history.json)")
    p.add_argument("--rule", choices=["one_se", "best"], default="one_se",
                   help="one_se: first listed within one bootstrap SE of the best; best: highest score (default one_se)")
    p.add_argument("--out-dir", required=True)

    p = add("merge-tuned", cmd_merge_tuned,
            "LegoMerge using validation: latents normalised, blocks weighted, subset and method chosen on validation.")
    p.add_argument("--blocks", nargs="+", required=True, help="block model directories of one fold")
    p.add_argument("--data", nargs="+", required=True, metavar="MODALITY=PARQUET")
    p.add_argument("--head", choices=["slerp", "linear"], default="slerp", help="head merge (default slerp)")
    p.add_argument("--search", action="store_true",
                   help="also choose the block subset and the latent merge on validation (default: all blocks, weighted mean)")
    p.add_argument("--out-dir", required=True)
    model_args(p)

    p = add("select-variant", cmd_select_variant,
            "Report, per fold, the MM-Lego variant (merge, tuned merge, fuse) chosen on validation.")
    p.add_argument("--metrics", nargs="+", required=True, help="the variants' eval metrics.json files of one fold")
    p.add_argument("--name", default="lego", help="model name in the summary (default lego)")
    p.add_argument("--rule", choices=["one_se", "best"], default="one_se",
                   help="one_se: the first of tuned merge, merge, fuse within one bootstrap SE of the best validation "
                        "score; best: the highest validation score (default one_se)")
    p.add_argument("--out-dir", required=True)

    p = add("fuse", cmd_fuse, "LegoFuse a fold's blocks (stack or weave) and fine-tune for a few epochs.")
    p.add_argument("--blocks", nargs="+", required=True)
    p.add_argument("--data", nargs="+", required=True, metavar="MODALITY=PARQUET")
    p.add_argument("--spec", default="{}", help="JSON: mode, epochs, lr, freeze, ...")
    p.add_argument("--out-dir", required=True)
    model_args(p)

    p = add("evaluate", cmd_evaluate, "Predict the fold's test and validation patients; write predictions and metrics.")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--name", required=True, help="model name in the summary, e.g. block-rna, merge, fuse")
    p.add_argument("--data", nargs="+", required=True, metavar="MODALITY=PARQUET")
    p.add_argument("--out-dir", required=True)
    eval_args(p)
    model_args(p)



def _prediction_commands(add) -> None:
    """Trained models applied to new cohorts."""
    p = add("predict", cmd_predict,
            "Apply a trained block, merge or fuse to a new cohort (no labels needed); with --labels, external metrics.")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data", nargs="+", required=True, metavar="NAME=PATH",
                   help="each modality's table prepared by prepare-modality (or a feature manifest) for the new cohort")
    p.add_argument("--labels", default=None, help="outcomes of the new cohort (ingest-labels parquet), for metrics")
    p.add_argument("--name", default=None, help="model name recorded in metrics.json (default: the model folder's)")
    eval_args(p)
    p.add_argument("--out-dir", required=True)

    p = add("predict-summary", cmd_predict_summary,
            "Mean and spread over folds of each model's external metrics (metrics.json files written by predict).")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files written by predict")
    p.add_argument("--out", required=True)


def _evaluation_commands(add) -> None:
    """Baselines, summaries and the ensemble."""
    p = add("baselines", cmd_baselines,
            f"Fit reference models ({', '.join(names.FITTED_BASELINES)}) on one input of one fold with in-fold preprocessing; "
            "evaluate each.")
    p.add_argument("--methods", nargs="+", choices=names.FITTED_BASELINES, required=True)
    p.add_argument("--source", required=True, help="input name: a modality, or early (several concatenated)")
    p.add_argument("--data", nargs="+", required=True, metavar="MODALITY=PARQUET")
    p.add_argument("--modalities", required=True,
                   help='JSON: {modality: {"kind", "categorical"?, "preprocess"?}} for the --data entries')
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--task", choices=["survival", "classification"], default="survival")
    p.add_argument("--n-bins", type=int, default=4, help="survival bins (for the predicted curves)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-root", required=True, help="each method writes <out-root>/<method>-<source>/fold<k>/")
    eval_args(p)
    model_args(p)

    p = add("abmil", cmd_abmil,
            "Plain ABMIL baseline (attention pooling + linear head, no Lego latent) on one patch-bag modality and fold.")
    p.add_argument("--modality", required=True)
    p.add_argument("--data", required=True, help="modalities/<modality>.parquet (WSI feature manifest)")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--task", choices=["survival", "classification"], default="survival")
    p.add_argument("--spec", default="{}", help="JSON: the modality's block training options (encoder_width, lr, ...)")
    p.add_argument("--out-dir", required=True)
    eval_args(p)
    model_args(p)

    p = add("ensemble", cmd_ensemble, "Late-fusion ensemble of a fold's evaluated blocks (mean of their predictions).")
    p.add_argument("--block-metrics", nargs="+", required=True, help="the blocks' metrics.json (predictions beside)")
    p.add_argument("--labels", required=True)
    p.add_argument("--folds", required=True)
    p.add_argument("--out-dir", required=True)
    eval_args(p)

    p = add("summarise", cmd_summarise,
            "metrics.tsv (mean, std, bootstrap CI per model and metric), folds.tsv and comparisons.tsv.")
    p.add_argument("--metrics", nargs="+", required=True,
                   help="metrics.json files of evaluate; the predictions.parquet beside each is read too")
    p.add_argument("--out-dir", required=True)
    eval_args(p)


def _report_commands(add) -> None:
    """Figures, heatmaps, provenance and QC."""
    p = add("figures", cmd_figures, "Report figures: risk groups, per-fold metrics, merge vs ensemble, tissue QC.")
    p.add_argument("--summary-dir", required=True, help="directory with metrics.tsv and folds.tsv")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files (predictions beside)")
    p.add_argument("--thumbnails", nargs="*", default=[], help="tissue.png files of the slides to show")
    p.add_argument("--out-dir", required=True)

    p = add("heatmaps", cmd_heatmaps,
            "Attention heatmaps of a slide block on its fold's test patients: PNG, QuPath GeoJSON and a table per slide.")
    p.add_argument("--model-dir", required=True, help="a slide modality's block folder (model.safetensors, config.json)")
    p.add_argument("--manifest", required=True, help="the modality's feature manifest (written by feature-manifest)")
    p.add_argument("--folds", required=True)
    p.add_argument("--slides", default=None, help="slide index (written by index-slides), to draw over thumbnails")
    p.add_argument("--subset", choices=["test", "val", "train"], default="test",
                   help="which of the fold's patients to draw (default test)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--out-dir", required=True)

    p = add("provenance", cmd_provenance,
            "Record the resolved config, package versions, git commit, input digests and per-job costs.")
    p.add_argument("--config-json", required=True, help="the resolved run config, as JSON")
    p.add_argument("--inputs", nargs="*", default=[], help="input files or directories to digest")
    p.add_argument("--benchmarks", required=True, help="directory of Snakemake benchmark files")
    p.add_argument("--code-dir", required=True, help="the workflow's checkout (for the git commit)")
    p.add_argument("--out-dir", required=True)

    p = add("collect-qc", cmd_collect_qc, "Gather failed and unmatched slides into qc/failed.tsv.")
    p.add_argument("--manifest", nargs="*", default=[], metavar="NAME=MANIFEST")
    p.add_argument("--unmatched", nargs="*", default=[])
    p.add_argument("--out", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lego", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {lego.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=fn)
        return p

    for group in (_cohort_commands, _slide_commands, _table_commands, _model_commands, _prediction_commands,
                  _evaluation_commands, _report_commands):
        group(add)
    _fill_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("numexpr").setLevel(logging.WARNING)
    try:
        if isinstance(getattr(args, "name", None), str) and not args.name.strip():
            raise InputError("--name is empty; name the model (it becomes a row of the summary)")
        _refuse_output_over_input(args)
        args.func(args)
    except Exception as exc:
        message = _user_error(exc)
        if message is None or args.debug:
            raise
        print(f"lego {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


OUTPUT_FLAGS = ("out", "out_dir", "out_root", "out_tissue", "out_png", "unmatched")
READ_FLAGS = {"collect-qc": {"unmatched"}}  # where a flag named like an output is read
MODEL_FILES = frozenset({"model.safetensors", "config.json", "history.json"})
EVAL_FILES = frozenset({"metrics.json", "predictions.parquet"})
# The fixed file names a command writes into its --out-dir: an input file of that name there would
# be overwritten. (Other names in the folder are left alone, so writing beside them is allowed.)
WRITES: dict[str, frozenset] = {
    **dict.fromkeys(("train-block", "merge", "merge-tuned", "fuse", "select-block"), MODEL_FILES),
    **dict.fromkeys(("evaluate", "ensemble", "select-variant", "predict"), EVAL_FILES),
    "abmil": MODEL_FILES | EVAL_FILES,
    "summarise": frozenset({"metrics.tsv", "folds.tsv", "comparisons.tsv", "tables.html"}),
    "heatmaps": frozenset({"index.tsv"}),
}


def _refuse_output_over_input(args) -> None:
    """An output that would overwrite an input -- the same file, or a file of the name the command
    writes in its output folder (a merge written into a block's folder, an ensemble's metrics over
    a block's, labels replaced by a slide table) -- or two outputs on one path: refused before any work."""
    opts = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    outputs = {f: opts[f] for f in OUTPUT_FLAGS
               if isinstance(opts.get(f), str) and opts[f] and f not in READ_FLAGS.get(args.command, ())}
    inputs = {}
    for flag, value in opts.items():
        if flag in outputs:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v:
                path = _existing(v) or ("=" in v and _existing(v.split("=", 1)[1]))  # NAME=PATH arguments
                if path:
                    inputs.setdefault(path, flag)
    written = WRITES.get(args.command, frozenset())
    seen = {}
    for flag, out in outputs.items():
        target = Path(out).resolve()
        for p, in_flag in inputs.items():
            clash = _overwritten(p, target, written)
            if clash is not None:
                raise InputError(f"--{_flag(flag)} {out} would overwrite {clash.name} (--{_flag(in_flag)} {p}); "
                                 "choose another output path")
        if target in seen:
            raise InputError(f"--{_flag(flag)} and --{_flag(seen[target])} are the same path ({out}); give each output its own")
        seen[target] = flag


def _overwritten(inp: Path, target: Path, written: frozenset) -> Path | None:
    """The input file an output at ``target`` would overwrite: the input itself (a file written over),
    a file the command writes in its folder, or such a file inside an input folder that is the output."""
    if inp == target and inp.is_file():
        return inp
    for name in sorted(written):
        if inp == target / name:
            return inp
        if inp == target and (inp / name).is_file():
            return inp / name
    return None


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _existing(value: str) -> Path | None:
    """The resolved path an argument names, if it exists (JSON and other values name none)."""
    try:
        return Path(value).resolve() if Path(value).exists() else None
    except (OSError, ValueError):  # too long for a file name, or a NUL byte
        return None


def _user_error(exc: Exception) -> str | None:
    """The one-line message for an error caused by the user's input; None for a bug (traceback)."""
    if isinstance(exc, LegoError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):  # --spec, --config-json, --modalities ... are JSON
        return f"an argument is not valid JSON ({exc}); check the quoting"
    if isinstance(exc, OSError):  # unreadable or unwritable paths: the path and the reason
        return _os_error(exc)
    if type(exc).__module__.startswith("pyarrow"):  # a damaged or non-parquet file where parquet is expected
        return f"cannot read a parquet input ({' '.join(str(exc).split())[:300]}); re-run the step that wrote it"
    return None


def _os_error(exc: OSError) -> str:
    """One line for a file-system error, naming the path and what to check."""
    where = exc.filename or ""
    reason = exc.strerror or " ".join(str(exc).split())
    hint = {PermissionError: "check the folder's permissions", FileNotFoundError: "check the path, or run the step that makes it"}
    fix = next((h for t, h in hint.items() if isinstance(exc, t)), "check the file and the disk")
    return f"{where + ': ' if where else ''}{reason}; {fix}"


if __name__ == "__main__":
    sys.exit(main())
