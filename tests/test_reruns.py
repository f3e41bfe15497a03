"""Partial reruns: after a finished run, what ``snakemake -n`` would redo when one thing changes.

Each test works on a copy of the session's finished demo run (mtimes and Snakemake's metadata
kept), changes one thing and reads the job list of a dry run: only the changed branch and what
depends on it may appear.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lego.config import validate_config
from lego.plan import Plan
from tests.workflow_runs import BIN, REPO, dry_run_jobs, snakemake

pytestmark = pytest.mark.slow
N_FOLDS = 2  # the demo_run fixture's folds
DOWNSTREAM_OF_ONE_BLOCK = {"select_block": N_FOLDS, "merge": N_FOLDS, "merge_tuned": N_FOLDS, "fuse": N_FOLDS,
                           "evaluate": 4, "select_lego": N_FOLDS, "ensemble": N_FOLDS, "summarise": 1,
                           "figures": 1, "provenance": 1, "all": 1}
BASELINES_OF_ONE_MODALITY = {"baselines": N_FOLDS}  # early fusion (the demo config has no per-modality baselines)


def trained_reading(workdir: Path, modality: str) -> Counter:
    """The jobs of the run's trained baselines (HEALNet, MCAT, ...) that read ``modality``: each is
    retrained and rescored on every fold, and its heatmaps, if drawn, are redrawn."""
    plan = Plan(validate_config(yaml.safe_load((workdir / "config.yaml").read_text())))
    names = [n for n in plan.trained if modality in plan.model_modalities(n)]
    drawn = [n for n in names if n in plan.heatmap_models]
    jobs = Counter({"train_model": N_FOLDS * len(names), "evaluate": len(names),  # one job scores a model's folds
                    "heatmaps": len(drawn)})  # one job draws a model's folds
    return +jobs  # without zero counts


@pytest.fixture
def finished(demo_run, tmp_path) -> Path:
    work = tmp_path / "run"
    shutil.copytree(demo_run, work, symlinks=True)
    assert dry_run_jobs(work) == Counter(), "the copied finished run has nothing to do"
    return work


def edit_config(workdir: Path, edit) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))


def test_one_modality_parameter_reruns_only_its_blocks(finished):
    edit_config(finished, lambda c: c["modalities"]["rna"].update(block={"lr": 0.002}))
    jobs = dry_run_jobs(finished)
    assert jobs == Counter({"train_block": N_FOLDS, **DOWNSTREAM_OF_ONE_BLOCK}), jobs


def test_one_modality_preprocessing_reruns_only_its_blocks(finished):
    edit_config(finished, lambda c: c["modalities"]["cnv"].update(preprocess={"select_k": 4}))
    jobs = dry_run_jobs(finished)
    expected = Counter({"train_block": N_FOLDS, **DOWNSTREAM_OF_ONE_BLOCK, **BASELINES_OF_ONE_MODALITY})
    assert jobs == expected + trained_reading(finished, "cnv"), jobs


def test_one_modality_input_file_reruns_its_preparation_and_blocks(finished):
    omics = finished / "results" / "demo_input" / "omics_all_clean.csv.gz"
    table = pd.read_csv(omics)
    table.loc[0, "ESR1_rnaseq"] += 1.0  # one corrected value in the RNA file
    table.to_csv(finished / "rna.csv", index=False)
    edit_config(finished, lambda c: c["modalities"]["rna"].update(path="rna.csv"))
    jobs = dry_run_jobs(finished)
    # cohort_table (the per-patient has_<modality> table) is rebuilt too: cheap, and it reads the modality.
    expected = Counter({"prepare_modality": 1, "cohort_table": 1, "train_block": N_FOLDS, **DOWNSTREAM_OF_ONE_BLOCK,
                        **BASELINES_OF_ONE_MODALITY})
    assert jobs == expected + trained_reading(finished, "rna"), jobs


def test_a_replaced_model_file_reruns_what_reads_it(finished):
    """Every file a rule reads is an input: a block's config.json edited by hand (or copied over
    from another run) reruns the merges, the fuse and the evaluations that read it."""
    cfg = finished / "results" / "demo" / "blocks" / "rna" / "fold0" / "config.json"
    time.sleep(0.01)
    # A changed file (here one more newline; JSON unchanged in meaning). Rewriting identical bytes
    # reruns nothing: Snakemake compares its stored checksum of small inputs, not only the mtime.
    cfg.write_text(cfg.read_text() + "\n")
    jobs = dry_run_jobs(finished)
    for rule in ("merge", "merge_tuned", "fuse", "evaluate"):
        assert jobs[rule] >= 1, (rule, jobs)
    assert "train_block" not in jobs and "select_block" not in jobs, jobs


def test_new_encoder_re_embeds_without_re_extracting(finished):
    edit_config(finished, lambda c: c["modalities"]["wsi"].update(encoder="efficientnet_lite0"))
    jobs = dry_run_jobs(finished)
    n_slides = len(pd.read_parquet(finished / "results" / "demo" / "cohort" / "slides.parquet"))
    assert jobs["embed_patches"] == n_slides and jobs["train_block"] == N_FOLDS
    assert "extract_patches" not in jobs and "segment_tissue" not in jobs and "prepare_modality" not in jobs


def test_one_added_slide_is_the_only_slide_processed(finished):
    # The demo's slides are a directory() output of make_demo, so Snakemake treats every slide as
    # changed when that folder changes. A user's slide folder is plain input: set one up and run once.
    user_slides = finished / "user_slides"
    shutil.copytree(finished / "results" / "demo_input" / "slides", user_slides, ignore=shutil.ignore_patterns(".snakemake*"))
    edit_config(finished, lambda c: c["slides"].update(dir="user_slides"))
    snakemake(finished, "--cores", "2")
    assert dry_run_jobs(finished) == Counter()

    patients = pd.read_parquet(finished / "results" / "demo" / "cohort" / "patients.parquet")
    pid = patients.loc[~patients["has_wsi"], "patient_id"].iloc[0]
    shutil.copy(next(user_slides.glob("*-DX1.svs")), user_slides / f"{pid}-01Z-00-DX1.svs")
    # The slide index is a checkpoint: bring it up to date, then ask what else would run.
    snakemake(finished, "--cores", "1", str(Path("results") / "demo" / "cohort" / "slides.parquet"))
    jobs = dry_run_jobs(finished)
    assert jobs["segment_tissue"] == jobs["extract_patches"] == jobs["embed_patches"] == 1, jobs
    assert jobs["train_block"] == N_FOLDS, "only the WSI blocks see new data"
    assert "prepare_modality" not in jobs and "make_folds" not in jobs


def test_a_run_killed_mid_training_resumes(finished):
    """SIGKILL the whole run while a block trains; the same command then redoes only what is missing."""
    out = finished / "results" / "demo"
    edit_config(finished, lambda c: c["modalities"]["rna"].update(block={"lr": 0.002}))
    kept = {p: p.stat().st_mtime_ns for p in (out / "blocks" / "cnv").rglob("model.safetensors")}
    # Snakemake may start either fold's RNA block first: interrupt whichever starts first.
    logs = {log: log.stat().st_mtime_ns for log in (out / "logs" / "train_block" / "rna").glob("fold*/c*.log")}
    assert len(logs) == N_FOLDS
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(finished),
           "--configfile", str(finished / "config.yaml"), "--cores", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        started = []
        while not started:  # an RNA job has started
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "no RNA block ever started"
            time.sleep(0.1)
            started = [log for log, before in logs.items() if log.exists() and log.stat().st_mtime_ns != before]
        time.sleep(0.5)  # inside the job (python is still importing torch)
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    model = out / "blocks" / "rna" / started[0].parent.name / "candidates" / started[0].stem / "model.safetensors"
    assert not model.exists(), "an interrupted job leaves no output that could pass for finished"
    snakemake(finished, "--unlock")  # a SIGKILLed Snakemake cannot release its lock (Ctrl-C / SIGTERM do)
    # No --rerun-incomplete needed: outputs are written under temporary names, so a killed job left
    # nothing Snakemake could call incomplete; the plain command resumes (docs/cluster.md, "Partial reruns, resuming and provenance").
    jobs = dry_run_jobs(finished)
    assert jobs["train_block"] == N_FOLDS and "prepare_modality" not in jobs, jobs
    snakemake(finished, "--cores", "2")
    assert model.exists() and dry_run_jobs(finished) == Counter()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished artefacts of other modalities were kept"


def test_the_same_settings_in_another_key_order_or_with_defaults_written_out_rerun_nothing(finished):
    """Issue 27 class 13: what yaml.safe_dump writes (sorted keys), and a default given explicitly."""
    def reorder(config):
        reversed_keys = {k: config[k] for k in reversed(list(config))}
        config.clear()
        config.update(reversed_keys)
        config["tissue"] = {"median_blur": 7, **config.get("tissue", {})}  # the schema's default, written out
        config["patches"] = {k: v for k, v in reversed(list((config.get("patches") or {}).items()))}

    edit_config(finished, reorder)
    assert dry_run_jobs(finished) == Counter()


def test_execution_settings_rerun_nothing(finished):
    """Issue 27 class 14: batch size, workers, threads and device decide speed, not results."""
    def faster(config):
        config["embedding"] = {**config.get("embedding", {}), "batch_size": 7, "num_workers": 0, "threads": 2, "device": "cpu"}
        train = config.setdefault("model", {}).setdefault("train", {})
        train.update(threads=2, device="cpu")

    edit_config(finished, faster)
    assert dry_run_jobs(finished) == Counter()


@pytest.mark.parametrize("spelling", ["./results/", "{work}/results"])
def test_another_spelling_of_the_results_folder_reruns_nothing_and_a_change_still_does(finished, spelling):
    """Issue 27 class 2: a new spelling must keep Snakemake's record of each job's parameters."""
    edit_config(finished, lambda c: c.update(results_dir=spelling.format(work=finished)))
    assert dry_run_jobs(finished) == Counter()
    edit_config(finished, lambda c: c["modalities"]["rna"].update(block={"lr": 0.002}))
    assert dry_run_jobs(finished)["train_block"] == N_FOLDS


def _user_rna_table(finished: Path, min_bytes: int = 1_100_000) -> Path:
    """The demo's omics as the user's own CSV, padded past 1 MB with patients who have no outcome
    (Snakemake checksums only inputs under 1 MB), and the run brought up to date with it."""
    table = pd.read_csv(finished / "results" / "demo_input" / "omics_all_clean.csv.gz")
    pad = table.copy()
    copies = []
    while sum(len(c) for c in copies) * (len(table.to_csv(index=False)) / len(table)) < min_bytes:
        c = pad.copy()
        c["case_id"] = [f"NOLABEL-{len(copies)}-{i}" for i in range(len(c))]
        copies.append(c)
    path = finished / "rna.csv"
    pd.concat([table, *copies]).to_csv(path, index=False)
    assert path.stat().st_size > 1_000_000
    edit_config(finished, lambda c: c["modalities"]["rna"].update(path="rna.csv"))
    snakemake(finished, "--cores", "2")
    assert dry_run_jobs(finished) == Counter()
    return path


def test_input_tables_are_followed_by_content_not_modification_time(finished):
    """Issue 27 classes 4 and 15: a touched table over 1 MB reruns nothing; the same table with
    new content under its old modification time (cp -p, rsync -a, tar x) reruns what reads it."""
    path = _user_rna_table(finished)
    old = path.stat()
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 10**11))  # touch: 100 s newer, same bytes
    assert dry_run_jobs(finished) == Counter()

    table = pd.read_csv(path)
    rna = [c for c in table.columns if c.endswith("_rnaseq")]
    table[rna] = table[rna].sample(frac=1.0, random_state=0).to_numpy()  # patients' values shuffled
    table.to_csv(path, index=False)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # ... with the old modification time
    jobs = dry_run_jobs(finished)
    assert jobs["prepare_modality"] == 1 and jobs["train_block"] == N_FOLDS and jobs["provenance"] == 1, jobs


def test_a_run_whose_snakemake_alone_was_killed_resumes_with_the_plain_command(finished):
    """Issue 27 class 16: kill -9 of the Snakemake process only; the job it started finishes as an
    orphan and stays marked incomplete. The plain command must still resume (no flag to know)."""
    out = finished / "results" / "demo"
    edit_config(finished, lambda c: c["modalities"]["rna"].update(block={"lr": 0.002}))
    logs = {log: log.stat().st_mtime_ns for log in (out / "logs" / "train_block" / "rna").glob("fold*/c*.log")}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(finished),
           "--configfile", str(finished / "config.yaml"), "--cores", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=finished)
    deadline = time.monotonic() + 300
    started = []
    while not started:
        assert proc.poll() is None and time.monotonic() < deadline, "no RNA block started"
        time.sleep(0.1)
        started = [log for log, before in logs.items() if log.exists() and log.stat().st_mtime_ns != before]
    proc.send_signal(signal.SIGKILL)  # Snakemake alone: its job goes on
    proc.wait(timeout=60)
    model = out / "blocks" / "rna" / started[0].parent.name / "candidates" / started[0].stem / "model.safetensors"
    while not model.exists():  # the orphan finishes its block
        assert time.monotonic() < deadline + 300, "the orphaned job never finished"
        time.sleep(0.2)
    snakemake(finished, "--unlock")
    snakemake(finished, "--cores", "2")  # the plain command, as the README says
    assert dry_run_jobs(finished) == Counter()


def test_changed_slide_features_retrain_every_reader_even_after_a_run_stopped_at_the_manifest(finished):
    """Issue 27 class 1: the slide models read the feature files through the modality's manifest.
    New features of the same shape, a run stopped right after the manifest is rewritten (--until,
    Ctrl-C, a head job's time limit): the next run must still retrain every model on them."""
    import h5py

    out = finished / "results" / "demo"
    manifest = pd.read_parquet(out / "modalities" / "wsi.parquet")
    path = finished / manifest.loc[manifest["status"] == "ok", "features"].iloc[0]
    with h5py.File(path, "r+") as f:
        f["features"][...] = f["features"][...] * 1.5 + 0.25
    snakemake(finished, "--cores", "1", "--until", "collect_slide_features")
    jobs = dry_run_jobs(finished)
    assert jobs["train_block"] == N_FOLDS and jobs["evaluate"] >= 1, jobs


def test_a_copied_project_reads_its_own_slides(finished, demo_run):
    """Issue 27 class 3: the slide index must not pin the original project's files."""
    slides = pd.read_parquet(finished / "results" / "demo" / "cohort" / "slides.parquet")
    for path in slides["path"]:
        assert not os.path.isabs(path) and (finished / path).is_file(), path
    first, other = (finished / p for p in slides["path"].iloc[:2])
    shutil.copyfile(other, first)  # a slide replaced in the copy only (in place: its folder is unchanged)
    jobs = dry_run_jobs(finished)
    assert jobs["segment_tissue"] == 1 and jobs["extract_patches"] == 1 and jobs["embed_patches"] == 1, jobs
    assert (demo_run / slides["path"].iloc[0]).read_bytes() != first.read_bytes(), "the original is untouched"
