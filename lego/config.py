"""Configuration validation against the JSON schema, with defaults filled in.

Run once at start-up (by the Snakefile or the CLI) so a misspelt key or a wrong type fails in the
first second with the key's dotted path, not deep inside a job.
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, validators

from lego.errors import ConfigError
from lego.settings import SCHEMA_PATH


def _with_defaults(cls):
    """Extend a validator class so that ``default`` values are written into the instance."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
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
    if error.validator == "not" and error.schema.get("not") == {}:  # a family's key that this kind refuses
        return f"config key '{where}': {error.schema.get('description', 'not a setting of this kind')}; remove it"
    if error.validator == "uniqueItems":
        return f"config key '{where}': lists an entry twice ({error.instance}); each candidate would be trained twice"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"config key '{where}': {error.message}{hint}"
    return f"config key '{where}': {error.message}"


# model.block and model.train settings a modality may set for itself: those blocks need not share
# to merge (shapes, the loss weight and execution settings stay run-wide).
BLOCK_OVERRIDES = ("encoder_width", "dropout", "epochs", "batch_size", "lr", "weight_decay", "patience", "scheduler",
                   "seed", "max_patches")
# model.train settings a trained baseline may set for itself (trained_baselines.<name>).
TRAINING_OVERRIDES = ("epochs", "batch_size", "lr", "weight_decay", "patience", "scheduler")
GRID_KEYS = ("encoder", "encoder_width", "dropout", "lr", "weight_decay", "epochs", "select_k")  # choosable on validation
BUILD_BLOCKS = "blocks"  # model.build's word for the blocks (the variants are named by their kinds)
ALIASES = {"model.build": {"tuned_merge": "merge-tuned"}}  # old spellings still read (with a warning)


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    """The config schema, completed with what the code's registries own (:func:`complete_schema`)."""
    from lego.evaluation.classical import CLASSICAL
    from lego.modality_kinds import kinds
    from lego.models.model_kinds import model_kinds

    # A kind or baseline registered later (a plugin, a test) gets a schema of its own.
    registered = tuple((n, id(k)) for reg in (kinds(), model_kinds(), CLASSICAL) for n, k in reg.items())
    return copy.deepcopy(_completed(str(path or SCHEMA_PATH), registered))


@functools.lru_cache(maxsize=8)
def _completed(path: str, registered: tuple) -> dict[str, Any]:
    with open(path) as fh:
        return complete_schema(yaml.safe_load(fh))


def complete_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill in the names and settings the schema takes from the code, so that each is written once.

    Why: a YAML file cannot import them, and a second copy drifts. From the registries: the
    modality kinds (:mod:`lego.modality_kinds`: each kind's settings are its family's plus its own), the
    baselines (classical and trained), the block encoders, the MM-Lego variants (``model.build``,
    ``predict.models``); from the schema itself: a modality's block overrides and the grid's keys
    take the ranges of the ``model.block``/``model.train`` settings they override."""
    _fill_kinds(schema)
    _fill_models(schema)
    _fill_block_settings(schema)
    return schema


def _fill_kinds(schema: dict[str, Any]) -> None:
    from lego.modality_kinds import kinds

    modality = schema["properties"]["modalities"]["additionalProperties"]
    modality["properties"]["kind"]["enum"] = sorted(kinds())
    branches = []
    for name, kind in sorted(kinds().items()):
        then: dict[str, Any] = {"$ref": f"#/definitions/{kind.family}_modality"}
        if kind.settings:
            then = copy.deepcopy(schema["definitions"][f"{kind.family}_modality"])
            then["properties"].update(copy.deepcopy(dict(kind.settings)))
        branches.append({"if": {"properties": {"kind": {"const": name}}, "required": ["kind"]}, "then": then})
    modality["allOf"] = branches


def _fill_models(schema: dict[str, Any]) -> None:
    from lego.evaluation.names import all_baselines, variants
    from lego.models.encoders import ENCODERS
    from lego.models.model_kinds import MERGE_TUNED, by_role

    props = schema["properties"]
    props["evaluation"]["properties"]["baselines"]["items"]["enum"] = list(all_baselines())
    build = props["model"]["properties"]["build"]
    build["items"]["enum"] = [BUILD_BLOCKS, *variants()]
    build["default"] = [BUILD_BLOCKS, *variants()]
    schema["definitions"]["block_overrides"]["properties"]["encoder"]["enum"] = list(ENCODERS)
    identifier = "[A-Za-z][A-Za-z0-9_]*"
    per_modality = [f"{k.name}-{identifier}" for k in by_role("block") + by_role("baseline") if k.scope == "modality"]
    whole = [k.name for k in by_role("variant") + by_role("baseline") if k.scope == "fold"]
    pattern = "|".join(per_modality + [re.escape(n) for n in whole])
    props["predict"]["properties"]["models"]["items"]["pattern"] = f"^({pattern})$"
    props["predict"]["properties"]["models"]["default"] = [MERGE_TUNED.name]
    train = props["model"]["properties"]["train"]["properties"]
    overrides = {key: _bare(train[key]) for key in TRAINING_OVERRIDES}
    props["trained_baselines"]["properties"] = {
        k.name: {"type": "object", "additionalProperties": False, "default": {}, "description": k.description,
                 "properties": {**copy.deepcopy(overrides), **copy.deepcopy(dict(k.settings))}}
        for k in by_role("baseline") if k.scope == "fold"}


def _bare(node: dict[str, Any]) -> dict[str, Any]:
    """A setting's type and range without its default and description (an override sets it or not)."""
    return {k: copy.deepcopy(v) for k, v in node.items() if k not in ("default", "description")}


def _fill_block_settings(schema: dict[str, Any]) -> None:
    from lego.settings import schema_node

    overrides = schema["definitions"]["block_overrides"]["properties"]
    model = schema["properties"]["model"]["properties"]
    for key in BLOCK_OVERRIDES:
        overrides[key] = _bare(model["block"]["properties"].get(key) or model["train"]["properties"][key])
    items = {key: _bare(overrides[key]) for key in GRID_KEYS if key in overrides}
    select_k = _bare(schema_node("table_modality.preprocess.select_k", schema))
    items["select_k"] = {**select_k, "type": "integer", "description": "Tables only: preprocess.select_k."}
    schema["definitions"]["grid"]["oneOf"] = [
        {"type": "object", "additionalProperties": False,
         "properties": {k: {"type": "array", "minItems": 1, "uniqueItems": True, "items": v} for k, v in items.items()}},
        {"type": "array", "minItems": 1, "maxItems": 64, "uniqueItems": True,
         "items": {"type": "object", "additionalProperties": False, "properties": items}},
    ]


def block_spec_errors(spec: dict[str, Any]) -> list[str]:
    """What is wrong with a block's ``--spec`` (architecture, training, ``n_bins``, ``preprocess``),
    checked against the same schema entries the config is, plus the cross-field rules.

    Why: the workflow writes a valid spec, but a spec written by hand (or by a script) otherwise
    fails deep in training with a message about something else (reversed clip quantiles read as
    "no feature varies"; ``select_k: 0`` as "needs the outcomes")."""
    schema = load_schema()
    model, defs = schema["properties"]["model"]["properties"], schema["definitions"]
    fields = {**model["block"]["properties"], **model["train"]["properties"], **defs["block_overrides"]["properties"],
              "n_bins": model["n_bins"], "preprocess": defs["table_modality"]["properties"]["preprocess"]}
    fields.pop("grid", None)
    spec_schema = {"type": "object", "properties": fields}
    errors = [f"'{_dotted(e.absolute_path)}': {e.message}" for e in Draft7Validator(spec_schema).iter_errors(spec)]
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
    _read_old_spellings(config)
    errors = sorted(_DefaultingValidator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(_explain(e) for e in errors)
        raise ConfigError(f"invalid configuration:\n  {lines}")
    _check_consistency(config)
    _check_paths(config)
    _canonical_paths(config)
    return config


# Keys naming files or folders (a model kind's `files`, e.g. MCAT's signatures, included: tested)
PATH_KEYS = frozenset({"results_dir", "path", "dir", "list", "features_dir", "checkpoint", "from", "signatures"})


def _path_entries(config: Any, where: str = "") -> list[tuple[Any, Any, str]]:
    """(holder, key, dotted key) of every file or folder the config names (keys in :data:`PATH_KEYS`)."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    found = []
    for key, value in items:
        dotted = f"{where}.{key}" if where else str(key)
        if isinstance(value, str) and key in PATH_KEYS:
            found.append((config, key, dotted))
        else:
            found += _path_entries(value, dotted)
    return found


def config_paths(config: Any) -> list[tuple[str, str]]:
    """(dotted key, value) of every file or folder the config names (keys in :data:`PATH_KEYS`)."""
    return [(dotted, holder[key]) for holder, key, dotted in _path_entries(config)]


def _check_paths(config: dict[str, Any]) -> None:
    """Refuse a path holding '{' or '}': Snakemake would read it as a wildcard and stop with a bare
    WildcardError naming neither the key nor the fix."""
    for dotted, value in config_paths(config):
        if "{" in value or "}" in value:
            raise ConfigError(f"config key '{dotted}': the path {value!r} contains '{{' or '}}', which Snakemake reads "
                              "as a wildcard; rename the file or folder (or link it under a name without braces)")


def _canonical_paths(config: dict[str, Any]) -> None:
    """Every configured path in one spelling (:func:`lego.io.project_path`), in place: ``./results/``,
    ``results`` and the absolute path of ``results`` are the same folder, but as Snakemake file
    names they differ -- a new spelling of ``results_dir`` loses every job's recorded parameters (a
    changed learning rate then reruns nothing), and a table under it spelt one way is not the
    output another rule makes."""
    from lego.io import project_path

    for holder, key, _ in _path_entries(config):
        if holder[key]:
            holder[key] = project_path(holder[key], resolve=False)


def _read_old_spellings(config: dict[str, Any]) -> None:
    """Replace an old spelling of a name (see ``ALIASES``) by today's, saying so once."""
    for path, names in ALIASES.items():
        section, _, key = path.rpartition(".")
        holder = config.get(section, {}) if isinstance(config.get(section), dict) else {}
        values = holder.get(key)
        if isinstance(values, list) and any(v in names for v in values):
            holder[key] = [names.get(v, v) for v in values]
            old = sorted(v for v in values if v in names)
            print(f"config key '{path}': {', '.join(old)} is now spelt {', '.join(names[v] for v in old)}; "
                  "please update the config", file=sys.stderr)


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
    from lego.modality_kinds import is_slide_kind, modality_kind

    for name, spec in config["modalities"].items():  # what a kind itself refuses (e.g. a series' window)
        check = modality_kind(spec["kind"]).check
        problem = check(name, spec, config) if check is not None else None
        if problem:
            raise ConfigError(problem)

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
