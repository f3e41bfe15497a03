"""How large the HTML report is, and what it would be for 1,000 slides (issue 27).

The report embeds (base64) every file it shows. Heatmaps are shown as small JPEG previews
(``heatmaps/<model>/fold<k>/previews/<slide>.jpg``); the full PNGs, GeoJSON and attention tables
stay on disk beside them. On a finished run this builds the report, measures it and its parts,
and extrapolates to a larger cohort: the report embeds at most ``PREVIEWS_PER_FOLD`` previews per
model and fold (lego.evaluation.heatmaps), so beyond that it does not grow with the number of slides.

``python bench/bench_report.py --workdir <finished run> [--configfile <its config>] [--forcerun-heatmaps]``
writes bench/results/report_size.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, write_result  # noqa: E402

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
MB = 2**20


def snakemake(workdir: Path, config: str | None, *args: str) -> None:
    cmd = [str(SNAKEMAKE), "-s", str(HERE.parent / "Snakefile"), "-d", str(workdir), *(["--configfile", config] if config else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--configfile")
    ap.add_argument("--forcerun-heatmaps", action="store_true", help="redraw the heatmaps first (runs made before previews existed)")
    ap.add_argument("--slides", type=int, default=1000, help="the cohort size to extrapolate to")
    args = ap.parse_args()
    if args.forcerun_heatmaps:
        snakemake(args.workdir, args.configfile, "--cores", "2", "--forcerun", "heatmaps", "--rerun-triggers", "mtime")
    report = args.workdir / "report.html"
    snakemake(args.workdir, args.configfile, "--report", str(report))
    heat = args.workdir / "results"
    previews = list(heat.glob("*/heatmaps/*/fold*/previews/*.jpg"))
    full = list(heat.glob("*/heatmaps/*/fold*/*.png"))
    drawn_models = {p.parts[-4] for p in previews}
    total = report.stat().st_size
    preview_bytes = sum(p.stat().st_size for p in previews)
    per_preview = preview_bytes / max(len(previews), 1)
    from lego.evaluation.heatmaps import PREVIEWS_PER_FOLD

    fixed = total - preview_bytes * 4 / 3  # base64 makes each embedded file 4/3 as large
    folds = len({p.parts[-3] for p in previews})
    scaled = min(PREVIEWS_PER_FOLD, args.slides / max(folds, 1))  # each slide in one fold's test part
    write_result("report_size", {
        "workdir": str(args.workdir),
        "report_mb": round(total / MB, 2),
        "heatmap_previews": len(previews),
        "preview_kb_mean": round(per_preview / 1024, 1),
        "preview_kb_max": round(max((p.stat().st_size for p in previews), default=0) / 1024, 1),
        "full_png_mb_on_disk": round(sum(p.stat().st_size for p in full) / MB, 1),
        "models_with_heatmaps": sorted(drawn_models),
        "previews_per_model_and_fold_at_most": PREVIEWS_PER_FOLD,
        f"report_mb_for_{args.slides}_slides": round((fixed + len(drawn_models) * folds * scaled * per_preview * 4 / 3) / MB, 1),
        "extrapolation": f"report minus its embedded previews, plus the previews of {args.slides} slides split over the same "
                         "folds (each slide tested once), at most the cap per model and fold; same models and folds",
    })


if __name__ == "__main__":
    main()
