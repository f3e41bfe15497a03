"""Cohort commands: the demo cohort, outcomes, the slide index, table modalities, folds, the
per-patient table and slide QC."""

from __future__ import annotations

import json
import logging

from lego.cli.declare import Command, command, named_paths, opt
from lego.errors import LegoError

log = logging.getLogger("lego")


@command("make-demo", "Write the synthetic demo cohort (slides, MCAT omics CSV, clinical CSV) from a seed.")
class MakeDemo(Command):
    out: str = opt("output folder", required=True, output=True)
    patients: int = opt("number of synthetic patients", setting="demo.n_patients")
    seed: int = opt("random seed (same seed, same cohort)", setting="demo.seed")
    prefix: str = opt(setting="demo.prefix")
    workers: int = opt("processes writing slides (the output does not depend on it)", default=1, low=1, high=256)

    def run(self) -> None:
        try:
            import imagecodecs  # noqa: F401  (tifffile's JPEG codec: missing, it fails only at the first slide)

            from lego.demo.cohort import make_demo_cohort
        except ImportError as exc:
            raise LegoError(f"the demo needs the 'demo' extra ({exc.name} is not installed): "
                            "pip install -e '.[demo]'") from None
        summary = make_demo_cohort(self.out, n_patients=self.patients, seed=self.seed, workers=self.workers,
                                   prefix=self.prefix)
        log.info("demo cohort written to %s: %s", self.out, json.dumps(summary))


@command("ingest-labels",
         "Read patient outcomes (survival time + event, or a class label) into labels.parquet, one row per patient.")
class IngestLabels(Command):
    table: str = opt("CSV(.gz/.zip), TSV or parquet; MCAT 'all_clean' files work as is", required=True)
    task: str = opt(setting="cohort.task")
    id_column: str = opt("column holding the patient ID (read as text: leading zeros kept)",
                         setting="cohort.labels.id_column")
    time_column: str = opt("follow-up time column (any unit; bins and horizons use the same unit)",
                           setting="cohort.labels.time_column")
    censorship_column: str = opt(setting="cohort.labels.censorship_column")
    event_column: str = opt(setting="cohort.labels.event_column")
    label_column: str = opt(setting="cohort.labels.label_column")
    intervals: bool = opt(setting="cohort.labels.intervals")
    landmark: float = opt(setting="cohort.labels.landmark")
    out: str = opt("labels.parquet to write", required=True, output=True)

    def run(self) -> None:
        from lego.data.labels import censorship_column_of, ingest_labels
        from lego.io import write_parquet

        labels = ingest_labels(
            self.table, task=self.task, id_column=self.id_column, time_column=self.time_column,
            censorship_column=censorship_column_of(self.censorship_column, self.event_column),
            event_column=self.event_column or None, label_column=self.label_column, intervals=self.intervals,
            landmark=self.landmark,
        )
        write_parquet(labels, self.out, metadata={"source": str(self.table), "task": self.task,
                                                  "landmark": self.landmark})
        if self.task == "survival":
            log.info("%d patients, %d events", len(labels), int(labels["event"].sum()))
        else:
            log.info("%d patients, classes %s", len(labels), labels["label"].value_counts().to_dict())


@command("index-slides", "List slides (directory and/or list file), map each to a patient and write slides.parquet.")
class IndexSlides(Command):
    labels: str = opt("labels.parquet from ingest-labels", required=True)
    dir: list = opt("slide folder(s); several are imported feature folders naming the same slides", many=True)
    list: str = opt(setting="slides.list")
    ext: list = opt("slide file extensions to index", setting="slides.extensions")
    prefix_length: int = opt(setting="slides.patient_id.prefix_length")
    regex: str = opt(setting="slides.patient_id.regex")
    out: str = opt("slides.parquet to write", required=True, output=True)
    unmatched: str = opt("TSV of slides that match no labelled patient", required=True, output=True)

    def run(self) -> None:
        from lego.data.slides_index import index_slides
        from lego.io import read_frame, write_parquet, write_tsv

        if not self.dir and not self.list:
            log.warning("no --dir or --list: writing an empty slide index (a cohort without slides)")
        labels = read_frame(self.labels, "labels")
        slides, unmatched = index_slides(self.dir, self.list, self.ext, self.prefix_length, self.regex,
                                         patients=labels["patient_id"].tolist())
        write_parquet(slides, self.out)
        write_tsv(unmatched, self.unmatched)
        no_slide = len(set(labels["patient_id"]) - set(slides["patient_id"]))
        log.info("%d slides for %d patients; %d unmatched slides; %d patients without a slide",
                 len(slides), slides["patient_id"].nunique(), len(unmatched), no_slide)


@command("prepare-modality", "Select, validate and type one tabular modality; write a parquet table.")
class PrepareModality(Command):
    table: str = opt("input table (CSV, TSV or parquet)", required=True)
    modality: str = opt("modality name (as in the config)", required=True)
    id_column: str = opt("column holding the patient ID (read as text: leading zeros kept)",
                         setting="table_modality.id_column")
    include: str = opt(setting="table_modality.include")
    exclude: list = opt(setting="table_modality.exclude")
    columns: list = opt(setting="table_modality.columns", default=None)
    categorical: list = opt(setting="table_modality.categorical")
    outcome_columns: list = opt("the cohort's outcome columns (time, event/censorship, label): never features",
                                many=True)
    out: str = opt("the modality's parquet to write", required=True, output=True)

    def run(self) -> None:
        from lego.io import write_parquet
        from lego.tabular.modality import prepare_modality

        df = prepare_modality(self.table, self.modality, id_column=self.id_column, include=self.include,
                              exclude=self.exclude, columns=self.columns, categorical=self.categorical,
                              outcomes=self.outcome_columns)
        write_parquet(df, self.out, metadata={"modality": self.modality, "source": str(self.table)})
        log.info("modality %s: %d patients x %d features", self.modality, len(df), df.shape[1] - 1)


@command("make-folds", "Patient-level train/val/test folds (default: 5 random 70/15/15 splits, seeds 1..5).")
class MakeFolds(Command):
    labels: str = opt("patient outcome table written by ingest-labels (parquet)", required=True)
    out: str = opt("folds.parquet to write", required=True, output=True)
    method: str = opt(setting="folds.method")
    n_folds: int = opt("number of folds (default: one per --seeds value, else the config's default)",
                       setting="folds.n_folds", default=None)
    repeats: int = opt(setting="folds.repeats")
    path: str = opt(setting="folds.path")
    seeds: list = opt(setting="folds.seeds")
    fractions: list = opt("train, validation and test shares (sum to 1)", setting="folds.fractions")
    stratify: bool = opt(setting="folds.stratify")

    def run(self) -> None:
        from lego.data.folds import make_folds
        from lego.io import read_frame, write_parquet

        folds = make_folds(read_frame(self.labels, "labels"), self.method, n_folds=self.n_folds, seeds=self.seeds,
                           fractions=tuple(self.fractions), stratify=self.stratify, repeats=self.repeats, path=self.path)
        write_parquet(folds, self.out, metadata={"method": self.method, "seeds": self.seeds, "fractions": self.fractions,
                                                 "repeats": self.repeats, "path": self.path})
        log.info("%s", folds.groupby(["fold", "subset"]).size().unstack().to_string())


@command("cohort-table", "Write patients.parquet: outcome plus which modalities each patient has.")
class CohortTable(Command):
    labels: str = opt("patient outcome table written by ingest-labels (parquet)", required=True)
    tabular: list = opt("table modalities as NAME=PATH (parquet written by prepare-modality)", many=True,
                        metavar="NAME=PARQUET")
    wsi: list = opt("slide modalities as NAME=PATH (feature manifests)", many=True, metavar="NAME=MANIFEST")
    out: str = opt("patients.parquet to write", required=True, output=True)

    def run(self) -> None:
        from lego.data.cohort_table import build_patients_table
        from lego.io import read_frame, write_parquet

        tabular, slides = named_paths(self.tabular), named_paths(self.wsi)
        both = sorted(set(tabular) & set(slides))
        if both:
            raise LegoError(f"modality {both[0]!r} is given as tabular and as wsi; give each name once")
        tab = {k: read_frame(v, "modality") for k, v in tabular.items()}
        wsi = {k: read_frame(v, "manifest") for k, v in slides.items()}
        patients = build_patients_table(read_frame(self.labels, "labels"), tab, wsi)
        write_parquet(patients, self.out)
        has = [c for c in patients.columns if c.startswith("has_")]
        log.info("%d patients; modality coverage: %s", len(patients), patients[has].sum().to_dict())


@command("collect-qc", "Gather failed and unmatched slides into qc/failed.tsv.")
class CollectQC(Command):
    manifest: list = opt("feature manifests as NAME=PATH", many=True, metavar="NAME=MANIFEST")
    unmatched: list = opt("unmatched-slide tables written by index-slides (TSV)", many=True)
    out: str = opt("failed.tsv to write", required=True, output=True)

    def run(self) -> None:
        import pandas as pd

        from lego.io import read_frame, write_tsv

        parts = [_failed_slides(name, read_frame(path, "manifest")) for name, path in named_paths(self.manifest).items()]
        for path in self.unmatched or []:
            u = read_frame(path, "slide-QC")
            if len(u):
                parts.append(pd.DataFrame({"slide_id": u["slide_id"], "patient_id": u["patient_id"], "modality": "-",
                                           "stage": "index_slides", "reason": u["reason"]}))
        cols = ["slide_id", "patient_id", "modality", "stage", "reason"]
        failed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
        write_tsv(failed[cols].sort_values(["slide_id", "modality"]), self.out)
        log.info("%d slide problem(s) recorded in %s", len(failed), self.out)


def _failed_slides(name: str, manifest):
    import pandas as pd

    bad = manifest[manifest["status"] != "ok"]
    stage = bad["stage"] if "stage" in bad.columns else "unknown"  # manifests of releases before the field
    return pd.DataFrame({"slide_id": bad["slide_id"], "patient_id": bad["patient_id"], "modality": name,
                         "stage": stage, "reason": bad["reason"]})
