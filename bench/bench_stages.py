"""Per-patient cost of each per-slide stage, as Snakemake runs them: one `lego` process per slide.

Run by hand after the demo (it reads the demo's slides and tissue/patch files):
    .venv/bin/python bench/bench_stages.py [--slides 20] [--lego PATH/TO/lego] [--tag NAME]
Writes bench/results/stages_per_slide[_TAG].json.

For each of `lego segment`, `lego extract` and `lego embed` (the demo's stain_texture encoder) it
runs the command on the first N demo slides into a temporary folder and reports the mean wall time
per slide, and separately the time to start the process and import what the stage needs. Point
``--lego`` at another checkout's ``lego`` to compare code versions on the same slides.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMPORTS = {
    "segment": "import lego.cli, lego.slides.tissue, lego.slides.reader",
    "extract": "import lego.cli, lego.slides.patches, lego.slides.tissue, pandas",
    "embed": "import lego.cli, lego.slides.embed, lego.slides.encoders.stain_texture",
}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slides", type=int, default=20)
    ap.add_argument("--lego", default=str(Path(sys.executable).parent / "lego"))
    ap.add_argument("--demo", default=str(REPO / "results" / "demo_input" / "slides"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    python = str(Path(args.lego).parent / "python")
    slides = sorted(p for p in Path(args.demo).glob("*.svs") if not p.name.endswith("DX9.svs"))[: args.slides]
    if not slides:
        raise SystemExit(f"no demo slides in {args.demo}: run the demo first (snakemake --cores 2)")
    per_stage = {"segment": [], "extract": [], "embed": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for s in slides:
            t, p, f = out / f"{s.stem}.tissue.parquet", out / f"{s.stem}.patches.h5", out / f"{s.stem}.h5"
            per_stage["segment"].append(timed([args.lego, "segment", "--slide", str(s), "--out-tissue", str(t), "--out-png",
                                               str(out / f"{s.stem}.png"), "--method", "fixed", "--saturation-threshold",
                                               "8", "--min-tissue-area-um2", "20000"]))
            per_stage["extract"].append(timed([args.lego, "extract", "--slide", str(s), "--tissue", str(t), "--out", str(p),
                                               "--min-tissue-fraction", "0.5"]))
            per_stage["embed"].append(timed([args.lego, "embed", "--slide", str(s), "--patches", str(p), "--encoder",
                                             "stain_texture", "--out", str(f)]))
    imports = {k: statistics.mean(timed([python, "-c", code]) for _ in range(3)) for k, code in IMPORTS.items()}
    rows = {k: {"mean_s_per_slide": round(statistics.mean(v), 3), "median_s": round(statistics.median(v), 3),
                "process_start_and_imports_s": round(imports[k], 3)} for k, v in per_stage.items()}
    slowest = max(rows, key=lambda k: rows[k]["mean_s_per_slide"])
    name = "stages_per_slide" + (f"_{args.tag}" if args.tag else "")
    write_result(name, {"lego": args.lego, "slides": len(slides), "stages": rows, "slowest": slowest})


if __name__ == "__main__":
    main()
