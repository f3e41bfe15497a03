"""Could another merge weighting keep ``lego`` at its best block on every TCGA cohort? (issue 26,
docs/lego_method.md section 3).

On the nine published-split runs of bench/lego_cohorts.py, ``lego`` is level with its best block
pooled but 0.017-0.041 below it on COADREAD, KIRC and STAD. This asks two questions of the runs'
saved blocks, without retraining anything:

1. **Weighting rules.** The readout merge's risk is a weighted mean of its blocks' risks (Spearman
   0.999 with the saved merge's test risks), so any rule for the weights can be replayed from the
   blocks' risks on the fold's out-of-sample patients (cross-fitted training scores + validation,
   what the tuned merge chooses on) and scored on test. Rules: equal weights, the tuned merge's
   Cox stacking, weights proportional to each block's out-of-sample C - 0.5, and the single block
   with the best out-of-sample C. Each is compared with the best block chosen with hindsight (the
   best test mean over the folds), as lego_cohorts.py does, and with the run's own ``lego``.
2. **The hindsight reference.** The "best block" of a cohort is picked on the very test patients it
   is scored on, so it is biased up. Each fold's test patients are split into random halves: the
   block chosen on one half (mean over the folds) is scored on the other, beside the other half's
   own best. The gap is the optimism of the reference (at half the events; the full set's is
   smaller, roughly by 1/sqrt(2)); ``lego`` is scored against both.

Test patients choose nothing in (1): every rule's weights come from the out-of-sample patients.

    python bench/merge_rules.py [--repeats 200]   # -> bench/results/merge_rules.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lego_cohorts import CONFIGS, PAPER, ROOT, TOLERANCE  # noqa: E402
from paper_table import paired  # noqa: E402

from lego.survival.discrimination import c_index  # noqa: E402

RULES = ("lego", "equal", "stacked", "c-weighted", "best out-of-sample block")


def fold_risks(run: Path, plan, fold: int) -> pd.DataFrame:
    """Each block's risk on the fold's out-of-sample patients (part oof/val) and test patients,
    with ``lego``'s test risk and the outcome: one row per patient."""
    from lego.data.fold_data import fold_ids
    from lego.io import read_frame, read_json
    from lego.model_selection import out_of_sample
    from lego.models.model_kinds import HISTORY
    from lego.steps.fold_blocks import load_blocks
    from lego.steps.inference import fold_modalities

    lab = read_frame(str(run / "cohort/labels.parquet"), "labels").set_index("patient_id")[["time", "event"]]
    ids = fold_ids(read_frame(str(run / "cohort/folds.parquet"), "folds"), fold)
    dirs = [str(run / f"blocks/{m}/fold{fold}") for m in plan.modalities]
    blocks, configs = load_blocks(dirs)
    mods = fold_modalities(configs, {m: plan.data_path(m) for m in plan.modalities}, ids=ids)
    oos = out_of_sample(blocks, {m: read_json(Path(d) / HISTORY) for m, d in zip(configs, dirs)}, mods, ids)
    risks = pd.DataFrame({m: oos.block_risks(blocks[m], configs[m], m) for m in blocks}).reindex(oos.ids)
    risks["part"] = np.where(risks.index.isin(ids["val"]), "val", "oof")

    def test_risk(model: str) -> pd.Series:
        p = pd.read_parquet(run / f"eval/{model}/fold{fold}/predictions.parquet")
        return p[p.subset == "test"].set_index("patient_id")["risk"]

    test = pd.DataFrame({**{m: test_risk(f"block-{m}") for m in plan.modalities}, "lego": test_risk("lego")})
    test["part"] = "test"
    return pd.concat([risks, test]).join(lab)


def rule_weights(oos: pd.DataFrame, mods: list[str]) -> dict[str, dict[str, float]]:
    """Each rule's weights for the blocks' risks standardised on the out-of-sample patients."""
    from lego.models.stacking import stack_weights

    z = (oos[mods] - oos[mods].mean()) / oos[mods].std(ddof=0).replace(0, 1)
    t, e = oos["time"].to_numpy(float), oos["event"].to_numpy(bool)
    stacked = stack_weights(z.to_numpy(float), z.notna().to_numpy(), t, e, shrink=0.0)  # the free fit, as measured
    cs = {m: c_index(t[z[m].notna()], e[z[m].notna()], z[m].dropna().to_numpy()) for m in mods}
    best = max(cs, key=lambda m: np.nan_to_num(cs[m]))
    return {"equal": dict.fromkeys(mods, 1.0), "stacked": dict(zip(mods, stacked)),
            "c-weighted": {m: max(np.nan_to_num(c) - 0.5, 1e-4) for m, c in cs.items()},
            "best out-of-sample block": {m: 1.0 if m == best else 1e-6 for m in mods}}


def weighted_risk(z: pd.DataFrame, weights: dict[str, float]) -> np.ndarray:
    """The readout merge's form: the weighted mean of the risks of the blocks a patient has."""
    w = pd.Series(weights)[z.columns]
    den = z.notna().mul(w).sum(1)
    return (z.fillna(0).mul(w).sum(1) / den.where(den > 0)).to_numpy()


def part_scores(d: pd.DataFrame, mods: list[str]) -> dict[str, float]:
    """Each block's C on the cross-fitted training scores, on validation and on test: is one kind of
    block understated out of sample more than another (which would bias every weight against it)?"""
    out = {}
    for part in ("oof", "val", "test"):
        for m in mods:
            p = d[(d.part == part) & d[m].notna()]
            out[f"{part}:{m}"] = c_index(p["time"].to_numpy(float), p["event"].to_numpy(bool), p[m].to_numpy(float))
    return out


def fold_scores(d: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """Test C of each block and rule on one fold (and each block's C per part), and the test rows
    (for the halves)."""
    mods = [c for c in d.columns if c not in ("part", "time", "event", "lego")]
    oos, te = d[d.part != "test"], d[d.part == "test"]
    zt = (te[mods] - oos[mods].mean()) / oos[mods].std(ddof=0).replace(0, 1)
    t, e = te["time"].to_numpy(float), te["event"].to_numpy(bool)
    scores = {f"block-{m}": c_index(t[te[m].notna()], e[te[m].notna()], te[m].dropna().to_numpy()) for m in mods}
    scores["lego"] = c_index(t, e, te["lego"].to_numpy(float))
    for rule, w in rule_weights(oos, mods).items():
        scores[rule] = c_index(t, e, weighted_risk(zt, w))
    return {**scores, **part_scores(d, mods)}, te.rename(columns={m: f"block-{m}" for m in mods})


def halves(tests: list[pd.DataFrame], repeats: int, seed: int = 0) -> dict[str, float]:
    """The hindsight best block's optimism, from random halves of each fold's test patients."""
    rng = np.random.default_rng(seed)
    blocks = [c for c in tests[0] if c.startswith("block-")]
    chosen, own, lego = [], [], []
    for _ in range(repeats):
        per = {h: {c: [] for c in [*blocks, "lego"]} for h in "AB"}
        for te in tests:
            cut = rng.permutation(len(te)) < len(te) // 2
            for h, part in (("A", te[cut]), ("B", te[~cut])):
                t, e = part["time"].to_numpy(float), part["event"].to_numpy(bool)
                for c in per[h]:
                    ok = part[c].notna().to_numpy()
                    per[h][c].append(c_index(t[ok], e[ok], part[c].to_numpy(float)[ok]))
        mean = {h: {c: np.nanmean(v) for c, v in per[h].items()} for h in "AB"}
        pick = max(blocks, key=lambda b: mean["A"][b])
        chosen.append(mean["B"][pick])
        own.append(max(mean["B"][b] for b in blocks))
        lego.append(mean["B"]["lego"])
    chosen, own, lego = map(np.asarray, (chosen, own, lego))
    return {"optimism": float(np.mean(own - chosen)), "lego_vs_hindsight": float(np.mean(lego - own)),
            "lego_vs_chosen_apart": float(np.mean(lego - chosen))}


def best_block(scores: pd.DataFrame) -> str:
    """The block with the best test mean over the folds: the hindsight reference of lego_cohorts.py."""
    return max((c for c in scores if c.startswith("block-")), key=lambda c: scores[c].mean())


def cohort_table(name: str, repeats: int) -> tuple[pd.DataFrame, dict]:
    from lego.config import load_config
    from lego.plan import Plan

    os.chdir(ROOT)  # the configs' paths are relative to the project
    plan = Plan(load_config(str(ROOT / CONFIGS[name])))
    run = Path(plan.out)
    rows, tests = [], []
    for fold in range(5):
        scores, te = fold_scores(fold_risks(run, plan, fold))
        rows.append({"fold": fold, **scores})
        tests.append(te)
    return pd.DataFrame(rows), halves(tests, repeats)


def markdown(per: dict[str, pd.DataFrame], half: dict[str, dict], pool: list[dict]) -> str:
    fmt = lambda d: f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"  # noqa: E731
    rows = []
    for c, s in per.items():
        best = best_block(s)
        rows.append({"cohort": c, "best block (hindsight)": f"{best[6:]} {s[best].mean():.3f}",
                     **{r: f"{(s[r] - s[best]).mean():+.3f}" for r in RULES},
                     "optimism of the hindsight best (halves)": f"{half[c]['optimism']:+.3f}",
                     "lego - best block chosen on the other half": f"{half[c]['lego_vs_chosen_apart']:+.3f}",
                     "lego - hindsight best (halves)": f"{half[c]['lego_vs_hindsight']:+.3f}"})
    below = {r: sum(float(x) < -TOLERANCE for x in (row[r] for row in rows)) for r in RULES}
    parts = pd.concat([s.filter(like=":") for s in per.values()], ignore_index=True)
    kinds = sorted({c.split(":")[1] for c in parts})
    by_part = pd.DataFrame([{"block": k, **{p: round(float(parts[f"{p}:{k}"].mean()), 3) for p in ("oof", "val", "test")},
                             "oof - test": f"{(parts[f'oof:{k}'] - parts[f'test:{k}']).mean():+.3f}",
                             "folds": int(parts[f"test:{k}"].notna().sum())} for k in kinds])
    return "\n".join([
        "## Each rule minus the best block chosen with hindsight, mean test C over the 5 folds",
        pd.DataFrame(rows).to_markdown(index=False),
        "\n## Pooled over the cohorts' folds (paired, 95 % t-interval)",
        pd.DataFrame([{**{k: d[k] for k in ("cohorts", "rule", "reference", "n")}, "difference": fmt(d)}
                      for d in pool]).to_markdown(index=False),
        f"\nCohorts more than {TOLERANCE} below their hindsight best block, per rule: "
        + ", ".join(f"{r} {n}" for r, n in below.items()) + ".",
        "\n## Each kind of block's C on the out-of-sample parts and on test, mean over the folds that have it",
        by_part.to_markdown(index=False)]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200, help="random halvings of the test patients")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "merge_rules"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    per, half = {}, {}
    for c in CONFIGS:
        per[c], half[c] = cohort_table(c, args.repeats)
        print(c, {k: round(v, 3) for k, v in half[c].items()}, flush=True)
    pool = []
    for group, names in (("all 9", list(per)), ("paper's four", [c for c in per if c in PAPER]),
                         ("five development", [c for c in per if c not in PAPER])):
        for r in RULES:
            a, b = [], []
            for c in names:
                a.append(per[c][r])
                b.append(per[c][best_block(per[c])])
            pool.append({"cohorts": group, "rule": r, "reference": "best block (hindsight)",
                         **paired(pd.concat(a, ignore_index=True), pd.concat(b, ignore_index=True))})
    out = Path(args.out)
    out.with_suffix(".md").write_text(markdown(per, half, pool))
    out.with_suffix(".json").write_text(json.dumps({"folds": {c: s.to_dict("records") for c, s in per.items()},
                                                    "halves": half, "pooled": pool, "repeats": args.repeats}, indent=1))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
