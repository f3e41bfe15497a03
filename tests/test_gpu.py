"""GPU correctness: what CPU-only CI can never show.

Skipped where no CUDA device is visible (CI, laptops). ``LEGO_TEST_ACCEL=cpu`` runs the same
checks with the CPU standing in for the accelerator, to check the tests themselves off a GPU.
Run on a GPU machine:  python -m pytest tests/test_gpu.py
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from lego.data.fold_data import ModalityTensors, collate, make_targets
from lego.models import BlockConfig, LegoBlock, LegoFuse
from lego.models import files as model_io
from lego.survival.discrimination import c_index
from lego.survival.loss import risk_score
from lego.train import TrainConfig, evaluate_loss, train

CPU = torch.device("cpu")


@pytest.fixture
def accel() -> torch.device:
    """The accelerator under test (CUDA), or the CPU when LEGO_TEST_ACCEL=cpu asks for it."""
    if os.environ.get("LEGO_TEST_ACCEL") == "cpu":
        return CPU
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible (GPU checks run on a GPU machine; LEGO_TEST_ACCEL=cpu to dry-run them)")
    return torch.device("cuda")


def block(in_dim: int, encoder: str = "snn", seed: int = 0) -> LegoBlock:
    torch.manual_seed(seed)
    return LegoBlock(BlockConfig(in_dim, 4, encoder=encoder, latent_rows=8, latent_dim=16, heads=2, head_dim=8,
                                 encoder_width=32))


class Single(torch.nn.Module):
    def __init__(self, name: str, b: LegoBlock):
        super().__init__()
        self.name, self.b = name, b

    def forward(self, inputs):
        return self.b(*inputs[self.name][:2])


def task(n: int = 240, seed: int = 0):
    """Survival driven by a tabular feature and by the mean of a bag's patch features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    bags = {f"p{i}": torch.from_numpy(rng.normal(loc=x[i, 1], size=(int(rng.integers(5, 40)), 8)).astype(np.float32))
            for i in range(n)}
    ids = list(bags)
    time = np.exp(-x[:, 0] - x[:, 1] + rng.normal(scale=0.3, size=n)) * 10
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": (rng.random(n) < 0.8).astype(int)})
    tab = ModalityTensors("tab", "tabular", {p: torch.from_numpy(x[i: i + 1]) for i, p in enumerate(ids)}, {}, 6)
    wsi = ModalityTensors("wsi", "wsi", bags, {}, 8)
    return ids, labels, {"tab": tab, "wsi": wsi}


def split(ids):
    return ids[:150], ids[150:190], ids[190:]


def risks(model, ids, mods, device) -> np.ndarray:
    model.to(device).eval()
    with torch.no_grad():
        inputs = {m: tuple(t.to(device) for t in v) for m, v in collate(ids, mods).items()}
        return risk_score(model(inputs)[1].float()).cpu().numpy()


def fit(name, encoder, device, mods, targets, ids, epochs=6):
    train_ids, val_ids, _ = split(ids)
    model = Single(name, block(mods[name].dim, encoder))
    cfg = TrainConfig(epochs=epochs, lr=3e-3, batch_size=16, patience=epochs, seed=1)
    result = train(model, {name: mods[name]}, targets, train_ids, val_ids, cfg=cfg, device=device, where=f"gpu test {name}")
    return model, cfg, result


@pytest.mark.parametrize("name,encoder", [("tab", "snn"), ("wsi", "abmil")])
def test_training_on_the_accelerator_keeps_its_best_epoch_and_is_deterministic(accel, name, encoder):
    ids, labels, mods = task()
    targets = make_targets(labels, split(ids)[0], "survival")
    model, cfg, result = fit(name, encoder, accel, mods, targets, ids)
    assert np.isfinite([h["val_loss"] for h in result["history"]]).all()
    # The restored weights are the best epoch's: validation loss reproduces the history's best.
    again = evaluate_loss(model, split(ids)[1], {name: mods[name]}, targets, cfg, accel)
    assert again == pytest.approx(result["best_val_loss"], rel=1e-5)
    twin, _, _ = fit(name, encoder, accel, mods, targets, ids)
    np.testing.assert_array_equal(risks(model, ids, mods, accel), risks(twin, ids, mods, accel))


@pytest.mark.parametrize("name,encoder", [("tab", "snn"), ("wsi", "abmil")])
def test_accelerator_and_cpu_training_learn_the_same_signal(accel, name, encoder):
    """bf16 autocast changes the arithmetic, not what is learnt: test C within 0.03 of the CPU's."""
    ids, labels, mods = task()
    targets = make_targets(labels, split(ids)[0], "survival")
    test_ids = split(ids)[2]
    t = labels.set_index("patient_id").loc[test_ids]
    scores = {}
    for dev in (CPU, accel):
        model, _, _ = fit(name, encoder, dev, mods, targets, ids, epochs=10)
        scores[dev.type] = c_index(t["time"].to_numpy(), t["event"].to_numpy(), risks(model, test_ids, mods, CPU))
    assert scores["cpu"] > 0.65, scores
    assert abs(scores[accel.type] - scores["cpu"]) <= 0.03, scores


def test_a_model_trained_on_the_accelerator_reloads_on_the_cpu(accel, tmp_path):
    ids, labels, mods = task()
    targets = make_targets(labels, split(ids)[0], "survival")
    model, _, _ = fit("wsi", "abmil", accel, mods, targets, ids)
    on_accel = risks(model, ids, mods, accel)
    b = model.b
    model_io.save(b, {"kind": "block", "block": b.cfg.to_dict()}, tmp_path)  # saved straight from the device
    loaded, _ = model_io.load(tmp_path)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    np.testing.assert_allclose(risks(Single("wsi", loaded), ids, mods, CPU), on_accel, rtol=1e-4, atol=1e-5)


def test_fuse_on_the_accelerator_reloads_to_its_best_validation_loss(accel, tmp_path):
    """The issue-11 defect (fuse evaluated in another block order) must not return on a GPU."""
    ids, labels, mods = task()
    train_ids, val_ids, _ = split(ids)
    targets = make_targets(labels, train_ids, "survival")
    blocks = {"wsi": fit("wsi", "abmil", accel, mods, targets, ids)[0].b,
              "tab": fit("tab", "snn", accel, mods, targets, ids)[0].b}
    fuse = LegoFuse({m: b.cpu() for m, b in blocks.items()}, "stack")
    cfg = TrainConfig(epochs=3, lr=1e-4, batch_size=16, patience=3, seed=2, keep_initial=True)
    result = train(fuse, mods, targets, train_ids, val_ids, cfg=cfg, device=accel, where="gpu test fuse")
    cfgs = {m: {"block": b.cfg.to_dict()} for m, b in blocks.items()}
    model_io.save(fuse, {"kind": "fuse", "blocks": cfgs, "order": list(cfgs), "mode": "stack", "head_method": "slerp"},
                  tmp_path)
    loaded, _ = model_io.load(tmp_path)
    got = evaluate_loss(loaded.to(accel), val_ids, mods, targets, cfg, accel)
    assert got == pytest.approx(result["best_val_loss"], rel=1e-4)


@pytest.fixture
def small_slide(tmp_path):
    """A small uncompressed Aperio-style slide and its patch grid (no JPEG codec needed)."""
    from lego.demo.aperio import write_aperio_tiff
    from lego.demo.cohort import SlideRenderer, SlideSpec
    from lego.slides.patches import PatchParams
    from lego.slides.slide_jobs import run_extract, run_segment
    from lego.slides.tissue import TissueParams

    path = tmp_path / "small.svs"
    spec = SlideSpec(3072, 2048, 0.5, 0.4)
    write_aperio_tiff(path, spec.width, spec.height, SlideRenderer(spec, np.random.default_rng(0)), mpp=0.5, app_mag=20,
                      compression="none")
    run_segment(path, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(seg_downsample=16))
    run_extract(path, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams())
    return path, tmp_path / "p.h5"


@pytest.mark.parametrize("name", ["efficientnet_lite0"])  # stain_texture has no network: numpy, on the CPU
def test_embedding_on_the_accelerator_matches_the_cpu(accel, name, small_slide, tmp_path):
    """fp16 autocast and pinned, non-blocking copies: per-patch features within cosine 0.999 of fp32."""
    from lego.slides.embed import embed_slide
    from lego.slides.encoders import create_encoder
    from lego.slides.features import read_feature_bag

    slide, patches = small_slide
    feats = {}
    for dev in ("cpu", accel.type):
        enc = create_encoder(name)
        embed_slide(slide, patches, enc, tmp_path / f"{dev}.h5", batch_size=16, num_workers=2, device=dev)
        bag = read_feature_bag(tmp_path / f"{dev}.h5")
        assert bag.attrs["device"] == dev and np.isfinite(bag.features).all()
        feats[dev] = bag.features.astype(np.float64)
    a, b = feats["cpu"], feats[accel.type]
    assert len(a) >= 8
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    assert cos.min() > 0.999, f"{name}: worst per-patch cosine {cos.min():.5f}"


@pytest.mark.parametrize("name", ["uni", "virchow2", "conch_v15"])
def test_foundation_encoder_bf16_on_the_accelerator_matches_fp32(accel, name, small_slide, tmp_path):
    """A foundation ViT (4 blocks, random weights in the published layout) under bf16 autocast on
    the GPU against fp32 on the CPU: per-patch features within cosine 0.99 (bf16 keeps 8 bits)."""
    from lego.slides.embed import embed_slide
    from lego.slides.encoders.foundation import FOUNDATION, _builder
    from lego.slides.features import read_feature_bag
    from tests.test_foundation_encoders import random_state

    torch.save(random_state(name, 4), tmp_path / "w.bin")
    slide, patches = small_slide
    feats = {}
    for dev in ("cpu", accel.type):
        enc = _builder(FOUNDATION[name])(str(tmp_path / "w.bin"), depth=4)
        embed_slide(slide, patches, enc, tmp_path / f"{dev}.h5", batch_size=16, num_workers=2, device=dev)
        feats[dev] = read_feature_bag(tmp_path / f"{dev}.h5").features.astype(np.float64)
    a, b = feats["cpu"], feats[accel.type]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    assert a.shape[1] == FOUNDATION[name].dim and cos.min() > 0.99, f"{name}: worst per-patch cosine {cos.min():.5f}"
