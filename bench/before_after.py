"""A method change, before and after, on the same runs: MM-Lego's test C, and where it stands
against its best block and the ensemble, per run and pooled (paired per fold).

Why a script: every change to the merge or the fuse is judged on runs made twice on one machine
(the code before it, then the new code from the same blocks with ``--forcerun merge_tuned fuse``);
runs differ between machines in floating point (docs/lego_method.md section 8), so results made
elsewhere are no reference. Copy each run's ``summary/`` aside before the rerun, then:

    python bench/before_after.py --before DIR --after results --out bench/results/NAME \\
        --group "label=run1,run2" ... run1 run2 ...

DIR holds ``<run>/summary/folds.tsv`` as it was before. Writes NAME.{md,json}. The best block is
the block with the best test mean over the folds *after* the change (hindsight, as
bench/lego_cohorts.py: an optimistic reference; the blocks themselves are unchanged by a merge
change, so before and after share it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import fold_scores, paired, paired_pooled  # noqa: E402

MODELS = ("merge-tuned", "fuse", "lego")  # single-source: the variants a merge change moves


def fmt(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def with_best(scores: pd.DataFrame, best: str) -> pd.DataFrame:
    """The run's fold scores with a ``best`` column: the given block's."""
    return scores.assign(best=scores[best])


def run_row(name: str, before: pd.DataFrame, after: pd.DataFrame) -> tuple[dict, dict]:
    """One run's table row and its numbers (for the JSON)."""
    blocks = [c for c in after if c.startswith("block-") and after[c].notna().all()]
    best = max(blocks, key=lambda c: after[c].mean()) if blocks else None
    row = {"run": name, **{m: f"{before[m].mean():.3f} → {after[m].mean():.3f}" if m in before and m in after else "–"
                           for m in MODELS},
           "lego after − before": fmt(paired(after["lego"], before["lego"])),
           "best block (test)": f"{best[6:]} {after[best].mean():.3f}" if best else "–"}
    nums = {"lego_change": paired(after["lego"], before["lego"])}
    for label, ref in (("best block", best), ("ensemble", "ensemble")):
        if ref is None or ref not in after:
            row[f"lego − {label}, before → after"] = "–"
            continue
        b, a = paired(before["lego"], before[ref]), paired(after["lego"], after[ref])
        row[f"lego − {label}, before → after"] = f"{fmt(b)} → {fmt(a)}"
        nums[f"lego_vs_{label}"] = {"before": b, "after": a}
    return row, {**nums, "best": best}


def pooled_row(label: str, names: list[str], tables: dict, bests: dict) -> dict:
    """The group's folds pooled: lego's change, and lego minus its best block and the ensemble."""
    before = [with_best(tables[n][0], bests[n]) for n in names if bests[n]]
    after = [with_best(tables[n][1], bests[n]) for n in names if bests[n]]
    row = {"runs pooled": label, "lego after − before": fmt(paired(
        pd.concat([t[1]["lego"] for t in (tables[n] for n in names)], ignore_index=True),
        pd.concat([t[0]["lego"] for t in (tables[n] for n in names)], ignore_index=True)))}
    for ref, col in (("best", "lego − best block, before → after"), ("ensemble", "lego − ensemble, before → after")):
        row[col] = f"{fmt(paired_pooled(before, 'lego', ref))} → {fmt(paired_pooled(after, 'lego', ref))}"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run names (folders under --before and --after)")
    ap.add_argument("--before", required=True, type=Path)
    ap.add_argument("--after", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="output path without suffix")
    ap.add_argument("--group", action="append", default=[], help='"label=run1,run2": runs pooled in one row')
    args = ap.parse_args()
    tables = {n: (fold_scores(args.before / n), fold_scores(args.after / n)) for n in args.runs}
    rows, nums = [], {}
    for n, (b, a) in tables.items():
        row, nums[n] = run_row(n, b, a)
        rows.append(row)
    bests = {n: nums[n]["best"] for n in tables}
    groups = [g.split("=", 1) for g in args.group]
    pooled = [pooled_row(label, members.split(","), tables, bests) for label, members in groups]
    md = "\n".join(["## Per run (test C, 5 folds; paired per fold, mean and 95 % t-interval)",
                    pd.DataFrame(rows).to_markdown(index=False), "",
                    "## Pooled over the runs' folds", pd.DataFrame(pooled).to_markdown(index=False) if pooled else "–"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(md + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"runs": nums, "pooled": pooled}, indent=1, default=str))
    print(md)


if __name__ == "__main__":
    main()
