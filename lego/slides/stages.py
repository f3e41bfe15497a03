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


def _failed(exc: SlideError, stage: str) -> str:
    return f"[{stage}] {exc.reason}"


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
        reason = _failed(exc, "segment_tissue")
        write_failed_tissue(name, reason, tissue_out, png_out)
        return reason


def run_extract(slide_path, tissue_in, patches_out, params: PatchParams, mpp_fallback=None, record_failure=False) -> str:
    """Lay out the patch grid of one slide; a slide that failed segmentation stays failed."""
    name = Path(slide_path).name
    try:
        tissue = read_tissue(tissue_in)
    except InputError as exc:  # a damaged upstream file is this slide's failure, not the batch's
        if not record_failure:
            raise
        reason = f"[extract_patches] {exc}"
        write_failed_patches(name, reason, patches_out)
        return reason
    try:
        if tissue.meta.get("status") != "ok":
            raise SlideError(slide_path, tissue.meta.get("reason", "segmentation failed"))
        with open_slide(slide_path, mpp_fallback) as slide:
            grid = make_patch_grid(slide, tissue, params)
        write_patches(grid, patches_out)
        return "ok"
    except SlideError as exc:
        if not record_failure:
            raise
        reason = exc.reason if exc.reason.startswith("[") else _failed(exc, "extract_patches")
        write_failed_patches(name, reason, patches_out)
        return reason


def run_embed(slide_path, patches_in, encoder: "Encoder", features_out, record_failure=False, **kwargs) -> str:
    """Embed one slide's patches; a slide that failed earlier gets a failure record."""
    from lego.slides.embed import embed_slide

    name = Path(slide_path).name
    grid = read_patches(patches_in)
    try:
        if grid.attrs.get("status") != "ok":
            raise SlideError(slide_path, str(grid.attrs.get("reason", "patch extraction failed")))
        embed_slide(slide_path, patches_in, encoder, features_out, **kwargs)
        return "ok"
    except SlideError as exc:
        if not record_failure:
            raise
        reason = exc.reason if exc.reason.startswith("[") else _failed(exc, "embed_patches")
        write_failed_bag(features_out, name, reason, encoder.name, encoder.dim)
        return reason
