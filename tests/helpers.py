"""Helpers shared by several test modules: the one-line-error checks, a small synthetic cohort with
blocks trained on it, and a slide cohort of feature bags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from lego.data.cohort_table import feature_manifest
from lego.data.folds import make_folds
from lego.slides.features import write_feature_bag


def load_bench(name: str):
    """A script of bench/ (not a package) imported as a module, for testing its functions."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lego_fails(args: list[str], capsys, *phrases: str) -> str:
    """A command refused with exit 2 and exactly one `lego ...` error line (no traceback) naming each phrase."""
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lego ")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    for phrase in phrases:
        assert phrase in err[0], err[0]
    return err[0]


def parse_fails(args: list[str], capsys, *phrases: str) -> None:
    """An option refused by the command-line parser: exit 2 and one error line naming it."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lego ")]
    assert len(err) == 1, err
    for phrase in phrases:
        assert phrase in err[0], err[0]


def cohort(tmp_path, n=90, seed=0, prefix="P"):
    """Labels, two tabular modalities carrying signal, and 70/15/15 folds, as parquet files."""
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    a, b = rng.normal(size=(n, 5)), rng.normal(size=(n, 4))
    hazard = np.exp(0.9 * a[:, 0] + 0.7 * b[:, 1])
    time = rng.exponential(30 / hazard)
    cens = rng.exponential(60, n)
    labels = pd.DataFrame({"patient_id": ids, "time": np.minimum(time, cens), "event": (time <= cens).astype(int)})
    paths = {"labels": tmp_path / "labels.parquet", "folds": tmp_path / "folds.parquet"}
    labels.to_parquet(paths["labels"])
    make_folds(labels, n_folds=2).to_parquet(paths["folds"])
    for name, x in (("zeta", a), ("alpha", b)):  # training order zeta -> alpha; sorted order differs
        df = pd.DataFrame(x, columns=[f"{name}{j}" for j in range(x.shape[1])]).astype(np.float32)
        df.insert(0, "patient_id", ids)
        paths[name] = tmp_path / f"{name}.parquet"
        df.to_parquet(paths[name])
    return paths


SMALL = {"latent_rows": 4, "latent_dim": 16, "encoder_width": 16, "heads": 2, "head_dim": 8, "epochs": 3, "batch_size": 16}


def trained_blocks(tmp_path, spec=SMALL, names=("zeta", "alpha"), n=90):
    """The synthetic cohort of ``cohort`` with a block per modality trained on fold 0 (tmp_path/blocks/<m>)."""
    from lego.steps.block_training import train_block

    p = cohort(tmp_path, n)
    dirs = []
    for m in names:
        d = tmp_path / "blocks" / m
        train_block(m, "tabular", str(p[m]), labels=str(p["labels"]), folds=str(p["folds"]), fold=0, task="survival", spec=spec, out_dir=str(d), device="cpu")
        dirs.append(str(d))
    return p, dirs


def slide_cohort(tmp_path, n=24):
    """Patients with one or two feature bags each (a signal in feature 0), labels and folds."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(n)]
    rows, risk = [], rng.normal(size=n)
    for i, pid in enumerate(ids):
        for s in range(1 + i % 2):
            k = 6 + s
            feats = rng.normal(size=(k, 8)).astype(np.float32)
            feats[0, 0] += 3 * risk[i]
            coords = np.stack([np.arange(k) * 256, np.full(k, 512 * s)], axis=1)
            path = tmp_path / f"{pid}-S{s}.h5"
            write_feature_bag(path, feats, coords, {"encoder": "toy"}, {"patch_size_level0": 256})
            rows.append({"slide_id": f"{pid}-S{s}", "patient_id": pid, "path": str(path)})
    slides = pd.DataFrame(rows)
    manifest = feature_manifest(slides, dict(zip(slides["slide_id"], slides["path"])))
    manifest.to_parquet(tmp_path / "wsi.parquet")
    time = np.exp(-risk) * 20
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": (rng.random(n) < 0.8).astype(int)})
    labels.to_parquet(tmp_path / "labels.parquet")
    make_folds(labels, n_folds=1, fractions=(0.5, 0.2, 0.3)).to_parquet(tmp_path / "folds.parquet")
    return tmp_path


def _wsi_block(d):
    """An ABMIL slide block trained one epoch on the slide cohort in d (d/blk)."""
    from lego.steps.block_training import train_block

    train_block("wsi", "wsi", str(d / "wsi.parquet"), labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), fold=0, task="survival",
                spec={**SMALL, "encoder": "abmil", "epochs": 1}, out_dir=str(d / "blk"), device="cpu")


def _evaluated(tmp_path):
    """Two blocks trained and evaluated on fold 0: (paths, block dirs, their two metrics.json)."""
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    common = ["--labels", str(p["labels"]), "--folds", str(p["folds"])]
    for d, m in zip(dirs, ("zeta", "alpha")):
        assert main(["evaluate", "--model-dir", d, "--name", f"block-{m}", "--data", f"{m}={p[m]}", *common,
                     "--out-dir", str(tmp_path / "ev" / m)]) == 0
    return p, dirs, [str(tmp_path / "ev" / m / "metrics.json") for m in ("zeta", "alpha")]
