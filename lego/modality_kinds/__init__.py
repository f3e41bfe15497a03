"""The modality-kind registry: what a kind of modality is, in one module per kind.

A kind says which config settings its modalities take (the family's, ``definitions.<family>_modality``
in ``config/schema.yaml``, plus any of its own), how the user's file becomes the prepared table
``modalities/<name>.parquet`` (the ``lego`` command and settings a rule runs, or the slide chain),
which rows of that table it uses, how its preprocessing is fitted on a fold's training patients and
re-applied from a saved state, and the block encoder it gets by default. The config schema, the
workflow plan, the rules and the fitting code all read these entries.

Adding a kind is one module in this package (or a plugin module named in ``LEGO_PLUGINS``) that
calls :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from lego.errors import InputError
from lego.plugins import Registry

FAMILIES = ("table", "slide")  # config settings: definitions.table_modality, definitions.slide_modality


@dataclass(frozen=True)
class Preparation:
    """How a modality's file becomes its prepared table: ``lego <command> --table <path>
    --modality <name> <settings as flags> --outcome-columns ... --out <parquet>``."""

    command: str
    settings: tuple[str, ...]  # keys of the modality's config section passed as flags
    # Files it reads besides ``path`` (e.g. the images a folder or list names, an encoder's weights):
    # declared inputs of its job, so a new or changed file reruns it.
    files: Callable[[dict], list[str]] | None = None


@dataclass(frozen=True)
class ModalityKind:
    """One kind of modality (see the module docstring)."""

    name: str
    family: str  # whose config settings it takes: "table" or "slide"
    table: str  # the lego.io.TABLES kind of its prepared file ("modality" or "manifest")
    key: str | tuple[str, ...]  # the column(s) naming one row of that file (a repeated key would count twice)
    usable: Callable[[pd.DataFrame], pd.DataFrame]  # the rows it uses
    fit: Callable[[pd.DataFrame, set, dict], Any]  # (table, training patients, options) -> ModalityTensors
    apply: Callable[[str, str, pd.DataFrame, dict, int], Any]  # (name, kind, table, state, seed) -> ModalityTensors
    encoder: str  # the block encoder when the config names none
    prepare: Preparation | None = None  # None: made by the slide chain (segment, extract, embed, collect)
    settings: Mapping[str, dict] = field(default_factory=lambda: MappingProxyType({}))  # its own config keys (JSON schema)
    bag: bool | None = None  # several tokens per patient, pooled by attention (None: what its family says)
    summarise: Callable[[Any], dict[str, np.ndarray]] | None = None  # ModalityTensors -> one row per patient
    check: Callable[[str, dict, dict], str | None] | None = None  # (name, section, config) -> what is wrong
    # Draws a single-modality model's attention over this kind's inputs (beside the slide heatmaps):
    # (model, modality, table, fitted state, patients, out folder) -> index of what was drawn.
    draw: Callable[[Any, str, pd.DataFrame, dict, list, Any], pd.DataFrame] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"modality kind {self.name!r}: family {self.family!r} is not one of {FAMILIES}")
        if self.prepare is None and self.family != "slide":
            raise ValueError(f"modality kind {self.name!r}: a {self.family} kind needs a Preparation")

    @property
    def bags(self) -> bool:
        """Whether a patient is a bag of tokens (patches, time steps) rather than one row: what
        attention pooling, the ABMIL baseline and the fusion baselines' bag inputs take."""
        return self.slides if self.bag is None else self.bag

    @property
    def form(self) -> str:
        """"bag" or "table": the shape of input a trained baseline reads."""
        return "bag" if self.bags else "table"

    def rows(self, mod: Any) -> dict[str, np.ndarray]:
        """One row per patient for the classical models (Coxnet, RSF): the kind's summary of a bag
        (a series' last value, mean and slope per variable), else the mean of its tokens (a
        table's only row, a slide's mean patch feature)."""
        if self.summarise is not None:
            return self.summarise(mod)
        return {p: t.numpy().mean(0) for p, t in mod.per_patient.items()}

    @property
    def slides(self) -> bool:
        """Read from slides (patch features, attention heatmaps, the ABMIL baseline), not from a table."""
        return self.family == "slide"


REGISTRY: Registry[ModalityKind] = Registry("modality kind", __name__)
KINDS = REGISTRY.entries
register = REGISTRY.register
kinds = REGISTRY.all  # every kind: this package's modules and the plugins' (imported on first use)


def modality_kind(name: str) -> ModalityKind:
    """The kind of that name, or one error listing the known ones."""
    known = kinds()
    if name not in known:
        raise InputError(f"unknown modality kind {name!r}; use one of {', '.join(sorted(known))}")
    return known[name]


def is_slide_kind(name: str | None) -> bool:
    """Whether a (known) modality kind reads slides."""
    return name in kinds() and KINDS[name].slides
