import h5py
import numpy as np
import pytest
import torch

from lego.errors import ConfigError, InputError
from lego.slides.embed import embed_slide
from lego.slides.encoders import Encoder, create_encoder, list_encoders, to_chw_uint8
from lego.slides.encoders.resnet50_trunc import ResNet50Trunc
from lego.slides.features import import_feature_file, read_feature_bag, write_feature_bag
from lego.slides.patches import PatchParams
from lego.slides.slide_jobs import run_embed, run_extract, run_segment
from lego.slides.tissue import TissueParams
from tests.helpers import lego_fails


def test_registry_lists_the_shipped_encoders():
    names = list_encoders()
    assert {"stain_texture", "efficientnet_lite0", "resnet50_trunc", "uni", "uni2_h", "conch_v15", "virchow2",
            "h_optimus_0", "h_optimus_1", "gigapath", "phikon_v2"} <= set(names)
    with pytest.raises(ConfigError, match="unknown encoder 'uni3'.*stain_texture"):
        create_encoder("uni3")


def test_stain_texture_separates_stains():
    enc = create_encoder("stain_texture")
    brown = np.full((128, 128, 3), (140, 80, 40), np.uint8)
    blue = np.full((128, 128, 3), (90, 90, 170), np.uint8)
    with torch.no_grad():
        f = enc.embed(torch.stack([to_chw_uint8(brown), to_chw_uint8(blue)]))
    assert f.shape == (2, enc.dim) == (2, 24)
    dab_mean, h_mean = f[:, 10], f[:, 0]  # stain means: H at 0, DAB at 10
    assert dab_mean[0] > dab_mean[1] and h_mean[1] > h_mean[0]


def test_efficientnet_uses_the_shipped_imagenet_weights():
    a, b = create_encoder("efficientnet_lite0"), create_encoder("efficientnet_lite0")
    assert a.dim == 1280 and a.digest == b.digest and len(a.digest) == 16
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert a.model(x).shape == (2, 1280)


def test_cpu_micro_batches_and_channels_last_give_the_plain_features():
    """The CPU fast path (NHWC, compute batches of 4) must not change what a batch embeds to."""
    enc = create_encoder("efficientnet_lite0")
    assert enc.channels_last and enc.cpu_batch == 4
    x = torch.randint(0, 256, (9, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = enc.embed(x)
        plain = enc.model.to(memory_format=torch.contiguous_format)(enc.prepare(x))
    assert fast.shape == (9, 1280)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_resnet50_trunc_needs_a_local_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="needs local weights"):
        create_encoder("resnet50_trunc")
    torch.manual_seed(0)
    state = ResNet50Trunc().state_dict()
    # A full torchvision checkpoint also holds layer4 and fc: they are ignored.
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["layer4.0.conv1.weight"] = torch.zeros(512, 1024, 1, 1)
    torch.save({k: v for k, v in state.items()}, tmp_path / "r50.pth")
    enc = create_encoder("resnet50_trunc", str(tmp_path / "r50.pth"))
    assert enc.dim == 1024
    with torch.no_grad():
        assert enc.model(torch.rand(1, 3, 224, 224)).shape == (1, 1024)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match="not a torchvision ResNet-50"):
        create_encoder("resnet50_trunc", str(tmp_path / "wrong.pth"))


def test_pickled_modules_are_refused(tmp_path):
    torch.save(ResNet50Trunc(), tmp_path / "module.pth")  # a whole pickled module, not a state dict
    with pytest.raises(ConfigError, match="module.pth: not a readable weights file .*unpickle arbitrary objects"):
        create_encoder("resnet50_trunc", str(tmp_path / "module.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ConfigError, match="empty.pth: neither a safetensors nor a torch weights file"):
        create_encoder("resnet50_trunc", str(tmp_path / "empty.pth"))
    with pytest.raises(ConfigError, match="list.pth: holds a list, not a state dict"):
        create_encoder("resnet50_trunc", str(tmp_path / "list.pth"))


@pytest.fixture(scope="module")
def patched_slide(demo_slides, tmp_path_factory):
    d = tmp_path_factory.mktemp("patched")
    slide = demo_slides[0]
    run_segment(slide, d / "t.parquet", d / "t.png", TissueParams(seg_downsample=16))
    run_extract(slide, d / "t.parquet", d / "p.h5", PatchParams())
    return slide, d / "p.h5"


def test_embedding_writes_features_with_provenance(patched_slide, tmp_path):
    slide, patches = patched_slide
    enc = create_encoder("stain_texture")
    stats = embed_slide(slide, patches, enc, tmp_path / "f.h5", batch_size=7, num_workers=0)
    bag = read_feature_bag(tmp_path / "f.h5")
    with h5py.File(patches) as f:
        coords = f["coords"][:]
    assert stats["patches"] == len(coords) == len(bag.features)
    np.testing.assert_array_equal(bag.coords, coords)
    assert bag.attrs["encoder"] == "stain_texture" and bag.attrs["encoder_digest"] == enc.digest
    assert bag.attrs["patch_mpp"] == 0.5 and bag.attrs["device"] == "cpu"
    # Batch composition must not change a patch's features.
    embed_slide(slide, patches, enc, tmp_path / "g.h5", batch_size=64, num_workers=0)
    np.testing.assert_allclose(read_feature_bag(tmp_path / "g.h5").features, bag.features, rtol=1e-5, atol=1e-6)


def test_a_network_embeds_the_same_with_dataloader_workers(patched_slide, tmp_path):
    """Network encoders read patches in DataLoader workers (stain_texture, an array encoder, reads in
    its own process): a small network stands in for a CNN."""
    slide, patches = patched_slide
    net = torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    enc = Encoder("tiny", 5, 64, net, "tiny-digest", normalise=False)
    net(torch.zeros(1, 3, 64, 64))  # materialise the lazy layer
    embed_slide(slide, patches, enc, tmp_path / "w0.h5", batch_size=4, num_workers=0)
    embed_slide(slide, patches, enc, tmp_path / "w2.h5", batch_size=4, num_workers=2)
    w0 = read_feature_bag(tmp_path / "w0.h5")
    assert len(w0.features) >= 16 and w0.features.shape[1] == 5  # enough patches that the workers start
    np.testing.assert_allclose(read_feature_bag(tmp_path / "w2.h5").features, w0.features, rtol=1e-5)


def test_an_array_encoder_reads_patches_in_threads_and_embeds_the_same(patched_slide, tmp_path):
    slide, patches = patched_slide
    enc = create_encoder("stain_texture")
    embed_slide(slide, patches, enc, tmp_path / "t0.h5", batch_size=4, num_workers=0)
    embed_slide(slide, patches, enc, tmp_path / "t3.h5", batch_size=4, num_workers=3, device="cuda")
    t0, t3 = read_feature_bag(tmp_path / "t0.h5"), read_feature_bag(tmp_path / "t3.h5")
    assert len(t0.features) >= 16  # enough patches that the threads start
    np.testing.assert_array_equal(t3.features, t0.features)
    assert t3.attrs["device"] == "cpu"  # no network: a GPU asked for is not used, and the file says so


def _stain_texture_v1(x: torch.Tensor) -> torch.Tensor:
    """stain_texture/1 as it was first written, in torch, on float (B, 3, S, S) in [0, 1]."""
    from lego.slides.encoders.stain_texture import HED_FROM_RGB

    x = x.clamp(1 / 255, 1.0)
    b = x.shape[0]
    od = -torch.log(x)
    hed = torch.einsum("bchw,cd->bdhw", od, torch.from_numpy(HED_FROM_RGB)).clamp_min(0).flatten(2)
    q = torch.quantile(hed, torch.tensor([0.1, 0.5, 0.9]), dim=2).permute(1, 2, 0)
    stain = torch.cat([hed.mean(2, keepdim=True), hed.std(2, keepdim=True), q], dim=2).reshape(b, 15)
    rgb = x.flatten(2)
    grey = x.mean(1)
    gx, gy = grey[:, :, 1:] - grey[:, :, :-1], grey[:, 1:, :] - grey[:, :-1, :]
    grad = torch.stack([gx.abs().mean((1, 2)), gy.abs().mean((1, 2))], dim=1)
    tissue = (od.sum(1) > 0.3).float().mean((1, 2)).unsqueeze(1)
    return torch.cat([stain, rgb.mean(2), rgb.std(2), grad, tissue], dim=1)


def test_stain_texture_in_numpy_gives_version_1_features_so_old_and_new_bags_mix(demo_slides, patched_slide):
    """The array encoder keeps the digest of stain_texture/1: its features must be those of the
    first (torch) definition to float32 rounding, on real slide patches and on flat colours."""
    from lego.slides.embed import PatchReader
    from lego.slides.patches import read_patches

    slide, patches = patched_slide
    grid = read_patches(patches)
    reader = PatchReader(slide, grid.coords, grid.attrs, 128, None)
    flat = np.stack([np.full((3, 128, 128), v, np.uint8) for v in (0, 1, 128, 255)])
    two_tone = np.full((128 * 128, 3), 230, np.uint8)
    two_tone[:1639] = (60, 20, 90)  # far-apart neighbours at the 10 % quantile: float32 ranks matter
    flat = np.concatenate([flat, two_tone.reshape(128, 128, 3).transpose(2, 0, 1)[None]])
    batch = np.concatenate([np.stack([reader[i] for i in range(len(reader))]), flat])
    enc = create_encoder("stain_texture")
    new = enc.arrays(batch)
    assert new.dtype == np.float32 and new.shape == (len(batch), 24) and np.isfinite(new).all()
    np.testing.assert_allclose(new, _stain_texture_v1(torch.from_numpy(batch).float() / 255).numpy(), rtol=1e-5, atol=1e-5)


def test_failed_slide_propagates_to_features(fixtures_dir, tmp_path):
    bad = fixtures_dir / "unreadable.svs"
    run_segment(bad, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(), record_failure=True)
    run_extract(bad, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams(), record_failure=True)
    reason = run_embed(bad, tmp_path / "p.h5", create_encoder("stain_texture"), tmp_path / "f.h5", record_failure=True)
    bag = read_feature_bag(tmp_path / "f.h5")
    assert not bag.ok and bag.features.shape == (0, 24) and bag.attrs["stage"] == "segment_tissue"
    assert reason == f"[segment_tissue] {bag.attrs['reason']}"


@pytest.mark.parametrize("layout", ["trident", "stamp", "batched"])
def test_external_feature_files_are_read(tmp_path, layout):
    feats = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    coords = np.arange(10).reshape(5, 2)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        if layout == "trident":
            f["features"], f["coords"] = feats, coords
            f["coords"].attrs["patch_size_level0"] = 512
        elif layout == "stamp":
            f["feats"], f["coords"] = feats, coords
            f.attrs["extractor"] = "ctranspath"
        else:
            f["features"], f["coords"] = feats[None], coords[None]
    bag = read_feature_bag(tmp_path / "x.h5")
    np.testing.assert_array_equal(bag.features, feats)
    np.testing.assert_array_equal(bag.coords, coords)
    out = import_feature_file(tmp_path / "x.h5", tmp_path / "ours.h5", "S1")
    np.testing.assert_array_equal(out.features, feats)
    assert out.attrs["source_file"].endswith("x.h5")
    if layout == "stamp":
        assert out.attrs["encoder"] == "ctranspath"


def test_bad_feature_files(tmp_path):
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_feature_bag(tmp_path / "text.h5")
    with h5py.File(tmp_path / "nofeat.h5", "w") as f:
        f["coords"] = np.zeros((2, 2))
    with pytest.raises(InputError, match="no 'features'"):
        read_feature_bag(tmp_path / "nofeat.h5")
    write_feature_bag(tmp_path / "nan.h5", np.array([[np.nan, 1.0]]), np.zeros((1, 2)), {})
    with pytest.raises(InputError, match="NaN"):
        read_feature_bag(tmp_path / "nan.h5")


def _external(path, feats):
    with h5py.File(path, "w") as f:
        f["features"] = np.asarray(feats, dtype=np.float32)
        f["coords"] = np.zeros((len(feats), 2), dtype=np.int64)


BAD_IMPORTS = {
    "truncated": (lambda p: (_external(p, np.ones((50, 8))), p.write_bytes(p.read_bytes()[:1500])), "not a readable HDF5"),
    "nan": (lambda p: _external(p, [[np.nan, 1.0]]), "NaN or infinite"),
    "inf": (lambda p: _external(p, [[np.inf, 1.0]]), "NaN or infinite"),
    "zero rows": (lambda p: _external(p, np.zeros((0, 8))), "0 patch features"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_import_features_records_a_bad_file_and_goes_on(case, tmp_path, capsys):
    from lego.cli import main
    from lego.slides.features import bag_info

    make, reason = BAD_IMPORTS[case]
    make(tmp_path / "src.h5")
    args = ["import-features", "--src", str(tmp_path / "src.h5"), "--out", str(tmp_path / "out.h5"), "--slide-name", "S1"]
    assert main(args) == 2 and reason in capsys.readouterr().err  # without --record-failure: one line, exit 2
    assert main(args + ["--record-failure"]) == 0
    info = bag_info(tmp_path / "out.h5")
    assert info["status"] == "failed" and reason in info["reason"] and info["stage"] == "import_features"


def test_feature_manifest_fails_empty_unreadable_and_odd_width_bags(tmp_path):
    import pandas as pd

    from lego.data.cohort_table import build_patients_table, feature_manifest

    write_feature_bag(tmp_path / "a.h5", np.ones((3, 8)), np.zeros((3, 2)), {})
    write_feature_bag(tmp_path / "b.h5", np.ones((2, 8)), np.zeros((2, 2)), {})
    write_feature_bag(tmp_path / "c.h5", np.ones((2, 5)), np.zeros((2, 2)), {})  # another encoder's width
    write_feature_bag(tmp_path / "d.h5", np.ones((0, 8)), np.zeros((0, 2)), {})  # "ok" but no patch
    (tmp_path / "e.h5").write_text("garbage")
    slides = pd.DataFrame({"slide_id": list("abcde"), "patient_id": ["P1", "P1", "P2", "P3", "P4"]})
    manifest = feature_manifest(slides, {s: tmp_path / f"{s}.h5" for s in "abcde"}).set_index("slide_id")
    assert manifest["status"].to_dict() == {"a": "ok", "b": "ok", "c": "failed", "d": "failed", "e": "failed"}
    assert "5-dimensional features where the other slides have 8" in manifest.loc["c", "reason"]
    assert "0 rows" in manifest.loc["d", "reason"] and "unreadable" in manifest.loc["e", "reason"]
    labels = pd.DataFrame({"patient_id": ["P1", "P2", "P3", "P4"]})
    table = build_patients_table(labels, {}, {"wsi": manifest.reset_index()}).set_index("patient_id")
    assert table["has_wsi"].to_dict() == {"P1": True, "P2": False, "P3": False, "P4": False}


def test_checkpoints_are_read_by_content_and_refused_where_none_is_taken(tmp_path, capsys):
    from safetensors.torch import save_file

    from lego.slides.encoders import load_state_dict

    save_file({"w": torch.ones(2)}, str(tmp_path / "st_as.bin"))  # a safetensors file under another name
    assert set(load_state_dict(str(tmp_path / "st_as.bin"))) == {"w"}
    (tmp_path / "rand.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    base = ["embed", "--slide", "s.svs", "--patches", "p.h5", "--out", "o.h5"]
    lego_fails([*base, "--encoder", "uni", "--checkpoint", str(tmp_path / "rand.bin")], capsys,
               "neither a safetensors nor a torch weights file")
    lego_fails([*base, "--encoder", "stain_texture", "--checkpoint", str(tmp_path / "st_as.bin")], capsys,
               "encoder 'stain_texture' has no weights")
