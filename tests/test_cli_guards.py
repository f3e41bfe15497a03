"""Command-line guards: an output that would overwrite an input is refused before any work (and
writing beside an input is allowed), options out of range are refused by the parser, and every
refusal is one `lego ...` line with exit status 2.
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import pytest

from lego.cli import main
from tests.helpers import SMALL, _evaluated, lego_fails, parse_fails, trained_blocks


@pytest.mark.parametrize("args", [
    ["extract", "--slide", "s", "--tissue", "t", "--out", "o", "--patch-px", "0"],
    ["extract", "--slide", "s", "--tissue", "t", "--out", "o", "--overlap", "1"],
    ["make-demo", "--out", "o", "--patients", "0"],
    ["embed", "--slide", "s", "--patches", "p", "--encoder", "stain_texture", "--out", "o", "--batch-size", "0"],
])
def test_out_of_range_numbers_are_refused_by_the_parser(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "is outside" in capsys.readouterr().err


def test_json_options_and_the_mpp_fallback_are_checked_when_parsed(tmp_path, capsys):
    parse_fails(["provenance", "--config-json", "cfg.json", "--benchmarks", str(tmp_path), "--code-dir", str(tmp_path),
                "--out-dir", str(tmp_path / "pv")], capsys, "argument --config-json: not valid JSON",
               "not a file path")
    parse_fails(["segment", "--slide", "x.svs", "--out-tissue", str(tmp_path / "t.parquet"), "--out-png",
                str(tmp_path / "t.png"), "--mpp-fallback", "0"], capsys, "argument --mpp-fallback: 0.0 is outside")


def test_an_empty_model_name_and_a_folder_as_a_slide_are_one_line(tmp_path, capsys):
    _, dirs, metrics = _evaluated(tmp_path)
    lego_fails(["select-variant", "--metrics", *metrics, "--name", " ", "--out-dir", str(tmp_path / "v")], capsys,
               "--name is empty")
    lego_fails(["segment", "--slide", str(tmp_path), "--out-tissue", str(tmp_path / "t.parquet"), "--out-png",
                str(tmp_path / "t.png")], capsys, "is a folder, not a slide file")


def test_an_output_that_is_also_an_input_is_refused_before_any_work(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    before = (tmp_path / "blocks" / "zeta" / "config.json").read_text()
    lego_fails(["merge", "--blocks", *dirs, "--out-dir", dirs[0]], capsys,
               "--out-dir", "would overwrite config.json (--blocks", "choose another output path")
    assert (tmp_path / "blocks" / "zeta" / "config.json").read_text() == before, "the block is untouched"
    (tmp_path / "ok.csv").write_text("case_id,survival_months,censorship\nP1,3,0\nP2,4,1\n")
    lego_fails(["ingest-labels", "--table", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "ok.csv")], capsys,
               "would overwrite ok.csv (--table")
    assert (tmp_path / "ok.csv").read_text().startswith("case_id"), "the table is untouched"
    lego_fails(["ingest-labels", "--table", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "labels.csv")], capsys,
               "this output is a parquet table; name it .parquet")


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


def test_writing_beside_an_input_that_is_not_overwritten_is_allowed(tmp_path):
    """Only a file the command would write over is refused: evaluating a merge into its own folder
    (metrics beside the model) or figures into the summary folder overwrite nothing."""
    import shlex

    from lego.cli import COMMANDS, build_parser
    from lego.cli.guards import refuse_output_over_input

    p, dirs, metrics = _evaluated(tmp_path)
    assert main(["merge", "--blocks", *dirs, "--out-dir", str(tmp_path / "m")]) == 0
    parser = build_parser()
    ok = [f"evaluate --model-dir {tmp_path}/m --name merge --data zeta={p['zeta']} alpha={p['alpha']} --labels "
          f"{p['labels']} --folds {p['folds']} --out-dir {tmp_path}/m",
          f"train-block --modality zeta --kind tabular --data {p['zeta']} --labels {p['labels']} --folds {p['folds']} "
          f"--fold 0 --out-dir {tmp_path}"]
    for command in ok:
        args = parser.parse_args(shlex.split(command))
        refuse_output_over_input(COMMANDS[args.command].from_namespace(args))
