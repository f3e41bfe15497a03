"""Configuration validation against the JSON schema, with defaults filled in.

Run once at start-up (by the Snakefile or the CLI) so a misspelt key or a wrong type fails in the
first second with the key's dotted path, not deep inside a job.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, validators

from lego.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


def _with_defaults(cls):
    """Extend a validator class so that ``default`` values are written into the instance."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft7Validator)


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _explain(error) -> str:
    """One readable line for a schema error, naming the key path."""
    where = _dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"config key '{where}': {error.message}{hint}"
    return f"config key '{where}': {error.message}"


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    with open(path or SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError otherwise."""
    schema = schema or load_schema()
    errors = sorted(_DefaultingValidator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(_explain(e) for e in errors)
        raise ConfigError(f"invalid configuration:\n  {lines}")
    _check_consistency(config)
    return config


def _check_consistency(config: dict[str, Any]) -> None:
    """Cross-field rules a JSON schema cannot express."""
    task = config["cohort"]["task"]
    labels = config["cohort"]["labels"]
    if task == "classification" and not labels.get("label_column"):
        raise ConfigError("config key 'cohort.labels.label_column': required when cohort.task is 'classification'")
    if task == "survival" and not (labels.get("censorship_column") or labels.get("event_column")):
        raise ConfigError(
            "config key 'cohort.labels': set censorship_column (1 = censored) or event_column (1 = event)"
        )
    folds = config["folds"]
    if abs(sum(folds["fractions"]) - 1.0) > 1e-6:
        raise ConfigError(f"config key 'folds.fractions': must sum to 1 (got {folds['fractions']})")
    seeds = folds.get("seeds")
    if seeds is not None and len(seeds) != folds["n_folds"]:
        raise ConfigError(f"config key 'folds.seeds': needs {folds['n_folds']} seeds (one per fold), got {len(seeds)}")
    wsi = [m for m, spec in config["modalities"].items() if spec["kind"] == "wsi"]
    if wsi and not (config["slides"]["dir"] or config["slides"]["list"]):
        if not all(config["modalities"][m].get("features_dir") for m in wsi):
            raise ConfigError(f"config key 'slides': modality {wsi[0]!r} is a WSI modality; set slides.dir or slides.list")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    with open(path) as fh:
        config = yaml.safe_load(fh) or {}
    try:
        return validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
