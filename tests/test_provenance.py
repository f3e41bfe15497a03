import hashlib
import json

import pandas as pd

from lego.provenance import file_digest, git_state, input_digests, job_costs, write_provenance
from tests.conftest import REPO


def test_digests_full_and_partial(tmp_path):
    small = tmp_path / "a.csv"
    small.write_bytes(b"x" * 1000)
    assert file_digest(small) == ("sha256", hashlib.sha256(b"x" * 1000).hexdigest())
    big = tmp_path / "slide.svs"
    big.write_bytes(b"a" * (3 << 20))
    kind, before = file_digest(big, full_hash_limit=1 << 20)
    assert kind == "sha256-partial"
    with open(big, "r+b") as f:  # a changed last byte changes the partial digest
        f.seek(-1, 2)
        f.write(b"b")
    assert file_digest(big, full_hash_limit=1 << 20)[1] != before
    table = input_digests([tmp_path, tmp_path / "gone.csv"])
    assert set(table["digest"]) == {"sha256", "missing"} and len(table) == 3


def test_job_costs_and_run_record(tmp_path):
    bench = tmp_path / "benchmarks"
    (bench / "train_block" / "rna").mkdir(parents=True)
    pd.DataFrame({"s": [12.5], "h:m:s": ["0:00:12"], "max_rss": [480.0]}).to_csv(bench / "train_block" / "rna" / "fold0.tsv", sep="\t", index=False)
    pd.DataFrame({"s": [1.0], "max_rss": [90.0]}).to_csv(bench / "fuse.tsv", sep="\t", index=False)
    jobs = job_costs(bench)
    assert jobs.set_index("rule").loc["train_block", "job"] == "rna/fold0"
    assert jobs.set_index("rule").loc["fuse", "job"] == "fuse"  # a one-job rule: not "fuse.tsv"
    assert jobs["wall_s"].sum() == 13.5
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,survival_months,censorship\nA,1,0\n")
    run = write_provenance({"cohort": {"name": "x"}}, [str(labels)], str(bench), str(REPO), str(tmp_path / "prov"))
    saved = json.loads((tmp_path / "prov" / "run.json").read_text())
    assert saved["config"] == {"cohort": {"name": "x"}} and saved["jobs"]["n"] == 2 and saved["jobs"]["max_rss_mb_peak"] == 480.0
    assert saved["packages"]["torch"] and saved["packages"]["snakemake"]
    assert run["git"]["commit"] is None or len(run["git"]["commit"]) == 40
    inputs = pd.read_table(tmp_path / "prov" / "inputs.tsv")
    assert inputs.loc[0, "sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


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
