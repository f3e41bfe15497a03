"""Writes cannot be redirected by another user, and files get the modes a shared project needs
(issue 27, classes 10 and 12)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from lego.errors import InputError
from lego.io import atomic_path, write_json
from lego.models import BlockConfig, LegoBlock
from lego.models import files as model_files


def test_a_symlink_planted_at_the_old_predictable_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "results" / "config.json"
    out.parent.mkdir()
    for name in (f".{out.name}.tmp-{os.getpid()}", f".{out.name}.tmp"):  # the names a neighbour could predict
        (out.parent / name).symlink_to(victim)
    write_json({"a": 1}, out)
    assert victim.read_text() == "precious\n"
    assert out.read_text().strip().startswith("{") and not out.is_symlink()


def test_the_temporary_file_lives_in_a_private_folder_that_is_removed_afterwards(tmp_path):
    out = tmp_path / "x.parquet"
    with atomic_path(out) as tmp:
        folder = tmp.parent
        assert folder != tmp_path and folder.parent == tmp_path
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert tmp.name == out.name  # writers that pick a format by suffix still see it
        tmp.write_bytes(b"x")
    assert out.read_bytes() == b"x" and not folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]


def test_a_failed_write_leaves_neither_the_file_nor_the_temporary_folder(tmp_path):
    out = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _block() -> LegoBlock:
    torch.manual_seed(0)
    return LegoBlock(BlockConfig(4, 2, encoder="snn", latent_rows=4, latent_dim=8, heads=1, head_dim=4, encoder_width=8))


@pytest.mark.parametrize("umask", [0o002, 0o022])
def test_model_weights_get_the_umask_mode_like_every_other_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        model_files.save(_block(), {"kind": "block"}, tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert modes == {"model.safetensors": 0o666 & ~umask, "config.json": 0o666 & ~umask}


def test_an_unreadable_model_is_reported_as_a_permission_problem_not_as_damage(tmp_path, monkeypatch):
    b = _block()
    model_files.save(b, {"kind": "block", "block": b.cfg.to_dict()}, tmp_path / "m")
    model_files.load(tmp_path / "m")  # readable: loads
    weights = tmp_path / "m" / "model.safetensors"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(weights) else real(p, mode, *a, **k))
    with pytest.raises(InputError) as err:
        model_files.load(tmp_path / "m")
    msg = str(err.value)
    assert "permission denied" in msg and str(weights) in msg and "delete" not in msg



def test_a_full_disk_while_saving_weights_is_one_line_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    """Issue 27: merge_tuned used to end in a safetensors traceback."""
    from safetensors import SafetensorError

    def full(*_a, **_k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(model_files, "save_model", full)
    b = _block()
    with pytest.raises(InputError) as err:
        model_files.save(b, {"kind": "block", "block": b.cfg.to_dict()}, tmp_path / "m")
    msg = str(err.value)
    assert "model.safetensors" in msg and "No space left" in msg and "free disk space" in msg
    assert not (tmp_path / "m" / "model.safetensors").exists() and not (tmp_path / "m" / "config.json").exists()
