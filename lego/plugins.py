"""Where the registries find their entries: every module of a package, plus the user's plugins.

A modality kind (:mod:`lego.modality_kinds`) or a trained baseline (:mod:`lego.baselines`) is one module
that registers itself when imported; the registry imports every module of its package, so there is
no list to keep in step. Modules outside the package -- a lab's own model, or a test's -- are named
in the ``LEGO_PLUGINS`` environment variable (comma-separated module names on ``sys.path``), which
Snakemake's jobs inherit, so the workflow, the command line and the library all see them.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from typing import Generic, TypeVar

from lego.errors import ConfigError

T = TypeVar("T")

PLUGINS_VARIABLE = "LEGO_PLUGINS"


def plugin_modules() -> list[str]:
    """The module names ``LEGO_PLUGINS`` lists (empty entries ignored)."""
    return [m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(",") if m.strip()]


def import_package_and_plugins(package: str) -> list[str]:
    """Import every module of ``package`` and every plugin module (each registers what it defines);
    returns their names in that order."""
    pkg = importlib.import_module(package)
    names = [f"{package}.{info.name}" for info in pkgutil.iter_modules(pkg.__path__) if not info.name.startswith("_")]
    for name in names:
        importlib.import_module(name)
    for name in plugin_modules():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_VARIABLE} names module {name!r}, which cannot be imported ({exc}); "
                              "put its folder on PYTHONPATH or remove it from the variable") from None
    return names + plugin_modules()


class Registry(Generic[T]):
    """Named entries of one kind, filled by the modules of ``package`` (and the plugins) when first read."""

    def __init__(self, what: str, package: str):
        self.what, self.package = what, package
        self.entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # entry name -> the module that registered it
        self._loaded = False

    def register(self, entry: T) -> T:
        """Add an entry (a module's registration; a name registered twice is a mistake, not an override)."""
        name = entry.name  # type: ignore[attr-defined]
        if name in self.entries and self.entries[name] != entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self.entries[name] = entry
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        self._modules.setdefault(name, caller.f_globals.get("__name__", "") if caller else "")
        return entry

    def all(self) -> dict[str, T]:
        """Every entry, the package's modules and ``LEGO_PLUGINS`` imported on first use; in the
        order of those modules (the package's by name, then the plugins), whatever was imported first,
        so a run's models, schema and tables come out in one order in every process."""
        if not self._loaded:
            self._loaded = True
            rank = {m: i for i, m in enumerate(import_package_and_plugins(self.package))}
            ordered = sorted(self.entries.items(), key=lambda e: rank.get(self._modules[e[0]], -1))  # stable
            self.entries.clear()
            self.entries.update(ordered)
        return self.entries
