"""Regression tests for the sixth hostile sweep (summaries, figures, provenance, heatmaps, the demo
generator, slide stages and feature provenance)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from tests.test_fit_protocol import SMALL, cohort, trained_blocks
from tests.test_heatmaps import slide_cohort
from tests.test_hostile_inputs import lego_fails


def parse_fails(args: list[str], capsys, *phrases: str) -> None:
    """An option refused by the command-line parser: exit 2 and one error line naming it."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lego ")]
    assert len(err) == 1, err
    for phrase in phrases:
        assert phrase in err[0], err[0]


def _wsi_block(d):
    from lego.stages import train_block

    train_block("wsi", "wsi", str(d / "wsi.parquet"), str(d / "labels.parquet"), str(d / "folds.parquet"), 0, "survival",
                {**SMALL, "encoder": "abmil", "epochs": 1}, str(d / "blk"), device="cpu")


def test_a_slide_block_refuses_features_of_another_encoder_of_the_same_width(tmp_path, capsys):
    """UNI, Phikon-v2 and ResNet50-trunc are all 1024-d: the width cannot tell them apart."""
    from lego.data.cohort_table import feature_manifest
    from lego.slides.features import read_feature_bag, write_feature_bag

    d = slide_cohort(tmp_path)
    _wsi_block(d)
    assert json.loads((d / "blk" / "config.json").read_text())["preprocess"]["features"]["encoder"] == "toy"
    manifest = pd.read_parquet(d / "wsi.parquet")
    other = {}
    for sid, path in zip(manifest["slide_id"], manifest["features"]):
        bag = read_feature_bag(path)
        other[sid] = str(d / f"{sid}.other.h5")
        write_feature_bag(other[sid], bag.features, bag.coords, {"encoder": "other_enc"}, bag.coords_attrs)
    slides = manifest[["slide_id", "patient_id"]].assign(path="")
    feature_manifest(slides, other).to_parquet(d / "other.parquet")
    lego_fails(["predict", "--model-dir", str(d / "blk"), "--data", f"wsi={d / 'other.parquet'}", "--out-dir",
                str(d / "p")], capsys, "features of encoder 'other_enc'", "where 'toy'")
    lego_fails(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "other.parquet"), "--folds",
                str(d / "folds.parquet"), "--out-dir", str(d / "h")], capsys, "features of encoder 'other_enc'")


def test_heatmaps_refuse_a_folds_table_the_model_was_not_trained_with(tmp_path, capsys):
    from lego.data.folds import make_folds

    d = slide_cohort(tmp_path)
    _wsi_block(d)
    labels = pd.read_parquet(d / "labels.parquet")
    make_folds(labels, n_folds=1, fractions=(0.5, 0.2, 0.3), seeds=[99]).to_parquet(d / "other_folds.parquet")
    lego_fails(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "wsi.parquet"), "--folds",
                str(d / "other_folds.parquet"), "--out-dir", str(d / "h")], capsys,
               "test patients in", "were used to fit or validate this model", "folds table it was trained with")


def test_a_data_table_sharing_no_patient_with_the_fold_is_refused(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    renamed = pd.read_parquet(p["zeta"]).assign(patient_id=lambda t: t["patient_id"].str.replace("P", "Q"))
    renamed.to_parquet(tmp_path / "zeta_q.parquet")
    assert main(["merge", "--blocks", *dirs, "--out-dir", str(tmp_path / "m")]) == 0
    lego_fails(["evaluate", "--model-dir", str(tmp_path / "m"), "--name", "merge", "--data",
                f"zeta={tmp_path / 'zeta_q.parquet'}", f"alpha={p['alpha']}", "--labels", str(p["labels"]),
                "--folds", str(p["folds"]), "--out-dir", str(tmp_path / "ev")], capsys,
               "none of its 90 patients (e.g. Q000) is in the fold")


def _evaluated(tmp_path):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    common = ["--labels", str(p["labels"]), "--folds", str(p["folds"])]
    for d, m in zip(dirs, ("zeta", "alpha")):
        assert main(["evaluate", "--model-dir", d, "--name", f"block-{m}", "--data", f"{m}={p[m]}", *common,
                     "--out-dir", str(tmp_path / "ev" / m)]) == 0
    return p, dirs, [str(tmp_path / "ev" / m / "metrics.json") for m in ("zeta", "alpha")]


def test_summaries_refuse_stale_mixed_or_foreign_metrics(tmp_path, capsys):
    p, dirs, metrics = _evaluated(tmp_path)
    out = ["--out-dir", str(tmp_path / "s")]
    lego_fails(["summarise", "--metrics", *metrics, *out, "--evaluation", '{"n_boot": 3}'], capsys,
               "n_boot=3 is not valid", "n_boot >= 10")
    stale = tmp_path / "stale"
    stale.mkdir()
    shutil.copy(metrics[0], stale / "metrics.json")
    shutil.copy(tmp_path / "ev" / "alpha" / "predictions.parquet", stale / "predictions.parquet")
    lego_fails(["summarise", "--metrics", str(stale / "metrics.json"), metrics[1], *out], capsys,
               "predictions.parquet: does not match metrics.json beside it")
    other = json.loads((tmp_path / "ev" / "alpha" / "metrics.json").read_text()) | {"task": "classification"}
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "metrics.json").write_text(json.dumps(other))
    lego_fails(["summarise", "--metrics", metrics[0], str(tmp_path / "cls" / "metrics.json"), *out], capsys,
               "task 'classification' where", "has 'survival'")
    assert main(["predict", "--model-dir", dirs[0], "--data", f"zeta={p['zeta']}", "--out-dir", str(tmp_path / "pr")]) == 0
    lego_fails(["summarise", "--metrics", str(tmp_path / "pr" / "metrics.json"), metrics[1], *out], capsys,
               "not a metrics.json written by `lego evaluate`", "lego predict-summary")
    assert main(["summarise", "--metrics", *metrics, *out, "--evaluation", '{"n_boot": 20}']) == 0


def test_predict_summary_refuses_one_model_applied_to_two_cohorts(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    p, dirs = trained_blocks(tmp_path / "train", {**SMALL, "epochs": 1}, names=("zeta",))
    runs = []
    for k, (n, seed) in enumerate(((40, 5), (30, 6))):
        (tmp_path / f"ext{k}").mkdir()
        ext = cohort(tmp_path / f"ext{k}", n=n, seed=seed, prefix="Q" if k == 0 else "R")
        out = tmp_path / f"pr{k}"
        assert main(["predict", "--model-dir", dirs[0], "--name", "block-zeta", "--data", f"zeta={ext['zeta']}",
                     "--labels", str(ext["labels"]), "--out-dir", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        metrics["fold"] = k  # as if fold k's model had been applied
        (out / "metrics.json").write_text(json.dumps(metrics))
        runs.append(str(out / "metrics.json"))
    lego_fails(["predict-summary", "--metrics", *runs, "--out", str(tmp_path / "ps.tsv")], capsys,
               "scored other labelled patients than in")


def test_exported_geometry_must_be_positive(tmp_path, capsys):
    import h5py

    src = tmp_path / "t.h5"
    with h5py.File(src, "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f["coords"] = np.arange(6).reshape(3, 2) * 256
        f["coords"].attrs["level0_mpp"] = float("nan")
        f["coords"].attrs["patch_size_level0"] = 256
    lego_fails(["import-features", "--src", str(src), "--out", str(tmp_path / "o.h5"), "--slide-name", "t"], capsys,
               "level0_mpp = nan is not a positive number")


def test_one_bad_benchmark_file_or_thumbnail_does_not_stop_the_step(tmp_path):
    from lego.evaluation.figures import qc_thumbnails
    from lego.provenance import job_costs

    bench = tmp_path / "bench"
    (bench / "rule_a").mkdir(parents=True)
    (bench / "rule_a" / "ok.tsv").write_text("s\th:m:s\tmax_rss\n1.5\t0:00:01\t100\n")
    (bench / "rule_a" / "empty.tsv").write_text("")
    (bench / "rule_a" / "text.tsv").write_text("s\nabc\n")
    jobs = job_costs(bench).set_index("job")
    assert jobs.loc["ok", "wall_s"] == 1.5 and jobs.loc["ok", "note"] == ""
    assert "unreadable benchmark file" in jobs.loc["empty", "note"] and "unreadable" in jobs.loc["text", "note"]
    (tmp_path / "bad.png").write_text("not a png")
    qc_thumbnails([str(tmp_path / "bad.png")], tmp_path / "qc.png")
    assert (tmp_path / "qc.png").read_bytes()[:4] == b"\x89PNG"


def test_the_demo_generator_checks_its_arguments_and_leaves_no_stale_slide(tmp_path, capsys):
    parse_fails(["make-demo", "--out", str(tmp_path / "d"), "--seed", "-1"], capsys, "argument --seed: -1 is outside [0, ")
    lego_fails(["make-demo", "--out", str(tmp_path / "d"), "--patients", "8", "--prefix", "ab1"], capsys,
               "demo prefix 'ab1': four letters")
    from lego.demo.cohort import _clear_stale_slides
    from lego.errors import InputError

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("DEMO-00-0001-01Z-00-DX1.svs", "DEMO-00-0099-01Z-00-DX1.svs"):
        (slides / name).write_bytes(b"x")
    _clear_stale_slides(slides, {"DEMO-00-0001-01Z-00-DX1.svs"})
    assert [p.name for p in slides.iterdir()] == ["DEMO-00-0001-01Z-00-DX1.svs"]
    (slides / "my_real_slide.svs").write_bytes(b"x")
    with pytest.raises(InputError, match="not a demo slide"):
        _clear_stale_slides(slides, set())
    assert (slides / "my_real_slide.svs").exists(), "never deleted"


def test_json_options_and_the_mpp_fallback_are_checked_when_parsed(tmp_path, capsys):
    parse_fails(["provenance", "--config-json", "cfg.json", "--benchmarks", str(tmp_path), "--code-dir", str(tmp_path),
                "--out-dir", str(tmp_path / "pv")], capsys, "argument --config-json: not valid JSON",
               "not a file path")
    parse_fails(["segment", "--slide", "x.svs", "--out-tissue", str(tmp_path / "t.parquet"), "--out-png",
                str(tmp_path / "t.png"), "--mpp-fallback", "0"], capsys, "argument --mpp-fallback: 0.0 is outside")


def test_patches_of_another_slide_are_refused(demo_slides, tmp_path, capsys):
    from lego.slides.patches import PatchParams
    from lego.slides.stages import run_extract, run_segment
    from lego.slides.tissue import TissueParams

    a, b = demo_slides[0], demo_slides[1]
    assert run_segment(a, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(seg_downsample=16)) == "ok"
    lego_fails(["extract", "--slide", str(b), "--tissue", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "p.h5")],
               capsys, f"made from slide {a.name!r}, not {b.name!r}")
    assert run_extract(a, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams()) == "ok"
    lego_fails(["embed", "--slide", str(b), "--patches", str(tmp_path / "p.h5"), "--encoder", "stain_texture",
                "--out", str(tmp_path / "f.h5")], capsys, f"made from slide {a.name!r}, not {b.name!r}")


# ---- the seventh sweep: variations of the fifth and sixth ----

def _other_folds(p, tmp_path):
    from lego.data.folds import make_folds

    make_folds(pd.read_parquet(p["labels"]), n_folds=2, seeds=[77, 78]).to_parquet(tmp_path / "other_folds.parquet")
    return str(tmp_path / "other_folds.parquet")


def test_fuse_merge_tuned_and_ensemble_refuse_another_split_of_the_cohort(tmp_path, capsys):
    p, dirs, metrics = _evaluated(tmp_path)
    other = _other_folds(p, tmp_path)
    data = ["--data", f"zeta={p['zeta']}", f"alpha={p['alpha']}", "--labels", str(p["labels"]), "--folds", other]
    lego_fails(["fuse", "--blocks", *dirs, *data, "--spec", '{"epochs": 1}', "--out-dir", str(tmp_path / "fu"),
                "--device", "cpu"], capsys, "use the folds table")
    lego_fails(["merge-tuned", "--blocks", *dirs, *data, "--out-dir", str(tmp_path / "mt")], capsys, "use the folds table")
    lego_fails(["ensemble", "--block-metrics", *metrics, "--labels", str(p["labels"]), "--folds", other,
                "--out-dir", str(tmp_path / "en")], capsys, "evaluated on other test/validation patients than fold 0")


@pytest.mark.parametrize("corrupt, phrase", [
    (lambda lab: lab.assign(event=np.where(np.arange(len(lab)) == 4, np.nan, lab["event"])), "event must be 0 or 1"),
    (lambda lab: pd.concat([lab, lab.iloc[:3]]), "has more than one row"),
])
def test_every_reader_of_a_labels_table_checks_it(tmp_path, capsys, corrupt, phrase):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    corrupt(pd.read_parquet(p["labels"])).to_parquet(tmp_path / "bad.parquet")
    bad = str(tmp_path / "bad.parquet")
    data = ["--data", f"zeta={p['zeta']}", f"alpha={p['alpha']}", "--labels", bad, "--folds", str(p["folds"])]
    lego_fails(["merge-tuned", "--blocks", *dirs, *data, "--out-dir", str(tmp_path / "mt")], capsys, phrase)
    lego_fails(["fuse", "--blocks", *dirs, *data, "--spec", '{"epochs": 1}', "--out-dir", str(tmp_path / "fu"),
                "--device", "cpu"], capsys, phrase)
    lego_fails(["make-folds", "--labels", bad, "--out", str(tmp_path / "f.parquet")], capsys, phrase)
    lego_fails(["cohort-table", "--labels", bad, "--tabular", f"zeta={p['zeta']}", "--out", str(tmp_path / "c.parquet")],
               capsys, phrase)


def test_an_output_folder_holding_an_input_and_two_outputs_on_one_path_are_refused(tmp_path, capsys):
    _, _, metrics = _evaluated(tmp_path)
    labels, folds = str(tmp_path / "labels.parquet"), str(tmp_path / "folds.parquet")
    before = (tmp_path / "ev" / "zeta" / "metrics.json").read_bytes()
    lego_fails(["ensemble", "--block-metrics", *metrics, "--labels", labels, "--folds", folds, "--out-dir",
                str(tmp_path / "ev" / "zeta")], capsys, "would overwrite metrics.json (--block-metrics")
    assert (tmp_path / "ev" / "zeta" / "metrics.json").read_bytes() == before
    (tmp_path / "u.tsv").write_text("slide_id\tpatient_id\tpath\treason\nS1\t\t/x\tno id\n")
    lego_fails(["collect-qc", "--unmatched", str(tmp_path / "u.tsv"), "--out", str(tmp_path / "u.tsv")], capsys,
               "would overwrite u.tsv (--unmatched")
    lego_fails(["index-slides", "--labels", labels, "--out", str(tmp_path / "x.parquet"), "--unmatched",
                str(tmp_path / "x.parquet")], capsys, "--unmatched and --out are the same path")


def test_figures_check_their_metrics_as_summarise_does(tmp_path, capsys):
    p, dirs, metrics = _evaluated(tmp_path)
    assert main(["summarise", "--metrics", *metrics, "--out-dir", str(tmp_path / "s"), "--evaluation", '{"n_boot": 20}']) == 0
    lego_fails(["figures", "--summary-dir", str(tmp_path / "s"), "--metrics", metrics[0], metrics[0], "--out-dir",
                str(tmp_path / "f")], capsys, "is already given by")
    assert main(["figures", "--summary-dir", str(tmp_path / "s"), "--metrics", *metrics, "--out-dir",
                 str(tmp_path / "f")]) == 0


def test_summarise_refuses_one_fold_from_two_folds_tables(tmp_path, capsys):
    _, _, metrics = _evaluated(tmp_path)
    moved = json.loads((tmp_path / "ev" / "alpha" / "metrics.json").read_text()) | {"fold_digest": "0" * 16}
    (tmp_path / "ev" / "alpha" / "metrics.json").write_text(json.dumps(moved))
    lego_fails(["summarise", "--metrics", *metrics, "--out-dir", str(tmp_path / "s")], capsys,
               "fold 0 has other test/validation patients than in")


def test_a_damaged_patch_file_is_a_recorded_failure_and_other_slips_are_one_line(demo_slides, tmp_path, capsys):
    import h5py

    (tmp_path / "p.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["embed", "--slide", str(demo_slides[0]), "--patches", str(tmp_path / "p.h5"), "--encoder",
                 "stain_texture", "--out", str(tmp_path / "f.h5"), "--record-failure"]) == 0
    with h5py.File(tmp_path / "f.h5") as f:
        assert f.attrs["status"] == "failed" and "not a readable patch file" in f.attrs["reason"]
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f["coords"] = np.full((3, 2), -1)
    lego_fails(["import-features", "--src", str(tmp_path / "s.h5"), "--out", str(tmp_path / "o.h5"), "--slide-name", "s"],
               capsys, "coords hold negative positions")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f.attrs["status"] = np.array([b"failed", b"ok"])
    lego_fails(["import-features", "--src", str(tmp_path / "a.h5"), "--out", str(tmp_path / "o.h5"), "--slide-name", "s"],
               capsys, "says neither success nor failure")
    (tmp_path / "real" / "slides").mkdir(parents=True)
    (tmp_path / "real" / "clinical.csv").write_text("my,real,clinical\n")
    (tmp_path / "real" / "slides" / "patient7.svs").write_bytes(b"x")
    lego_fails(["make-demo", "--out", str(tmp_path / "real"), "--patients", "8"], capsys, "not a demo slide")
    assert (tmp_path / "real" / "clinical.csv").read_text() == "my,real,clinical\n", "nothing written first"


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
    assert proc.returncode != 0 and "abmil, which needs a slide modality" in proc.stdout + proc.stderr


def test_an_empty_model_name_and_a_folder_as_a_slide_are_one_line(tmp_path, capsys):
    _, dirs, metrics = _evaluated(tmp_path)
    lego_fails(["select-variant", "--metrics", *metrics, "--name", " ", "--out-dir", str(tmp_path / "v")], capsys,
               "--name is empty")
    lego_fails(["segment", "--slide", str(tmp_path), "--out-tissue", str(tmp_path / "t.parquet"), "--out-png",
                str(tmp_path / "t.png")], capsys, "is a folder, not a slide file")


def test_writing_beside_an_input_that_is_not_overwritten_is_allowed(tmp_path):
    """Only a file the command would write over is refused: evaluating a merge into its own folder
    (metrics beside the model) or figures into the summary folder overwrite nothing."""
    import shlex

    from lego.cli import _refuse_output_over_input, build_parser

    p, dirs, metrics = _evaluated(tmp_path)
    assert main(["merge", "--blocks", *dirs, "--out-dir", str(tmp_path / "m")]) == 0
    parser = build_parser()
    ok = [f"evaluate --model-dir {tmp_path}/m --name merge --data zeta={p['zeta']} alpha={p['alpha']} --labels "
          f"{p['labels']} --folds {p['folds']} --out-dir {tmp_path}/m",
          f"train-block --modality zeta --kind tabular --data {p['zeta']} --labels {p['labels']} --folds {p['folds']} "
          f"--fold 0 --out-dir {tmp_path}"]
    for command in ok:
        _refuse_output_over_input(parser.parse_args(shlex.split(command)))


def test_predict_summary_accepts_metrics_from_before_the_digest(tmp_path):
    from lego.evaluation.summary import external_summary

    base = {"model": "merge-tuned", "task": "survival", "labelled": 50, "external": {"n": 50, "c_index": 0.6}}
    (tmp_path / "a.json").write_text(json.dumps({**base, "fold": 0}))
    (tmp_path / "b.json").write_text(json.dumps({**base, "fold": 1, "labelled_digest": "0123456789abcdef"}))
    table = external_summary([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert table.loc[table["metric"] == "c_index", "folds"].item() == 2
