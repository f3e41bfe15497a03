"""Pathology foundation encoders in plain torch: the published key layouts, a forward checked
against an independent reference, and the one-line error when weights are missing.

The key counts and parameter counts below come from instantiating each model with TRIDENT's timm
arguments (timm 1.0.31, on the meta device), not from this project's code: a layout that drifts
from the published checkpoints fails here. Full-size weights (up to 1.1 B parameters) are checked
on the meta device; forwards run at reduced depth with random weights in the same key layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lego.slides.encoders import create_encoder, encoder_info
from lego.slides.encoders.foundation import FOUNDATION, _builder, network
from tests.helpers import lego_fails

# name -> (keys, parameters in millions, {key: shape}) of the published timm layouts.
PUBLISHED = {
    "uni": (342, 303.4, {"pos_embed": (1, 197, 1024), "blocks.0.mlp.fc1.weight": (4096, 1024),
                         "blocks.0.mlp.fc2.weight": (1024, 4096), "blocks.0.attn.qkv.weight": (3072, 1024)}),
    "uni2_h": (343, 681.4, {"reg_token": (1, 8, 1536), "pos_embed": (1, 256, 1536),
                            "patch_embed.proj.weight": (1536, 3, 14, 14), "blocks.0.mlp.fc1.weight": (8192, 1536),
                            "blocks.0.mlp.fc2.weight": (1536, 4096)}),
    "virchow2": (455, 631.2, {"reg_token": (1, 4, 1280), "pos_embed": (1, 261, 1280),
                              "blocks.0.mlp.fc1.weight": (6832, 1280), "blocks.0.mlp.fc2.weight": (1280, 3416)}),
    "h_optimus_0": (567, 1134.8, {"reg_token": (1, 4, 1536), "pos_embed": (1, 256, 1536)}),
    "h_optimus_1": (567, 1134.8, {"reg_token": (1, 4, 1536), "pos_embed": (1, 256, 1536)}),
    "gigapath": (566, 1135.0, {"pos_embed": (1, 197, 1536), "patch_embed.proj.weight": (1536, 3, 16, 16),
                               "blocks.39.mlp.fc1.weight": (8192, 1536)}),
    "conch_v15": (352, None, {"trunk.pos_embed": (1, 197, 1024), "attn_pool_contrast.query": (1, 768),
                              "attn_pool_contrast.to_kv.weight": (1536, 1024), "ln_contrast.weight": (768,)}),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_layout_matches_the_published_checkpoint(name):
    keys, millions, shapes = PUBLISHED[name]
    with torch.device("meta"):
        state = network(FOUNDATION[name]).state_dict()
    assert len(state) == keys
    if millions is not None:
        assert round(sum(t.numel() for t in state.values()) / 1e6, 1) == millions
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key


def random_state(name: str, depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the model's key layout at ``depth`` blocks (LayerNorm weights near 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, t in network(FOUNDATION[name], depth).state_dict().items():
        scale = 0.02 if t.ndim > 1 else 0.1
        out[k] = torch.randn(t.shape, generator=g) * scale + (1.0 if k.endswith("norm1.weight") or
                                                             k.endswith("norm2.weight") or k.endswith("norm.weight") or
                                                             k.startswith(("ln_", "attn_pool_contrast.ln_"))
                                                             and k.endswith("weight") else 0.0)
    return out


# ------------------------------------------------------------- an independent reference forward

def ln(x, w, b, eps):
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def attention(q, k, v, heads):
    """Softmax attention written out head by head."""
    outs = []
    for h in np.array_split(np.arange(q.shape[-1]), heads):
        qh, kh, vh = q[..., h], k[..., h], v[..., h]
        w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(len(h)), dim=-1)
        outs.append(w @ vh)
    return torch.cat(outs, dim=-1)


def reference_tokens(s: dict, spec, x: torch.Tensor, prefix: str = "") -> torch.Tensor:
    p, D = spec.patch_size, spec.dim
    cols = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, 3*p*p), row-major patches
    t = cols @ s[prefix + "patch_embed.proj.weight"].reshape(D, -1).T + s[prefix + "patch_embed.proj.bias"]
    pos = s[prefix + "pos_embed"]
    if spec.pos_grid:  # DINO's resampling of the stored grid
        n = spec.pos_grid
        grid = F.interpolate(pos[:, 1:].reshape(1, n, n, D).permute(0, 3, 1, 2), mode="bicubic",
                             scale_factor=((spec.grid + 0.1) / n,) * 2).permute(0, 2, 3, 1).reshape(1, -1, D)
        pos = torch.cat([pos[:, :1], grid], dim=1)
    pre = [s[prefix + "cls_token"].expand(len(x), -1, -1)]
    if spec.reg_tokens:
        pre.append(s[prefix + "reg_token"].expand(len(x), -1, -1))
    t = torch.cat(pre + [t], 1) + pos if spec.pos_embed_prefix else torch.cat(pre + [t + pos], 1)
    for i in range(spec.depth):
        b = f"{prefix}blocks.{i}."
        h = ln(t, s[b + "norm1.weight"], s[b + "norm1.bias"], spec.eps)
        q, k, v = (h @ s[b + "attn.qkv.weight"].T + s[b + "attn.qkv.bias"]).split(D, dim=-1)
        a = attention(q, k, v, spec.heads) @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
        t = t + a * s[b + "ls1.gamma"]
        h = ln(t, s[b + "norm2.weight"], s[b + "norm2.bias"], spec.eps) @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"]
        if spec.mlp == "swiglu":
            half = h.shape[-1] // 2
            h = h[..., :half] * torch.sigmoid(h[..., :half]) * h[..., half:]
        else:
            h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        t = t + (h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"]) * s[b + "ls2.gamma"]
    return ln(t, s[prefix + "norm.weight"], s[prefix + "norm.bias"], spec.eps)


def reference(name: str, s: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    from dataclasses import replace

    model = FOUNDATION[name]
    spec = replace(model.spec, depth=depth)
    if model.layout == "conch":
        t = reference_tokens(s, spec, x, "trunk.")
        P = "attn_pool_contrast."
        q = ln(s[P + "query"], s[P + "ln_q.weight"], s[P + "ln_q.bias"], 1e-5) @ s[P + "to_q.weight"].T
        k, v = (ln(t, s[P + "ln_k.weight"], s[P + "ln_k.bias"], 1e-5) @ s[P + "to_kv.weight"].T).chunk(2, dim=-1)
        pooled = attention(q.expand(len(x), -1, -1), k, v, 8) @ s[P + "to_out.weight"].T
        return ln(pooled[:, 0], s["ln_contrast.weight"], s["ln_contrast.bias"], 1e-5)
    t = reference_tokens(s, spec, x)
    return torch.cat([t[:, 0], t[:, 1 + spec.reg_tokens:].mean(1)], 1) if spec.pool == "cls+mean" else t[:, 0]


def to_hf_dinov2(s: dict) -> dict:
    """The same weights in Hugging Face Dinov2 names (how Phikon-v2 is published)."""
    out = {"embeddings.cls_token": s["cls_token"], "embeddings.position_embeddings": s["pos_embed"],
           "embeddings.mask_token": torch.zeros(1, s["cls_token"].shape[-1]),
           "embeddings.patch_embeddings.projection.weight": s["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": s["patch_embed.proj.bias"],
           "layernorm.weight": s["norm.weight"], "layernorm.bias": s["norm.bias"]}
    for i in sorted({int(k.split(".")[1]) for k in s if k.startswith("blocks.")}):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            for n, chunk in zip(("query", "key", "value"), s[b + f"attn.qkv.{part}"].chunk(3)):
                out[h + f"attention.attention.{n}.{part}"] = chunk
            out[h + f"attention.output.dense.{part}"] = s[b + f"attn.proj.{part}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[h + f"{n}.{part}"] = s[b + f"{n}.{part}"]
        out[h + "layer_scale1.lambda1"], out[h + "layer_scale2.lambda1"] = s[b + "ls1.gamma"], s[b + "ls2.gamma"]
    return out


@pytest.mark.parametrize("name", sorted(FOUNDATION))
def test_a_checkpoint_in_the_published_layout_loads_and_matches_the_reference(name, tmp_path):
    depth, model = 2, FOUNDATION[name]
    state = random_state(name, depth)
    path = tmp_path / model.filename
    if model.layout == "hf_dinov2":
        save_file(to_hf_dinov2(state), str(path.with_suffix(".safetensors")))
        path = path.with_suffix(".safetensors")
    else:
        torch.save(state, path)  # the published files are torch pickles of tensors: loaded with weights_only
    enc = _builder(model)(str(path), depth=depth)
    again = _builder(model)(str(path), depth=depth)
    x = torch.randint(0, 256, (2, 3, model.spec.img_size, model.spec.img_size), dtype=torch.uint8)
    with torch.no_grad():
        out, out2 = enc.embed(x), again.embed(x)
        ref = reference(name, state, enc.prepare(x), depth)
    assert out.shape == (2, enc.dim) == (2, encoder_info()[name]["dim"])
    assert torch.equal(out, out2) and enc.digest == again.digest
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_normalisation_is_the_models_own():
    assert FOUNDATION["h_optimus_0"].mean == (0.707223, 0.578729, 0.703617)
    assert FOUNDATION["uni"].mean == (0.485, 0.456, 0.406)


def test_a_wrong_checkpoint_and_a_missing_one_are_one_line(tmp_path, capsys):
    torch.save(random_state("uni", 1), tmp_path / "uni_depth1.bin")
    lego_fails(["embed", "--slide", "s.svs", "--patches", "p.h5", "--encoder", "uni", "--out", "o.h5"], capsys,
               "encoders.uni.checkpoint", "pytorch_model.bin from https://huggingface.co/MahmoodLab/UNI")
    lego_fails(["embed", "--slide", "s.svs", "--patches", "p.h5", "--encoder", "virchow2", "--checkpoint",
                str(tmp_path / "nope.bin"), "--out", "o.h5"], capsys, "file not found", "paige-ai/Virchow2")
    lego_fails(["embed", "--slide", "s.svs", "--patches", "p.h5", "--encoder", "uni", "--checkpoint",
                str(tmp_path / "uni_depth1.bin"), "--out", "o.h5"], capsys, "not a uni checkpoint", "Missing key")


def test_a_foundation_encoder_embeds_a_demo_slide(demo_slides, tmp_path, monkeypatch):
    """The full path on CPU (tissue, patches, a 2-block UNI from a random checkpoint, a feature file)."""
    from lego.slides import encoders
    from lego.slides.features import read_feature_bag
    from lego.slides.patches import PatchParams
    from lego.slides.slide_jobs import run_embed, run_extract, run_segment
    from lego.slides.tissue import TissueParams

    torch.save(random_state("uni", 2), tmp_path / "uni.bin")
    monkeypatch.setitem(encoders._REGISTRY, "uni", (lambda checkpoint=None: _builder(FOUNDATION["uni"])(checkpoint, 2), ""))
    slide = demo_slides[0]
    run_segment(slide, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(seg_downsample=16))
    run_extract(slide, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams(patch_px=224, patch_mpp=1.0))
    enc = create_encoder("uni", str(tmp_path / "uni.bin"))
    run_embed(slide, tmp_path / "p.h5", enc, tmp_path / "f.h5", batch_size=8, num_workers=0)
    bag = read_feature_bag(tmp_path / "f.h5")
    assert bag.features.shape[1] == 1024 and len(bag.features) > 0 and np.isfinite(bag.features).all()
    assert bag.attrs["encoder"] == "uni" and bag.attrs["encoder_digest"] == enc.digest
