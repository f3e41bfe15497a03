import copy

import pytest
import yaml

from lego.config import load_config, validate_config
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


SHIPPED = sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml")


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
