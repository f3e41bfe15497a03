"""Configuration validation against the JSON schema, with defaults filled in.

Run once at start-up (by the Snakefile or the CLI) so a misspelt key or a wrong type fails in the
first second with the key's dotted path, not deep inside a job.
"""

from __future__ import annotations

import copy
import re
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
    if "propertyNames" in error.schema_path:
        return (f"config key '{where}': name {error.instance!r} is not allowed; use letters, digits and underscores, "
                "starting with a letter (names become file names and command-line words)")
    if error.validator in ("oneOf", "anyOf") and error.instance in ([], {}):
        return f"config key '{where}': is empty; give at least one entry, or leave the key out"
    if error.validator in ("oneOf", "anyOf"):  # the branch of the instance's own type says what is wrong
        relevant = [e for e in error.context if e.validator != "type"]
        if relevant:
            return _explain(relevant[0])
    if error.validator == "uniqueItems":
        return f"config key '{where}': lists an entry twice ({error.instance}); each candidate would be trained twice"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"config key '{where}': {error.message}{hint}"
    return f"config key '{where}': {error.message}"


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    """The config schema, with the names its registries own filled in (:func:`fill_registries`)."""
    with open(path or SCHEMA_PATH) as fh:
        return fill_registries(yaml.safe_load(fh))


def fill_registries(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill the schema's lists of modality kinds and baselines from the code's registries.

    Why: a YAML file cannot import them, and a second copy drifts; adding a kind
    (``lego.data.fold_data.KINDS``) or a classical baseline (``lego.evaluation.classical``) then
    touches that one module. A slide kind (one that reads the slide manifest) takes the slide
    settings; every other kind the table settings."""
    from lego.data.fold_data import KINDS
    from lego.evaluation.names import ALL_BASELINES

    slides = sorted(k for k, v in KINDS.items() if v.slides)
    tables = sorted(k for k in KINDS if k not in slides)
    props = schema["properties"]
    props["evaluation"]["properties"]["baselines"]["items"]["enum"] = list(ALL_BASELINES)
    modality = props["modalities"]["additionalProperties"]
    modality["properties"]["kind"]["enum"] = sorted(KINDS)
    modality["if"]["properties"]["kind"]["enum"] = slides
    modality["then"]["properties"]["kind"]["enum"] = slides
    modality["else"]["properties"]["kind"]["enum"] = tables
    return schema


def block_spec_errors(spec: dict[str, Any]) -> list[str]:
    """What is wrong with a block's ``--spec`` (architecture, training, ``n_bins``, ``preprocess``),
    checked against the same schema entries the config is, plus the cross-field rules.

    Why: the workflow writes a valid spec, but a spec written by hand (or by a script) otherwise
    fails deep in training with a message about something else (reversed clip quantiles read as
    "no feature varies"; ``select_k: 0`` as "needs the outcomes")."""
    props = load_schema()["properties"]
    model, table = props["model"]["properties"], props["modalities"]["additionalProperties"]["else"]["properties"]
    fields = {**model["block"]["properties"], **model["train"]["properties"], **table["block"]["properties"],
              "n_bins": model["n_bins"], "preprocess": table["preprocess"]}
    fields.pop("grid", None)
    schema = {"type": "object", "properties": fields}
    errors = [f"'{_dotted(e.absolute_path)}': {e.message}" for e in Draft7Validator(schema).iter_errors(spec)]
    return errors or [f"'preprocess.{key}': {why}" for key, why in preprocess_errors(spec.get("preprocess") or {})]


def preprocess_errors(pre: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) of a table's ``preprocess`` rules that a JSON schema cannot express."""
    q = pre.get("clip_quantiles")
    if q and len(q) == 2 and not q[0] < q[1]:
        return [("clip_quantiles", f"{list(q)} must be [lower, upper] with lower < upper, e.g. [0.001, 0.999]")]
    return []


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
    if task == "survival":
        if labels.get("censorship_column") and labels.get("event_column"):
            raise ConfigError("config key 'cohort.labels': set censorship_column (1 = censored) or event_column "
                              "(1 = event), not both")
        if not labels.get("event_column"):
            labels["censorship_column"] = labels.get("censorship_column") or "censorship"  # MCAT's default
    folds = config["folds"]
    if abs(sum(folds["fractions"]) - 1.0) > 1e-6:
        raise ConfigError(f"config key 'folds.fractions': must sum to 1 (got {folds['fractions']})")
    seeds = folds.get("seeds")
    if seeds is not None and len(seeds) != folds["n_folds"]:
        raise ConfigError(f"config key 'folds.seeds': needs {folds['n_folds']} seeds (one per fold), got {len(seeds)}")
    _check_regexes(config)
    for name, spec in config["modalities"].items():
        for key, why in preprocess_errors(spec.get("preprocess") or {}):
            raise ConfigError(f"config key 'modalities.{name}.preprocess.{key}': {why}")
    from lego.data.fold_data import is_slide_kind

    wsi = [m for m, spec in config["modalities"].items() if is_slide_kind(spec["kind"])]
    if wsi and not (config["slides"]["dir"] or config["slides"]["list"]):
        if not all(config["modalities"][m].get("features_dir") for m in wsi):
            raise ConfigError(f"config key 'slides': modality {wsi[0]!r} is a WSI modality; set slides.dir or slides.list")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping.

    Why: YAML parsers keep the last of two equal keys silently, so a second ``rna:`` section
    would quietly replace the first (a block named rna trained on CNV columns)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{key_node.start_mark.name}: key {key!r} appears twice in one section "
                                  f"(lines {seen[key]} and {line}); keep one (the last would silently win)")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely, refusing duplicate keys; errors name the file (and line)."""
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None


def regex_problem(pattern: str, groups: int = 0) -> str | None:
    """What is wrong with a user's regex (``groups``: capture groups it must have), or None."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a valid regular expression ({exc})"
    if compiled.groups < groups:
        return f"{pattern!r} has no capture group; put the patient ID in ( ), e.g. '^(TCGA-..-....)'"
    return None


def _check_regexes(config: dict[str, Any]) -> None:
    """Compile every regex of the config now, not in a job halfway through the run."""
    found = [("slides.patient_id.regex", config.get("slides", {}).get("patient_id", {}).get("regex"))]
    for name, spec in config["modalities"].items():
        found.append((f"modalities.{name}.include", spec.get("include")))
        found += [(f"modalities.{name}.exclude[{i}]", r) for i, r in enumerate(spec.get("exclude") or [])]
    for key, pattern in found:
        problem = regex_problem(pattern, 1 if key == "slides.patient_id.regex" else 0) if pattern is not None else None
        if problem:
            raise ConfigError(f"config key '{key}': {problem}")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    config = read_yaml(path) or {}
    try:
        return validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
