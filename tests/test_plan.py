"""Workflow planning (lego.plan) without Snakemake: which modalities, folds, models, baselines and
outputs a config makes, and what each job is given."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml

from lego.config import validate_config
from lego.errors import ConfigError
from lego.plan import Plan
from tests.conftest import REPO

DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def plan_of(**changes) -> Plan:
    config = copy.deepcopy(DEMO)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return Plan(validate_config(config))


def test_the_demo_plan_names_every_model_the_summary_holds():
    plan = plan_of()
    assert plan.out == "results/demo" and plan.folds == [0, 1, 2, 3, 4]
    assert plan.slide_modalities == ["wsi"] and plan.prepared_modalities == ["rna", "cnv"]
    assert plan.blocks == ["block-wsi", "block-rna", "block-cnv"]
    assert plan.variants == ["merge", "merge-tuned", "fuse"] and plan.models[-1] == "lego"
    assert plan.classical == ["coxnet", "rsf"] and plan.baseline_sources == ["early"]  # the demo's baseline_inputs
    trained = ["abmil-wsi", "healnet", "late-fusion", "late-bilinear", "mcat", "mcat-single", "multimodn", "perceiver"]
    assert list(plan.trained) == trained and plan.trained["abmil-wsi"].modalities == ("wsi",)
    assert plan.trained["healnet"].modalities == ("wsi", "rna", "cnv")
    assert plan.all_models == [*plan.models, "coxnet-early", "rsf-early", *trained, "ensemble"]
    assert plan.trained_files("mcat") == ["results/demo_input/signatures.csv"] and plan.trained_files("healnet") == []
    drawn = ["block-wsi", "abmil-wsi", "late-fusion", "late-bilinear", "mcat", "mcat-single"]
    assert plan.attention_models == {m: ["wsi"] for m in drawn}
    assert plan.heatmap_models == {m: ["wsi"] for m in ("block-wsi", "abmil-wsi", "mcat")}  # the demo's list


def test_outputs_follow_the_model_kinds_folders():
    plan = plan_of()
    assert plan.model_folder("block-rna", 3) == "results/demo/blocks/rna/fold3"
    assert plan.model_folder("merge-tuned", 0) == "results/demo/merge-tuned/fold0"
    assert plan.model_folder("abmil-wsi", 1) == "results/demo/baselines/abmil-wsi/fold1"
    assert plan.candidate_folder("rna", 2, 1) == "results/demo/blocks/rna/fold2/candidates/c1"
    assert plan.fold_block_files(0)[:3] == [f"results/demo/blocks/wsi/fold0/{f}"
                                           for f in ("model.safetensors", "config.json", "history.json")]
    targets = plan.targets()
    assert targets[-1] == "results/demo/provenance/run.json" and plan.targets(provenance=False) == targets[:-1]
    assert "results/demo/heatmaps/abmil-wsi/fold4" in targets and "results/demo/summary/metrics.tsv" in targets


def test_each_job_gets_only_its_own_settings():
    plan = plan_of(model__grid=[{"encoder": "linear"}, {"encoder": "snn", "select_k": 3}])
    spec = plan.block_spec("rna")
    assert {"device", "threads", "gpus"}.isdisjoint(spec) and spec["encoder"] == "snn"  # the tabular kind's default
    assert spec["preprocess"]["select_k"] == 8 and plan.block_spec("wsi")["encoder"] == "abmil"
    assert plan.candidate_spec("rna", 1)["preprocess"]["select_k"] == 3 and "grid" not in plan.candidate_spec("rna", 0)
    assert plan.trained_spec("abmil-wsi") == plan.block_spec("wsi")  # the comparison isolates the Lego latent
    command, args = plan.prepare_args("cnv")
    assert command == "prepare-modality" and args["include"] == "_cnv$" and "survival_months" in args["outcome_columns"]
    assert json.loads(plan.metric_options) == {"horizons": [12, 36, 60], "tau_quantile": 0.8}
    assert plan.model_modalities("merge") == ["wsi", "rna", "cnv"] and plan.model_modalities("block-cnv") == ["cnv"]


def test_auto_tied_heads_train_every_head_where_a_run_mixes_fitted_and_neural_encoders():
    """tied_head auto: tied for fitted encoders, trained for neural ones -- within one run. A run
    whose candidates mix both trains every head, so that no merge mixes a tied head with a
    trained one; an explicit setting is kept."""
    assert plan_of().candidate_spec("rna", 0)["tied_head"] == "auto"  # the demo: every block coxnet
    neural = plan_of(model__grid=[{"encoder": "snn"}])
    assert {neural.candidate_spec(m, 0)["tied_head"] for m in ("rna", "wsi")} == {"auto"}
    mixed = plan_of(model__grid=[{"encoder": "coxnet"}, {"encoder": "snn"}])
    assert {mixed.candidate_spec(m, c)["tied_head"] for m in ("rna", "cnv", "wsi") for c in (0, 1)} == {False}
    config = copy.deepcopy(DEMO)
    config["modalities"]["wsi"]["block"] = {"grid": [{"encoder": "abmil"}]}  # one modality's own grid
    assert Plan(validate_config(config)).candidate_spec("rna", 0)["tied_head"] is False
    assert plan_of(model__grid=[{"encoder": "coxnet"}, {"encoder": "snn"}],
                   model__block__tied_head=True).candidate_spec("rna", 1)["tied_head"] is True


def test_models_need_what_they_read():
    defaults = {"baseline_inputs": ["early"]}  # the default baselines: those that fit the modalities
    one = plan_of(modalities={"rna": DEMO["modalities"]["rna"]}, slides={"dir": None}, evaluation=defaults)
    assert one.variants == [] and one.models == ["block-rna"] and one.trained == {} and "ensemble" not in one.all_models
    no_slides = plan_of(modalities={m: DEMO["modalities"][m] for m in ("rna", "cnv")}, evaluation=defaults)
    assert no_slides.trained == {} and no_slides.heatmap_models == {} and not no_slides.segments_slides()
    assert plan_of(model__build=["blocks", "merge"]).models == ["block-wsi", "block-rna", "block-cnv", "merge"]
    assert plan_of(evaluation__heatmaps=False).heatmap_models == {}
    assert list(plan_of(evaluation__heatmaps=True).heatmap_models) == list(plan_of().attention_models)


@pytest.mark.parametrize("changes, message", [
    ({"modalities": {m: DEMO["modalities"][m] for m in ("rna", "cnv")}, "evaluation__baselines": ["abmil"]},
     "names abmil, which needs a bag modality"),
    ({"evaluation__baselines": ["logreg"]}, "do not fit task 'survival'"),
    ({"modalities": {**DEMO["modalities"], "early": DEMO["modalities"]["rna"]}}, "clashes with the early-fusion"),
    ({"folds__method": "file"}, "folds.path is not set"),
    ({"evaluation__heatmaps": ["block-rna"]}, r"heatmaps names block-rna, which is not a model of this run with attention"),
    ({"modalities": {m: DEMO["modalities"][m] for m in ("rna", "cnv")}, "evaluation__baselines": ["mcat"]},
     r"names mcat, which co-attends one slide modality with the tables .* are rna \(table\), cnv \(table\)"),
    ({"modalities": {"wsi": DEMO["modalities"]["wsi"]}, "evaluation__baselines": ["late-bilinear"]},
     "names late-bilinear, which fuses one slide modality with the tables"),
    ({"trained_baselines": {}}, r"'trained_baselines.mcat.signatures': mcat needs it"),
])
def test_config_combinations_the_schema_cannot_refuse_are_one_line(changes, message):
    with pytest.raises(ConfigError, match=message):
        plan_of(**changes)


def test_the_old_spelling_of_the_tuned_merge_is_read(capsys):
    one = plan_of(model__build=["blocks", "tuned_merge"])
    assert one.variants == ["merge-tuned"] and "lego" not in one.models  # "lego" chooses among two or more
    assert plan_of(model__build=["blocks", "tuned_merge", "fuse"]).variants == ["merge-tuned", "fuse"]
    assert "tuned_merge is now spelt merge-tuned" in capsys.readouterr().err


def test_predict_mode_applies_every_trained_fold_of_the_named_models(tmp_path):
    trained = tmp_path / "train_run"
    (trained / "cohort").mkdir(parents=True)  # the training run's own record of its folds
    pd.DataFrame({"patient_id": ["P1", "P2"], "fold": [0, 1], "subset": ["test", "test"]}).to_parquet(
        trained / "cohort" / "folds.parquet")
    for fold in (0, 1):
        block = trained / "blocks" / "rna" / f"fold{fold}"
        block.mkdir(parents=True)
        (block / "config.json").write_text(json.dumps({"kind": "block", "modality": "rna"}))
        merged = trained / "merge-tuned" / f"fold{fold}"
        merged.mkdir(parents=True)
        (merged / "config.json").write_text(json.dumps({"kind": "merge", "blocks": {"rna": {}, "cnv": {}}}))
    plan = plan_of(predict={"from": str(trained), "models": ["block-rna", "merge-tuned"]})
    assert plan.predict_runs == [("block-rna", 0, ["rna"]), ("block-rna", 1, ["rna"]),
                                 ("merge-tuned", 0, ["cnv", "rna"]), ("merge-tuned", 1, ["cnv", "rna"])]
    assert plan.targets()[-2:] == ["results/demo/predict/summary.tsv", "results/demo/provenance/run.json"]
    with pytest.raises(ConfigError, match="needs modalities \\['rna'\\], which this config lacks"):
        _ = plan_of(predict={"from": str(trained), "models": ["block-rna"]},
                    modalities={"cnv": DEMO["modalities"]["cnv"], "wsi": DEMO["modalities"]["wsi"]}).predict_runs
    with pytest.raises(ConfigError, match="fuse fold 0 of the training run .* was not trained"):
        _ = plan_of(predict={"from": str(trained), "models": ["fuse"]}).predict_runs


def test_registry_order_does_not_depend_on_what_was_imported_first():
    """Trained baselines (and so a run's models, schema and tables) come in the package's module
    order even when a process imported one of their modules before the registry was first read."""
    import subprocess
    import sys

    probe = ("{}from lego.models.model_kinds import by_role; "
             "print(','.join(k.name for k in by_role('baseline')))")
    plain = subprocess.run([sys.executable, "-c", probe.format("")], capture_output=True, text=True, check=True)
    first = subprocess.run([sys.executable, "-c", probe.format("import lego.baselines.perceiver; ")],
                           capture_output=True, text=True, check=True)
    assert plain.stdout.split(",")[0] == "abmil" and first.stdout == plain.stdout
