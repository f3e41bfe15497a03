import copy

import pytest
import yaml

from lego.config import block_spec_errors, load_config, validate_config
from lego.errors import ConfigError
from tests.conftest import REPO


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_demo_config_is_valid_and_defaults_are_filled():
    cfg = validate_config(demo_config())
    assert cfg["patches"]["overlap"] == 0
    assert cfg["modalities"]["wsi"]["features_dir"] is None
    assert cfg["modalities"]["rna"]["id_column"] == "case_id"
    assert cfg["slides"]["patient_id"]["prefix_length"] == 12
    assert "encoder" not in cfg["modalities"]["rna"]  # wsi defaults must not leak into tabular modalities


SHIPPED = sorted(p for p in (REPO / "config").rglob("*.yaml") if p.name != "schema.yaml")


@pytest.mark.parametrize("example", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(example):
    load_config(example)


def test_typo_names_the_key_path():
    cfg = demo_config()
    cfg["modalities"]["rna"]["inclde"] = "_rnaseq$"
    with pytest.raises(ConfigError, match=r"modalities\.rna.*'inclde' was unexpected"):
        validate_config(cfg)


def test_wrong_type_names_the_key_path():
    cfg = demo_config()
    cfg["patches"]["patch_px"] = "256"
    with pytest.raises(ConfigError, match=r"patches\.patch_px"):
        validate_config(cfg)


def test_unknown_modality_kind():
    cfg = demo_config()
    cfg["modalities"]["rna"]["kind"] = "omics"
    with pytest.raises(ConfigError, match=r"modalities\.rna\.kind"):
        validate_config(cfg)


def test_cross_field_rules():
    cfg = demo_config()
    cfg["cohort"]["task"] = "classification"
    with pytest.raises(ConfigError, match="label_column"):
        validate_config(copy.deepcopy(cfg))
    cfg = demo_config()
    cfg["folds"]["fractions"] = [0.5, 0.2, 0.2]
    with pytest.raises(ConfigError, match="sum to 1"):
        validate_config(cfg)
    cfg = demo_config()
    cfg["folds"]["seeds"] = [1, 2]
    with pytest.raises(ConfigError, match="5 seeds"):
        validate_config(cfg)


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    text = (REPO / "config" / "config.yaml").read_text()
    path = tmp_path / "dup.yaml"
    path.write_text(text.replace("modalities:\n", "modalities:\n  rna:\n    kind: tabular\n    path: cnv.csv\n", 1))
    with pytest.raises(ConfigError, match=r"dup\.yaml: key 'rna' appears twice in one section \(lines \d+ and \d+\)"):
        load_config(path)
    path.write_text("cohort: {name: a, name: b}\n")
    with pytest.raises(ConfigError, match="'name' appears twice"):
        load_config(path)
    path.write_text("cohort: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("name", ["x||touch F;#", "a b", "rna/..", "-x", "", "x" * 65, "{x}"])
def test_modality_names_are_safe_identifiers(name):
    cfg = demo_config()
    cfg["modalities"][name] = cfg["modalities"].pop("rna")
    with pytest.raises(ConfigError, match="modalities"):
        validate_config(cfg)


@pytest.mark.parametrize("set_bad, message", [
    (lambda c: c["modalities"]["rna"].update(include="_rnaseq($"), r"modalities\.rna\.include.*not a valid regular expression"),
    (lambda c: c["modalities"]["rna"].update(exclude=["ok", "[bad"]), r"modalities\.rna\.exclude\[1\]"),
    (lambda c: c.update(slides={"patient_id": {"regex": "(unclosed"}}), r"slides\.patient_id\.regex"),
])
def test_invalid_regexes_fail_at_config_time(set_bad, message):
    cfg = demo_config()
    set_bad(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


@pytest.mark.parametrize("key, value", [("latent_rows", 1_000_000_000), ("encoder_width", 10**6), ("depth", 1000)])
def test_sizes_have_sane_maxima(key, value):
    cfg = demo_config()
    cfg.setdefault("model", {}).setdefault("block", {})[key] = value
    with pytest.raises(ConfigError, match=rf"model\.block\.{key}.*maximum"):
        validate_config(cfg)


def test_event_column_alone_just_works():
    cfg = demo_config()
    labels = cfg["cohort"]["labels"]
    labels.pop("censorship_column")
    labels["event_column"] = "dead"
    assert validate_config(cfg)["cohort"]["labels"]["censorship_column"] is None
    cfg = demo_config()
    cfg["cohort"]["labels"].pop("censorship_column")
    assert validate_config(cfg)["cohort"]["labels"]["censorship_column"] == "censorship"  # MCAT's default
    cfg = demo_config()
    cfg["cohort"]["labels"]["event_column"] = "dead"
    with pytest.raises(ConfigError, match="not both"):
        validate_config(cfg)


def test_preprocess_options_are_validated():
    cfg = demo_config()
    cfg["modalities"]["rna"]["preprocess"] = {"select_k": 0}
    with pytest.raises(ConfigError, match=r"modalities\.rna\.preprocess\.select_k"):
        validate_config(copy.deepcopy(cfg))
    cfg["modalities"]["rna"]["preprocess"] = {"selct_k": 8}
    with pytest.raises(ConfigError, match=r"modalities\.rna\.preprocess.*'selct_k' was unexpected"):
        validate_config(copy.deepcopy(cfg))
    cfg["modalities"]["rna"]["preprocess"] = {"select_k": 8, "clip_mad": None, "clip_quantiles": [0.01, 0.99]}
    validate_config(cfg)


@pytest.mark.parametrize("place", ["wsi_encoder", "encoders_key"])
def test_patch_encoder_names_are_safe_identifiers(place):
    cfg = demo_config()
    bad = "x||touch F;#"
    wsi = next(m for m, s in cfg["modalities"].items() if s["kind"] == "wsi")
    if place == "wsi_encoder":
        cfg["modalities"][wsi]["encoder"] = bad
    else:
        cfg["encoders"] = {bad: {"checkpoint": None}}
    with pytest.raises(ConfigError, match="modalities|encoders"):
        validate_config(cfg)


def test_model_names_are_built_and_read_in_one_module():
    from lego.evaluation.names import baseline_name, block_modality, block_name, model_folder, model_kind

    assert block_modality(block_name("rna_v2")) == "rna_v2" and block_modality("merge-tuned") is None
    assert [model_kind(n) for n in (block_name("cnv"), "merge-tuned", "lego", "ensemble", baseline_name("rsf", "early"))] \
        == ["block", "lego", "lego", "ensemble", "baseline"]
    assert model_folder(block_name("cnv"), 2, "r") == "r/blocks/cnv/fold2" and model_folder("fuse", 0, "r") == "r/fuse/fold0"


@pytest.mark.parametrize("name", ["..", ".hidden", "."])
def test_a_cohort_name_cannot_leave_the_results_folder(name):
    from lego.config import validate_config
    from lego.errors import ConfigError

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["cohort"]["name"] = name
    with pytest.raises(ConfigError, match="cohort"):
        validate_config(cfg)


def test_the_config_refuses_reversed_clip_quantiles_and_specs_the_workflow_writes_pass():
    from lego.config import ConfigError, validate_config

    config = {"cohort": {"name": "c", "labels": {"path": "l.csv"}},
              "modalities": {"rna": {"kind": "tabular", "path": "r.csv", "preprocess": {"clip_quantiles": [0.9, 0.1]}}}}
    with pytest.raises(ConfigError, match=r"modalities\.rna\.preprocess\.clip_quantiles': \[0\.9, 0\.1\] must be"):
        validate_config(config)
    config["modalities"]["rna"]["preprocess"] = {"clip_quantiles": [0.01, 0.99], "select_k": 64}
    config = validate_config(config)
    model = config["model"]
    spec = {**model["block"], **model["train"], "n_bins": model["n_bins"], "encoder": "snn",
            "preprocess": config["modalities"]["rna"]["preprocess"]}
    assert block_spec_errors(spec) == []


def test_grid_mistakes_are_named_in_the_config():
    from lego.config import ConfigError, validate_config

    def config(grid):
        return {"cohort": {"name": "c", "labels": {"path": "l.csv"}},
                "modalities": {"rna": {"kind": "tabular", "path": "r.csv"}}, "model": {"grid": grid}}

    for grid, phrase in (([], "'model.grid': is empty"),
                         ({"lr": [0.001, 0.001]}, "'model.grid.lr': lists an entry twice"),
                         ([{"lr": 0.001}, {"lr": 0.001}], "'model.grid': lists an entry twice"),
                         ([{"lrr": 1}], "'model.grid.0': Additional properties are not allowed ('lrr' was unexpected)")):
        with pytest.raises(ConfigError) as err:
            validate_config(config(grid))
        assert phrase in str(err.value), str(err.value)


def test_an_abmil_baseline_without_a_slide_modality_is_a_config_error(tmp_path):
    import yaml

    from tests.workflow_runs import snakemake, write_config

    cfg = write_config(tmp_path)
    cfg["modalities"] = {m: s for m, s in cfg["modalities"].items() if s["kind"] != "wsi"}
    cfg["evaluation"] = {"baselines": ["coxnet", "abmil"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "abmil, which needs a bag modality" in proc.stdout + proc.stderr
