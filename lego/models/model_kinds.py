"""The model-kind registry: every kind of trained model, how it is built, trained, saved, loaded,
evaluated and drawn, in one entry.

The LegoBlock and the MM-Lego variants (merge, merge-tuned, fuse) are registered here; trained
baselines are one module each in :mod:`lego.baselines` (or a plugin module named in
``LEGO_PLUGINS``) that calls :func:`register`. The config schema (``model.build``,
``evaluation.baselines``, ``predict.models``), the workflow plan, the rules' resources, model
loading (:mod:`lego.models.files`), evaluation and heatmaps read these entries; none of them
matches a kind by its name.

Light at import (no torch): the architectures are imported when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lego.errors import InputError
from lego.plugins import Registry

# A model folder's files: the weights, the config that rebuilds the architecture, the training history.
WEIGHTS, CONFIG, HISTORY = "model.safetensors", "config.json", "history.json"
MODEL_FILES = (WEIGHTS, CONFIG, HISTORY)
ROLES = ("block", "variant", "baseline")
SCOPES = ("modality", "fold")


@dataclass(frozen=True)
class ModelKind:
    """One kind of trained model.

    ``name``: the model's name (``fold`` scope) or its prefix (``modality`` scope: ``<name>-<modality>``,
    blocks ``block-<modality>``). ``architecture``: the ``kind`` its ``config.json`` records, from
    which :func:`build_model` rebuilds it (merge-tuned is a merge). ``fit``: how a trained baseline
    is trained on one fold (``lego train-model``); the block and the variants have their own steps.
    ``bags_only``: takes bag modalities only (slides, series; modality scope). ``heatmaps``: its attention over a
    slide's patches can be drawn. ``gpu``: its training job asks the cluster for the configured GPUs.
    ``min_modalities``: a fold-scope model needs at least this many modalities in the config;
    ``needs``: what else it needs of them, given each modality's family ("table" or "slide"): None,
    or the problem in words (e.g. "needs one slide modality"). ``settings``: its own config settings
    (JSON-schema properties with their defaults: ``trained_baselines.<name>`` in the config); ``files``:
    those of them that name an input file (the workflow declares it, so a changed file reruns it).
    """

    name: str
    role: str
    architecture: str
    build: Callable[[dict], Any] | None = None
    wrap: Callable[[Any, dict], Any] | None = None  # the built module -> one taking {modality: (x, mask, present)}
    scope: str = "fold"
    fit: Callable[..., Any] | None = None
    bags_only: bool = False
    heatmaps: bool = False
    gpu: bool = False
    min_modalities: int = 1
    needs: Callable[[dict[str, str]], str | None] | None = None
    settings: Mapping[str, dict] = field(default_factory=lambda: MappingProxyType({}))
    files: tuple[str, ...] = ()
    default: bool = True  # trained baselines: run unless evaluation.baselines names the ones wanted
    preference: int = 0  # variants: the one-SE rule's order (lower first)
    description: str = ""

    def problem(self, families: dict[str, str]) -> str | None:
        """Why this kind cannot be trained on modalities of these families (None: it can)."""
        if len(families) < self.min_modalities:
            return f"needs at least {self.min_modalities} modalities"
        return self.needs(families) if self.needs is not None else None

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.scope not in SCOPES:
            raise ValueError(f"model kind {self.name!r}: role {self.role!r} / scope {self.scope!r} not in {ROLES} / {SCOPES}")
        if self.role == "baseline" and self.fit is None:
            raise ValueError(f"trained baseline {self.name!r} needs a fit function")

    def model_name(self, modality: str | None = None) -> str:
        """The name of this kind's model on ``modality`` (modality scope) or of the fold's model."""
        return f"{self.name}-{modality}" if self.scope == "modality" else self.name

    def folder(self, name: str, fold: int | str, base: str) -> str:
        """Where a run under ``base`` keeps this model's fold."""
        if self.role == "block":
            return f"{base}/blocks/{name[len(self.name) + 1:]}/fold{fold}"
        return role_folder(self.role, name, fold, base)


def role_folder(role: str, name: str, fold: int | str, base: str) -> str:
    """Where a variant (``<name>/fold<k>``) or a trained baseline (``baselines/<name>/fold<k>``) is kept."""
    return f"{base}/{'baselines/' if role == 'baseline' else ''}{name}/fold{fold}"


REGISTRY: Registry[ModelKind] = Registry("model kind", "lego.baselines")
MODEL_KINDS = REGISTRY.entries
register = REGISTRY.register
model_kinds = REGISTRY.all  # every kind: the core ones, lego.baselines' modules and the plugins'


def by_role(role: str) -> list[ModelKind]:
    return [k for k in model_kinds().values() if k.role == role]


def kind_of(name: str) -> ModelKind | None:
    """The kind of a model name (``block-rna``, ``merge``, ``abmil-wsi``); None for a model without
    a folder of its own (a classical baseline, the ensemble, the chosen variant ``lego``)."""
    for kind in model_kinds().values():
        if kind.scope == "fold" and name == kind.name:
            return kind
        if kind.scope == "modality" and name.startswith(kind.name + "-") and len(name) > len(kind.name) + 1:
            return kind
    return None


def modality_of(name: str) -> str | None:
    """The modality of a modality-scope model's name (``block-rna`` -> ``rna``); None otherwise."""
    kind = kind_of(name)
    return name[len(kind.name) + 1:] if kind is not None and kind.scope == "modality" else None


def architecture(config: dict) -> ModelKind:
    """The kind that builds a saved model's ``config["kind"]`` (its first registration)."""
    name = config.get("kind")
    found = next((k for k in model_kinds().values() if k.architecture == name and k.build is not None), None)
    if found is None:
        raise InputError(f"unknown model kind {name!r} in config")
    return found


def as_predictor(model: Any, config: dict) -> Any:
    """A loaded model as a module taking the multi-modality input dict (a block takes its own tensors)."""
    wrap = architecture(config).wrap
    return wrap(model, config) if wrap is not None else model


def model_inputs(config: dict) -> dict[str, dict]:
    """Per modality a saved model reads, the config holding its ``modality_kind`` and fitted ``preprocess``."""
    if "blocks" in config:
        return config["blocks"]
    if "inputs" in config:
        return config["inputs"]
    return {config["modality"]: config}


def block_order(config: dict) -> list[str]:
    """The blocks' order as trained. JSON files are written with sorted keys, so the order of
    ``config["blocks"]`` is not the training order; LegoFuse chains blocks, so rebuilding it in
    another order gives a different model (silently). Merges are order-free."""
    order = config.get("order")
    if order is None:
        if config["kind"] == FUSE.architecture:
            raise InputError("this LegoFuse config has no block 'order' (written by an older version); run the fuse step again")
        return sorted(config["blocks"])
    if sorted(order) != sorted(config["blocks"]):
        raise InputError(f"config 'order' {order} does not name the same blocks as 'blocks' {sorted(config['blocks'])}")
    return list(order)


# ----------------------------------------------------------------------------- the core kinds


def _build_block(config: dict):
    from lego.models.block import BlockConfig, LegoBlock

    return LegoBlock(BlockConfig(**config["block"]))


def _wrap_block(block, config: dict):
    from lego.models.block import SingleBlock

    return SingleBlock(config["modality"], block)


def _blocks(config: dict) -> dict:
    from lego.models.block import BlockConfig, LegoBlock

    return {m: LegoBlock(BlockConfig(**config["blocks"][m]["block"])) for m in block_order(config)}


# A merge or fuse config written since the readout reads each block's own head says so; an older
# readout model would now predict differently from what was evaluated, so it is refused, not rebuilt.
READOUT_READS = ("readout_reads", "block heads")


def _check_readout(config: dict, method: str) -> None:
    key, value = READOUT_READS
    if method == "readout" and config.get(key) != value:
        raise InputError(f"this {config.get('kind')} model (fold {config.get('fold')}) is a readout merge written before "
                         "readouts read each block's own head; run its merge-tuned / merge / fuse step again "
                         "(snakemake --forcerun merge merge_tuned fuse)")


def _build_merge(config: dict):
    from lego.models.merge import LegoMerge

    _check_readout(config, config["method"])
    return LegoMerge(_blocks(config), config["method"], config["head_method"], config.get("weights"), config.get("scales"),
                     config.get("offsets"))


def _build_fuse(config: dict):
    from lego.models.fuse import LegoFuse

    if config["mode"] == "merge":
        _check_readout(config, config.get("merge_method", "readout"))
    return LegoFuse(_blocks(config), config["mode"], config["head_method"], config.get("weights"),
                    config.get("merge_method", "readout"), config.get("offsets"))


BLOCK = register(ModelKind("block", "block", "block", _build_block, _wrap_block, scope="modality", heatmaps=True, gpu=True,
                           description="one modality's LegoBlock"))
MERGE = register(ModelKind("merge", "variant", "merge", _build_merge, min_modalities=2, preference=1,
                           description="LegoMerge: the paper's training-free merge"))
MERGE_TUNED = register(ModelKind("merge-tuned", "variant", "merge", min_modalities=2, preference=0,
                                 description="LegoMerge with blocks weighted (and its form chosen) on the fold's out-of-sample patients"))
FUSE = register(ModelKind("fuse", "variant", "fuse", _build_fuse, min_modalities=2, gpu=True, preference=2,
                          description="LegoFuse: the blocks chained and fine-tuned for a few epochs"))


FITTED = ("coxnet", "rsf", "coxrsf")  # single-source: encoders that are classical models fitted in the fold, then frozen


def run_tied_head(tied_head: bool | str, encoders: set[str]) -> bool | str:
    """A run's ``tied_head`` for its blocks, whose candidates use ``encoders``: ``auto`` becomes false
    (every head trained) where fitted and neural encoders are mixed, and stays otherwise.

    Why: under ``auto`` alone a fitted block keeps a tied random head while a neural block trains
    its own, so the blocks' logits differ in level and in spread for reasons that are not their
    predictive value, and a readout merge of them is no average of calibrated predictions (heart
    valve cohort: tuned merge 0.668 test C with mixed heads, 0.702 with every head trained;
    docs/lego_method.md section 8). All fitted: tied, as before; all neural: trained, as before."""
    if tied_head == "auto" and any(e in FITTED for e in encoders) and any(e not in FITTED for e in encoders):
        return False
    return tied_head
