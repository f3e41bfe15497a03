"""Per-slide commands: tissue, patches, embeddings, imported and exported feature files, and a
slide modality's feature manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lego.cli.declare import Command, Section, command, opt
from lego.errors import InputError, LegoError
from lego.slides.params import PatchParams, TissueParams

log = logging.getLogger("lego")


@dataclass
class SlideCommand(Command):
    """The options of every command that reads one slide."""

    slide: str = opt("whole-slide image file (any OpenSlide format)", required=True)
    mpp_fallback: float = opt(setting="slides.mpp_fallback")
    record_failure: bool = opt("batch mode: on a bad slide write a failure record (status=failed, reason) and exit 0",
                               kind=bool)


def report(slide: str, status: str) -> None:
    if status == "ok":
        log.info("%s: ok", slide)
    else:
        log.warning("%s: FAILED, recorded: %s", slide, status)


def set_threads(n: int | None) -> None:
    """torch's CPU threads (None: torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


@command("segment", "Segment tissue (CLAM-style HSV saturation); write contours parquet + QC PNG.",
         sections={"tissue": Section("tissue", TissueParams)})
class Segment(SlideCommand):
    out_tissue: str = opt("tissue contours (parquet)", required=True, output=True)
    out_png: str = opt("tissue overlay thumbnail (PNG)", required=True, output=True)

    def run(self) -> None:
        from lego.slides.slide_jobs import run_segment

        report(self.slide, run_segment(self.slide, self.out_tissue, self.out_png, self.values["tissue"],
                                       self.mpp_fallback, self.record_failure))


@command("extract", "Lay out a micron-based patch grid on the tissue; write coords HDF5 (TRIDENT/CLAM layout).",
         sections={"patches": Section("patches", PatchParams)})
class Extract(SlideCommand):
    tissue: str = opt("tissue.parquet from segment", required=True)
    out: str = opt("patches.h5 to write", required=True, output=True)

    def run(self) -> None:
        from lego.slides.slide_jobs import run_extract

        report(self.slide, run_extract(self.slide, self.tissue, self.out, self.values["patches"], self.mpp_fallback,
                                       self.record_failure))


@command("embed", "Embed a slide's patches with a registered encoder; write features HDF5.")
class Embed(SlideCommand):
    patches: str = opt("patches.h5 from extract", required=True)
    encoder: str = opt("a patch encoder (see `lego encoders`)", setting="slide_modality.encoder")
    checkpoint: str = opt("local weights file for the encoder (config encoders.<name>.checkpoint)")
    out: str = opt("features .h5 to write", required=True, output=True)
    batch_size: int = opt("patches per forward pass", setting="embedding.batch_size")
    num_workers: int = opt("data-loader processes reading patches", setting="embedding.num_workers")
    device: str = opt("auto (CUDA when visible), cpu or cuda", setting="embedding.device")
    threads: int = opt("torch CPU threads (default: torch's)", setting="embedding.threads", default=None)
    progress: bool = opt("show a progress bar (terminals only; logs get per-step lines)", kind=bool)

    def run(self) -> None:
        from lego.slides.encoders import create_encoder
        from lego.slides.slide_jobs import run_embed

        encoder = create_encoder(self.encoder, self.checkpoint)
        if encoder.model is not None:  # an array encoder's job never imports torch
            set_threads(self.threads)
        status = run_embed(self.slide, self.patches, encoder, self.out, self.record_failure, batch_size=self.batch_size,
                           num_workers=self.num_workers, device=self.device, mpp_fallback=self.mpp_fallback,
                           progress=self.progress)
        report(self.slide, status)


@command("import-features",
         "Convert an existing TRIDENT/CLAM ('features' .h5, or a CLAM/MCAT .pt bag) or STAMP ('feats' .h5) file.")
class ImportFeatures(Command):
    src: str = opt("existing TRIDENT/CLAM/STAMP feature file (.h5; or a CLAM/MCAT .pt bag)", required=True)
    out: str = opt("feature file to write (.h5)", required=True, output=True)
    slide_name: str = opt("slide ID recorded in the output", required=True)
    mpp: float = opt("the slide's level-0 microns per pixel: turns STAMP's micrometre coordinates into level-0 pixels "
                     "(default: keep micrometres, recorded as unit=um)", setting="slides.mpp_fallback")
    record_failure: bool = opt("batch mode: on a bad file write a failure record (status=failed, reason) and exit 0",
                               kind=bool)

    def run(self) -> None:
        from lego.slides.features import import_feature_file, write_failed_bag

        src = Path(self.src)
        if not self.slide_name.strip():
            raise InputError("--slide-name is empty; name the slide (its file name without the extension)")
        if not src.is_file():
            if not self.record_failure:
                raise LegoError(f"{src}: feature file not found")
            write_failed_bag(self.out, self.slide_name, f"no feature file {src}", stage="import_features")
            log.warning("%s: FAILED, recorded: no feature file", self.slide_name)
            return
        try:
            bag = import_feature_file(src, self.out, self.slide_name, self.mpp)
        except Exception as exc:  # any unreadable file is one failed slide in a batch, not a stopped run
            if not self.record_failure:
                raise
            reason = str(exc) if isinstance(exc, LegoError) else f"{src}: unreadable feature file ({type(exc).__name__}: {exc})"
            write_failed_bag(self.out, self.slide_name, reason, stage="import_features")
            log.warning("%s: FAILED, recorded: %s", self.slide_name, reason)
            return
        log.info("%s: imported %d x %d features", self.slide_name, *bag.features.shape)


@command("export-features",
         "Write a feature file of ours as STAMP reads it (feats, coordinates in um) or as a CLAM/MCAT pt_files bag.")
class ExportFeatures(Command):
    src: str = opt("feature file written by embed or import-features (.h5)", required=True)
    format: str = opt("stamp: .h5 with feats and um coordinates; clam-pt: one (patches x dim) tensor, torch.save",
                      required=True, choices=("stamp", "clam-pt"))
    out: str = opt("file to write", required=True, output=True)

    def run(self) -> None:
        from lego.slides.features import read_feature_bag
        from lego.slides.interop import write_clam_pt, write_stamp

        bag = read_feature_bag(self.src)
        if not bag.ok or len(bag.features) == 0:
            raise InputError(f"{self.src}: a failed slide ({bag.attrs.get('reason', 'no features')}); nothing to export")
        if self.format == "clam-pt":
            write_clam_pt(bag.features, self.out)
        else:
            if bag.coords_attrs.get("unit", "px") not in ("px", "um"):
                raise InputError(f"{self.src}: the file has no patch coordinates (unit {bag.coords_attrs.get('unit')!r}); "
                                 "STAMP needs them: import the slide's TRIDENT or STAMP .h5 instead")
            write_stamp(bag.features, bag.coords, {**bag.attrs, **bag.coords_attrs}, self.out, self.src)
        log.info("%s: %d x %d features written as %s to %s", self.src, *bag.features.shape, self.format, self.out)


@command("encoders", "List the registered patch encoders.")
class Encoders(Command):
    def run(self) -> None:
        from lego.slides.encoders import encoder_info

        print(f"{'encoder':18s} {'dim':>5s} {'input':>6s}  weights")
        for name, info in encoder_info().items():
            size = f"{info['input_px']} px" if info["input_px"] else "any"
            print(f"{name:18s} {info['dim'] or '?':>5} {size:>6s}  {info['weights']}")


@command("feature-manifest", "Summarise a slide modality's feature files (status, patches) per slide.")
class FeatureManifest(Command):
    slides: str = opt("slide index written by index-slides (parquet)", required=True)
    features_dir: str = opt("folder of per-slide feature files (<slide>.h5)", required=True)
    modality: str = opt("modality name (as in the config)", required=True)
    out: str = opt("manifest to write (parquet)", required=True, output=True)

    def run(self) -> None:
        from lego.data.cohort_table import feature_manifest
        from lego.io import read_frame, write_parquet

        slides = read_frame(self.slides, "slides")
        files = {s: str(Path(self.features_dir) / f"{s}.h5") for s in slides["slide_id"]}
        manifest = feature_manifest(slides, files)
        write_parquet(manifest, self.out, metadata={"modality": self.modality})
        log.info("modality %s: %d slides ok, %d failed", self.modality, (manifest.status == "ok").sum(),
                 (manifest.status != "ok").sum())
