"""Per-slide stages with batch semantics: a bad slide is recorded, never fatal to the batch.

With ``record_failure=True`` (what the workflow uses) a SlideError produces explicit failure
artefacts (``status = failed`` plus the reason) instead of an exception; later stages pass the
failure on, and ``lego collect-qc`` lists it in ``qc/failed.tsv``. Without it (manual runs on one
slide) the error is raised with its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lego.errors import InputError, SlideError
from lego.slides.features import write_failed_bag
from lego.slides.patches import PatchParams, make_patch_grid, read_patches, write_failed_patches, write_patches
from lego.slides.reader import open_slide
from lego.slides.tissue import TissueParams, draw_qc, read_tissue, segment_tissue, write_failed_tissue, write_tissue

if TYPE_CHECKING:  # the encoders pull in torch, which segmentation and patching do not need
    from lego.slides.encoders import Encoder


def _shown(stage: str, reason: str) -> str:
    """The one line a batch logs for a failed slide (the files keep stage and reason apart)."""
    return f"[{stage}] {reason}"


def _upstream(meta: dict, default_stage: str, default_reason: str) -> tuple[str, str]:
    """The stage and reason an earlier stage recorded, passed on unchanged."""
    return str(meta.get("stage") or default_stage), str(meta.get("reason") or default_reason)


def run_segment(slide_path, tissue_out, png_out, params: TissueParams, mpp_fallback=None, record_failure=False) -> str:
    """Segment one slide; returns ``ok`` or the recorded failure reason."""
    name = Path(slide_path).name
    try:
        with open_slide(slide_path, mpp_fallback) as slide:
            tissue = segment_tissue(slide, params)
        write_tissue(tissue, tissue_out)
        draw_qc(tissue, png_out)
        return "ok"
    except SlideError as exc:
        if not record_failure:
            raise
        write_failed_tissue(name, exc.reason, tissue_out, png_out)
        return _shown("segment_tissue", exc.reason)


def _same_slide(recorded: str | None, name: str, path) -> None:
    """An upstream file made from another slide would label this slide's output with the wrong
    tissue or patches: a wiring mistake of the whole run, refused (not recorded as a bad slide)."""
    if recorded and str(recorded) != name:
        raise InputError(f"{path}: made from slide {recorded!r}, not {name!r}; give this slide's own file")


def run_extract(slide_path, tissue_in, patches_out, params: PatchParams, mpp_fallback=None, record_failure=False) -> str:
    """Lay out the patch grid of one slide; a slide that failed segmentation stays failed."""
    name = Path(slide_path).name
    try:
        tissue = read_tissue(tissue_in)
    except InputError as exc:  # a damaged upstream file is this slide's failure, not the batch's
        if not record_failure:
            raise
        write_failed_patches(name, str(exc), patches_out)
        return _shown("extract_patches", str(exc))
    _same_slide(tissue.meta.get("slide"), name, tissue_in)
    stage = "extract_patches"
    try:
        if tissue.meta.get("status") != "ok":
            stage, reason = _upstream(tissue.meta, "segment_tissue", "segmentation failed")
            raise SlideError(slide_path, reason)
        with open_slide(slide_path, mpp_fallback) as slide:
            grid = make_patch_grid(slide, tissue, params)
        write_patches(grid, patches_out)
        return "ok"
    except SlideError as exc:
        if not record_failure:
            raise
        write_failed_patches(name, exc.reason, patches_out, stage)
        return _shown(stage, exc.reason)


def run_embed(slide_path, patches_in, encoder: Encoder, features_out, record_failure=False, **kwargs) -> str:
    """Embed one slide's patches; a slide that failed earlier gets a failure record."""
    from lego.slides.embed import embed_slide

    name = Path(slide_path).name
    try:
        grid = read_patches(patches_in)
    except InputError as exc:  # a damaged upstream file is this slide's failure, not the batch's
        if not record_failure:
            raise
        write_failed_bag(features_out, name, str(exc), encoder.name, encoder.dim, "embed_patches")
        return _shown("embed_patches", str(exc))
    _same_slide(grid.attrs.get("slide_name"), name, patches_in)
    stage = "embed_patches"
    try:
        if grid.attrs.get("status", "ok") != "ok":  # TRIDENT's and CLAM's patch files carry no status: usable
            stage, reason = _upstream(grid.attrs, "extract_patches", "patch extraction failed")
            raise SlideError(slide_path, reason)
        embed_slide(slide_path, patches_in, encoder, features_out, **kwargs)
        return "ok"
    except SlideError as exc:
        if not record_failure:
            raise
        write_failed_bag(features_out, name, exc.reason, encoder.name, encoder.dim, stage)
        return _shown(stage, exc.reason)
