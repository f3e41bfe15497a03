import math

import numpy as np
import pandas as pd
import pytest
import torch

from lego.data.fold_data import ModalityTensors, collate, make_targets
from lego.errors import LegoError
from lego.models import BlockConfig, LegoBlock, LegoFuse, LegoMerge
from lego.models import files as model_io
from lego.models.encoders import ABMIL
from lego.models.merge import merge_heads, merge_latents, slerp, spherical_mean
from lego.survival.discrimination import auc, c_index
from lego.survival.loss import nll_survival_loss, risk_score
from lego.survival.targets import discretise, fit_bins
from lego.train import TrainConfig, evaluate_loss, train


def block(in_dim=6, encoder="snn", seed=0, **kw):
    torch.manual_seed(seed)
    return LegoBlock(BlockConfig(in_dim, 4, encoder=encoder, latent_rows=8, latent_dim=16, heads=2, head_dim=8, encoder_width=32, **kw)).eval()


def rand_complex(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


# ----------------------------------------------------------------- merges


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("method", ["sum", "mean", "harmonic"])
def test_n_way_latent_merges_have_the_right_shape(k, method):
    z = rand_complex(k, 4, 8, 16)
    out = merge_latents(z, torch.ones(k, 4, dtype=torch.bool), method)
    assert out.shape == (4, 8, 16) and out.dtype == torch.complex64 and torch.isfinite(torch.view_as_real(out)).all()


def test_two_way_merges_reduce_to_the_formulas():
    a, b = rand_complex(1, 3, 5, seed=1), rand_complex(1, 3, 5, seed=2)
    z = torch.stack([a, b])
    present = torch.ones(2, 1, dtype=torch.bool)
    torch.testing.assert_close(merge_latents(z, present, "sum"), a + b)
    torch.testing.assert_close(merge_latents(z, present, "mean"), (a + b) / 2)
    h = merge_latents(z, present, "harmonic")
    torch.testing.assert_close(h.abs(), 2 / (1 / a.abs() + 1 / b.abs()), rtol=1e-4, atol=1e-5)
    circular = torch.angle(torch.exp(1j * a.angle()) + torch.exp(1j * b.angle()))
    torch.testing.assert_close(h.angle(), circular, rtol=1e-4, atol=1e-5)


def test_phase_mean_is_circular_not_arithmetic():
    # Phases just either side of +-pi: the arithmetic mean (0) points the wrong way.
    a = torch.polar(torch.ones(1, 1, 1), torch.full((1, 1, 1), math.pi - 0.1))
    b = torch.polar(torch.ones(1, 1, 1), torch.full((1, 1, 1), -math.pi + 0.1))
    out = merge_latents(torch.stack([a, b]), torch.ones(2, 1, dtype=torch.bool), "harmonic")
    assert abs(abs(out.angle().item()) - math.pi) < 1e-4


def test_harmonic_merge_is_guarded_against_zeros():
    z = torch.zeros(3, 2, 4, 4, dtype=torch.complex64)
    out = merge_latents(z, torch.ones(3, 2, dtype=torch.bool), "harmonic")
    assert torch.isfinite(torch.view_as_real(out)).all()


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.9])
def test_spherical_mean_of_two_is_slerp(t):
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64) * 3
    got = spherical_mean(torch.stack([a, b]), torch.tensor([1 - t, t], dtype=torch.float64))
    torch.testing.assert_close(got, slerp(a, b, t), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_head_merges_are_n_way(k):
    heads = [block(seed=i).head for i in range(k)]
    lin = merge_heads(heads, "linear")
    expected = torch.stack([h.fc.weight for h in heads]).mean(0)
    torch.testing.assert_close(lin.fc.weight, expected)
    sph = merge_heads(heads, "slerp")
    assert sph.fc.weight.shape == heads[0].fc.weight.shape
    norms = torch.stack([h.fc.weight.norm() for h in heads])
    assert sph.fc.weight.norm().item() == pytest.approx(norms.mean().item(), rel=1e-5)


# ----------------------------------------------------------------- blocks


@pytest.mark.parametrize("encoder", ["snn", "abmil", "none"])
def test_block_output_is_independent_of_batch_and_padding(encoder):
    b = block(encoder=encoder)
    g = torch.Generator().manual_seed(0)
    bag = torch.randn(1, 5, 6, generator=g)
    alone = b(bag, torch.ones(1, 5, dtype=torch.bool))[1]
    # The same bag in a batch with another sample, padded to 9 tokens with garbage in the padding.
    x = torch.randn(2, 9, 6, generator=g) * 100
    x[1, :5] = bag[0]
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :9] = True
    mask[1, :5] = True
    batched = b(x, mask)[1][1:]
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_abmil_softmax_runs_over_patches_with_padding_masked():
    enc = ABMIL(6, hidden=16, attn_dim=8, out_dim=8).eval()
    x = torch.randn(3, 7, 6)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    _, w = enc.attention(x, mask)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    assert (w[0, 4:] == 0).all()


def test_weight_sharing_means_one_layer():
    shared, separate = block(share_weights=True), block(share_weights=False)
    assert shared.layers[0] is shared.layers[1]
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in separate.parameters())


def test_forward_never_writes_parameters():
    b = block()
    before = {k: v.clone() for k, v in b.state_dict().items()}
    f = LegoFuse({"a": b, "b": block(seed=1)}, "stack")
    x = torch.randn(2, 1, 6)
    inputs = {m: (x, torch.ones(2, 1, dtype=torch.bool), torch.ones(2, dtype=torch.bool)) for m in "ab"}
    f(inputs)
    for k, v in b.state_dict().items():
        torch.testing.assert_close(v, before[k])


# ----------------------------------------------------------------- missing modalities


@pytest.mark.parametrize("method", ["sum", "mean", "harmonic"])
def test_missing_modality_uses_the_latents_it_has(method):
    blocks = {"a": block(seed=0), "b": block(seed=1), "c": block(seed=2)}
    m = LegoMerge(blocks, method).eval()
    x = torch.randn(2, 1, 6)
    full = torch.ones(2, 1, dtype=torch.bool)
    present = torch.tensor([True, False])
    inputs = {"a": (x, full, torch.ones(2, dtype=torch.bool)), "b": (x, full, present), "c": (x, full, present)}
    latent, _ = m(inputs)
    alone = blocks["a"].latent_from(x, full)
    torch.testing.assert_close(latent[1], alone[1], rtol=1e-5, atol=1e-5)  # only modality a: merge = a
    # The absent modalities' inputs must not matter.
    inputs["b"] = (x * 50, full, present)
    torch.testing.assert_close(m(inputs)[1][1], m({**inputs, "b": (x, full, present)})[1][1])


@pytest.mark.parametrize("mode", ["stack", "weave"])
def test_fuse_handles_missing_modalities(mode):
    f = LegoFuse({"a": block(seed=0), "b": block(in_dim=3, encoder="abmil", seed=1)}, mode).eval()
    inputs = collate(["p1", "p2", "p3"], {
        "a": ModalityTensors("a", "tabular", {"p1": torch.randn(1, 6), "p2": torch.randn(1, 6)}, {}, 6),
        "b": ModalityTensors("b", "wsi", {"p2": torch.randn(4, 3), "p3": torch.randn(2, 3)}, {}, 3),
    })
    _, logits = f(inputs)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()


# ----------------------------------------------------------------- targets, loss, metrics


def test_bins_are_fitted_on_training_patients_only():
    labels = pd.DataFrame({"patient_id": list("abcdefgh"), "time": [1, 2, 3, 4, 5, 6, 7, 100.0], "event": [1] * 8})
    t1 = make_targets(labels, list("abcdefg"), "survival")
    labels.loc[7, "time"] = 1000.0  # a test patient's time changes: the edges must not move
    t2 = make_targets(labels, list("abcdefg"), "survival")
    assert t1.bins == t2.bins and t1.bins[0] == 0 and math.isinf(t1.bins[-1])
    np.testing.assert_allclose(t1.bins[1:-1], np.quantile([1, 2, 3, 4, 5, 6, 7], [0.25, 0.5, 0.75]))


def test_bins_fall_back_when_training_has_no_events(caplog):
    edges = fit_bins(np.array([1.0, 2, 3, 4, 5]), np.zeros(5), where="modality 'rna', fold 3")
    assert "fold 3" in caplog.text and len(edges) == 5
    assert discretise(np.array([0.5, 4.5, 99.0]), edges).tolist() == [0, 3, 3]


def test_survival_loss_and_risk():
    logits = torch.tensor([[3.0, 3, 3, 3], [-3.0, -3, -3, -3]])
    risk = risk_score(logits)
    assert risk[0] > risk[1], "high hazards mean high risk"
    early_event = nll_survival_loss(logits, torch.tensor([0, 0]), torch.tensor([1, 1]), alpha=0.4)
    assert torch.isfinite(early_event)
    assert c_index(np.array([1.0, 2.0]), np.array([1, 1]), np.array([2.0, 1.0])) == 1.0
    assert math.isnan(c_index(np.array([1.0, 2.0]), np.array([0, 0]), np.array([2.0, 1.0])))


def test_auc_uses_scores_not_argmax():
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])  # argmax says all class 0
    assert auc(y, scores) == 1.0
    three = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    assert auc(np.array([0, 1, 2, 0]), three) == 1.0


# ----------------------------------------------------------------- training and files


def toy_task(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    time = np.exp(-x[:, 0]) * 10
    ids = [f"p{i}" for i in range(n)]
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": 1})
    mod = ModalityTensors("a", "tabular", {p: torch.from_numpy(x[i : i + 1]) for i, p in enumerate(ids)}, {}, 6)
    return ids, labels, mod


class Single(torch.nn.Module):
    def __init__(self, b):
        super().__init__()
        self.b = b

    def forward(self, inputs):
        return self.b(*inputs["a"][:2])


def test_early_stopping_restores_the_best_weights():
    ids, labels, mod = toy_task()
    targets = make_targets(labels, ids[:40], "survival")
    model = Single(block())
    cfg = TrainConfig(epochs=12, lr=5e-3, patience=3, batch_size=8)
    result = train(model, {"a": mod}, targets, ids[:40], ids[40:], cfg=cfg, device=torch.device("cpu"), where="test")
    best = min(h["val_loss"] for h in result["history"])
    assert result["best_val_loss"] == pytest.approx(best)
    assert evaluate_loss(model, ids[40:], {"a": mod}, targets, cfg, torch.device("cpu")) == pytest.approx(best, rel=1e-5)


def test_training_without_validation_patients_says_what_it_stops_on(caplog):
    """Issue 27: a block with no validation patients early-stopped on its training loss without a word."""
    import logging

    ids, labels, mod = toy_task()
    targets = make_targets(labels, ids[:40], "survival")
    with caplog.at_level(logging.WARNING):
        result = train(Single(block()), {"a": mod}, targets, ids[:40], [], cfg=TrainConfig(epochs=2),
                       device=torch.device("cpu"), where="modality 'a', fold 0")
    assert "modality 'a', fold 0: no validation patients" in caplog.text and "folds.fractions" in caplog.text
    assert result["stopped_on"] == "training loss"


def test_training_is_deterministic():
    ids, labels, mod = toy_task()
    targets = make_targets(labels, ids[:40], "survival")
    outs = []
    for _ in range(2):
        model = Single(block())
        train(model, {"a": mod}, targets, ids[:40], ids[40:], cfg=TrainConfig(epochs=3, seed=5), device=torch.device("cpu"), where="t")
        outs.append(model.eval()(collate(ids, {"a": mod}))[1])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_nan_loss_names_modality_and_fold():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, inputs):
            return None, self.w * float("nan") + torch.zeros(len(inputs["a"][0]), 4)

    ids, labels, mod = toy_task()
    with pytest.raises(LegoError, match="modality 'a', fold 2: loss became nan"):
        train(Broken(), {"a": mod}, make_targets(labels, ids, "survival"), ids, [], cfg=TrainConfig(epochs=1),
              device=torch.device("cpu"), where="modality 'a', fold 2")


@pytest.mark.parametrize("kind", ["block", "merge", "fuse"])
def test_save_load_round_trips_predictions_exactly(kind, tmp_path):
    blocks = {"a": block(seed=0, share_weights=True), "b": block(in_dim=3, encoder="abmil", seed=1)}
    cfgs = {m: {"block": b.cfg.to_dict()} for m, b in blocks.items()}
    if kind == "block":
        model, config = blocks["a"], {"kind": "block", "block": blocks["a"].cfg.to_dict()}
    elif kind == "merge":
        model = LegoMerge(blocks, "harmonic", "slerp")
        config = {"kind": "merge", "blocks": cfgs, "order": list(cfgs), "method": "harmonic", "head_method": "slerp"}
    else:
        model, config = LegoFuse(blocks, "weave"), {"kind": "fuse", "blocks": cfgs, "order": list(cfgs), "mode": "weave", "head_method": "slerp"}
    model.eval()
    inputs = collate(["p1", "p2"], {
        "a": ModalityTensors("a", "tabular", {"p1": torch.randn(1, 6), "p2": torch.randn(1, 6)}, {}, 6),
        "b": ModalityTensors("b", "wsi", {"p1": torch.randn(5, 3)}, {}, 3),
    })
    run = (lambda m: m(*inputs["a"][:2])[1]) if kind == "block" else (lambda m: m(inputs)[1])
    model_io.save(model, config, tmp_path)
    loaded, _ = model_io.load(tmp_path)
    torch.testing.assert_close(run(loaded), run(model), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def _saved_block(path):
    b = block(seed=0)
    model_io.save(b, {"kind": "block", "block": b.cfg.to_dict()}, path)
    return b


def _nan_weights(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    name = next(k for k in tensors if tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, path / "model.safetensors")


def _rows(rows):
    torch.manual_seed(0)
    return LegoBlock(BlockConfig(6, 4, latent_rows=rows, latent_dim=16, heads=2, head_dim=8, encoder_width=32)).eval()


def _swapped_shape(path):
    other = _rows(5)
    model_io.save(other, {"kind": "block", "block": other.cfg.to_dict()}, path / "other")
    (path / "model.safetensors").write_bytes((path / "other" / "model.safetensors").read_bytes())


def _set_config(path, change):
    import json

    cfg = json.loads((path / "config.json").read_text())
    change(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


TAMPER = {
    "empty weights": (lambda p: (p / "model.safetensors").write_bytes(b""), "does not hold this model's weights"),
    "truncated weights": (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:200]),
                          "does not hold this model's weights"),
    "random weights file": (lambda p: (p / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(5000)),
                            "does not hold this model's weights"),
    "swapped tensor shape": (_swapped_shape, "does not hold this model's weights"),
    "NaN weight": (_nan_weights, "NaN or infinite"),
    "invalid JSON": (lambda p: (p / "config.json").write_text("{not json"), "not a valid model config"),
    "incomplete config": (lambda p: _set_config(p, lambda c: c.pop("block")), "not a valid model config"),
    "unknown key": (lambda p: _set_config(p, lambda c: c["block"].update(colour="red")), "not a valid model config"),
    "absurd size": (lambda p: _set_config(p, lambda c: c["block"].update(latent_rows=10**9)), "latent_rows"),
    "unknown kind": (lambda p: _set_config(p, lambda c: c.update(kind="tree")), "unknown model kind"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_tampered_model_folder_is_one_clear_error(case, tmp_path):
    from lego.errors import InputError

    _saved_block(tmp_path)
    tamper, message = TAMPER[case]
    tamper(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        model_io.load(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_blocks_of_different_latent_sizes_refuse_to_merge(tmp_path):
    from lego.errors import InputError
    from lego.steps.fold_blocks import load_blocks as _load_blocks

    dirs = []
    for name, rows in (("a", 4), ("b", 6)):
        b = _rows(rows)
        model_io.save(b, {"kind": "block", "modality": name, "fold": 0, "bins": [0, 1, 2], "block": b.cfg.to_dict()},
                      tmp_path / name)
        dirs.append(str(tmp_path / name))
    with pytest.raises(InputError, match="different shapes cannot merge.*latent_rows"):
        _load_blocks(dirs)


def test_non_finite_predictions_are_refused_naming_the_model():
    from lego.errors import InputError
    from lego.steps.inference import predict

    b = block(seed=0)
    mod = ModalityTensors("a", "tabular", {"p1": torch.randn(1, 6), "p2": torch.full((1, 6), float("inf"))}, {}, 6)
    with pytest.raises(InputError, match="model for a .*non-finite predictions for 1 patient.*p2"):
        predict(b, {"kind": "block", "modality": "a", "fold": 0, "task": "survival", "bins": [0, 1, 2, 3, 4]},
                {"a": mod}, ["p1", "p2"])


@pytest.mark.parametrize("kind", ["block", "fuse-stack", "fuse-weave"])
def test_models_train_under_reduced_precision_autocast(kind, monkeypatch):
    """On a GPU the trainer autocasts to bfloat16 and cuFFT has no bfloat16 kernels, so every FFT
    must run in float32 (training on an H200 failed before). CPU autocast exercises the same path,
    with the FFTs made as strict as CUDA's."""
    real_fft, real_ifft = torch.fft.fft, torch.fft.ifft

    def strict(fn):
        def run(x, *a, **kw):
            if x.dtype in (torch.bfloat16, torch.float16):
                raise RuntimeError(f"Unsupported dtype {x.dtype} (as CUDA)")
            return fn(x, *a, **kw)
        return run

    monkeypatch.setattr(torch.fft, "fft", strict(real_fft))
    monkeypatch.setattr(torch.fft, "ifft", strict(real_ifft))
    blocks = {"a": block(seed=0), "b": block(in_dim=3, encoder="abmil", seed=1)}
    inputs = collate(["p1", "p2", "p3"], {
        "a": ModalityTensors("a", "tabular", {p: torch.randn(1, 6) for p in ("p1", "p2", "p3")}, {}, 6),
        "b": ModalityTensors("b", "wsi", {"p1": torch.randn(5, 3), "p2": torch.randn(2, 3)}, {}, 3),
    })
    model = blocks["a"] if kind == "block" else LegoFuse(blocks, kind.split("-")[1])
    model.train()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(*inputs["a"][:2])[1] if kind == "block" else model(inputs)[1]
    loss = nll_survival_loss(logits.float(), torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_training_threads_do_not_change_the_model():
    """Issue 27 class 14: model.train.threads is an execution setting (no rerun trigger)."""
    ids, labels, mod = toy_task()
    targets = make_targets(labels, ids[:40], "survival")
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = Single(block())
            train(model, {"a": mod}, targets, ids[:40], ids[40:], cfg=TrainConfig(epochs=3, seed=5),
                  device=torch.device("cpu"), where="t")
            outs.append(model.eval()(collate(ids, {"a": mod}))[1])
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
