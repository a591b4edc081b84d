"""Offline study of the rating signal on the dumps of ``signal_probe.py`` (issue 15): what each part sees.

    python benchmarks/signal_probe.py --data shapes --pool 5000 --seeds 0 1 2 --out /tmp/probe
    python benchmarks/signal_study.py --probe /tmp/probe --data shapes:5000 glyphs --seeds 0 1 2 --tag _study

Reads each ``<data>_<seed>.npz`` (per-token losses of the warmed-up proxy under the true, rolled and
empty captions), decodes the pool and validation images once per dataset for the native-detail
check (:mod:`lightning_alchemist.rater.detail`), and tabulates, mean over the seeds found:

1. per-scale losses and caption gains: which STAR scale sees which defect (AUC clean-above-kind);
2. the contrast's knobs: β, partners (2/4/8 rolled captions), the empty caption's share, per-scale
   standardisation, a cap on the caption gain;
3. the model-free image checks on top of the contrast: native detail (threshold, weight), then the noise
   level and the near-empty check (threshold);
4. the selection rule on the final ranking: top-K vs Shift-Gaussian (``head=auto``: n 0, µ 0) at σ 0.1–0.3,
   a small dropped head, the paper's head; and what lies in each band of the ranking.

Kept shares are at keep 0.5 under top-K unless said. Labels are read for evaluation only.
Writes ``benchmarks/results/rater_detail<tag>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def auc(clean: np.ndarray, other: np.ndarray) -> float:
    from lightning_alchemist.rater.auc import auc as _auc

    return float(_auc(clean, other))


def evaluate(score: np.ndarray, kinds: np.ndarray, keep: float = 0.5) -> dict[str, Any]:
    names = sorted(set(kinds.tolist()) - {"clean"})
    clean = score[kinds == "clean"]
    n = int(round(keep * len(score)))
    mask = np.zeros(len(score), dtype=bool)
    mask[np.argsort(-score, kind="stable")[:n]] = True
    return {"auc": {k: auc(clean, score[kinds == k]) for k in names},
            "kept": {k: float(mask[kinds == k].mean()) for k in ["clean", *names]},
            "defect_share": float((kinds[mask] != "clean").mean())}


def parts(d: dict, partners: int = 2) -> dict[str, Any]:
    """Per-sample loss and gains (whole sequence and per scale) from one dump."""
    T, E, R, lv = d["true"], d["empty"], d["rolled"], d["levels"]
    scales = sorted(set(lv.tolist()))
    out: dict[str, Any] = {"l": T.mean(1), "gr": R[:, :partners].mean((1, 2)) - T.mean(1), "ge": E.mean(1) - T.mean(1)}
    out["Ls"] = [T[:, lv == s].mean(1) for s in scales]
    out["Rs"] = [R[:, :partners][:, :, lv == s].mean((1, 2)) for s in scales]
    out["Es"] = [E[:, lv == s].mean(1) for s in scales]
    out["tokens"] = [int((lv == s).sum()) for s in scales]
    return out


def z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-12)


def contrast(p: dict, beta: float = 4.0, null_share: float = 0.5, cap_q: float | None = None) -> np.ndarray:
    g = (1 - null_share) * p["gr"] + null_share * p["ge"]
    if cap_q is not None:
        g = np.minimum(g, np.quantile(g, cap_q))
    return -(p["l"] - beta * g)


def per_scale_contrast(p: dict, beta: float = 1.0) -> np.ndarray:
    ls = sum(z(x) for x in p["Ls"])
    g = sum(z(0.5 * (r - x) + 0.5 * (e - x)) for r, e, x in zip(p["Rs"], p["Es"], p["Ls"]))
    return -ls + beta * g


def checks_of(data: str, pool: int) -> tuple[dict[str, Any], dict[str, dict[str, float]], str]:
    """The validation split's image-check references (``detail``, ``noise``, ``empty``), each pool key's statistics,
    and the dataset's identity (``signal_probe.data_id``)."""
    import rater_signal as rs

    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.schema import validate

    overrides = [f"data={data}"] + ([f"data.{data}.num_pool={pool}"] if pool else [])
    cfg = validate(check_overrides("config", overrides, rs.ROOT / "conf"))
    dm = build_datamodule(cfg.data, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    from signal_probe import data_id

    return (*rs.image_check_inputs(dm), data_id(dm))


def check_dump_matches(dump: Path, blob: dict[str, Any], data: str) -> None:
    """Refuse a dump rated on other images than the ones this code generates under the same keys.

    The study decodes the pool by key to compute the image checks; a dump made before the generator
    changed (or at another pool size) pairs its ratings with the wrong images, silently.
    """
    made_on = str(blob["data_id"]) if "data_id" in blob else None
    if made_on != data:
        raise SystemExit(f"{dump}: made on data {made_on or '(not recorded: an older signal_probe.py)'}, but this code "
                         f"generates {data} for the same keys; rerun benchmarks/signal_probe.py to make dumps of this data")


def mean_rows(rows: list[dict]) -> dict[str, Any]:
    out = {"auc": {}, "kept": {}, "defect_share": float(np.mean([r["defect_share"] for r in rows]))}
    for part in ("auc", "kept"):
        for k in rows[0][part]:
            out[part][k] = float(np.mean([r[part][k] for r in rows]))
    return out


def table(title: str, named: dict[str, dict], kinds_order: list[str]) -> list[str]:
    defects = [k for k in kinds_order if k != "clean"] if any(r["auc"] for r in named.values()) else []
    lines = ["", f"### {title}", "",
             "| variant | " + "".join(f"AUC {k} | " for k in defects) + "defect share | " + " | ".join(f"{k} kept" for k in kinds_order) + " |",
             "|---|" + "---:|" * (len(defects) + 1 + len(kinds_order))]
    for name, r in named.items():
        lines.append(f"| {name} | " + "".join(f"{r['auc'].get(k, float('nan')):.2f} | " for k in defects)
                     + f"{r['defect_share']:.3f} | " + " | ".join(f"{100 * r['kept'][k]:.0f} %" for k in kinds_order) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    import torch

    from lightning_alchemist.rater.detail import CHECKS, detail_penalty, robust_penalty, robust_reference
    from lightning_alchemist.selection.ratings import Ratings
    from lightning_alchemist.selection.strategies import ShiftGaussian, TopK

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--probe", required=True, help="folder of signal_probe.py dumps")
    p.add_argument("--data", nargs="+", default=["shapes:5000", "glyphs"], help="NAME[:POOL] as the probe ran")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tag", default="")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# Rating signal study: what the proxy sees, the native-detail check, the selection rule (issue 15)", "",
             f"Command: `python benchmarks/signal_study.py {' '.join(argv if argv is not None else sys.argv[1:])}` on the dumps of "
             "`python benchmarks/signal_probe.py` (warm-up 800 steps on the validation split, cached; batch 32 in file order; "
             "rolled partners at the scorer's shifts).  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f}. "
             "AUC = P(clean rated above the kind); kept = share of the kind at keep 0.5 (top-K unless said); mean over the seeds listed."]
    for spec in args.data:
        name, _, pool = spec.partition(":")
        dumps = [(s, Path(args.probe) / f"{name}_{s}.npz") for s in args.seeds]
        dumps = [(s, f) for s, f in dumps if f.is_file()]
        if not dumps:
            print(f"no dumps for {name} under {args.probe}")
            continue
        refs, stats_of, data = checks_of(name, int(pool or 0))
        ref = refs["detail"]
        per: dict[str, list] = {}
        sel_rows: dict[str, list] = {}
        band_rows: dict[str, list] = {}
        kinds_order: list[str] = []
        for seed, f in dumps:
            d = dict(np.load(f, allow_pickle=True))
            check_dump_matches(f, d, data)
            kinds = d["kinds"].astype(str)
            kinds_order = ["clean", *sorted(set(kinds.tolist()) - {"clean"})]
            stats = {n: torch.tensor([v[str(k)] for k in d["keys"]]) for n, v in stats_of.items()}
            logd = stats["detail"]
            pen = lambda t, w: detail_penalty(logd, ref, t, w).numpy()  # noqa: E731

            def check(n: str, t: float, w: float = 4.0) -> np.ndarray:
                return robust_penalty(stats[n], refs[n], CHECKS[n].side, t, w).numpy()

            pp = {P: parts(d, P) for P in (2, 3, 4, 8)}
            c = pp[2]
            cand: dict[str, Callable[[], np.ndarray]] = {}
            for si, (lsc, rsc, esc) in enumerate(zip(c["Ls"], c["Rs"], c["Es"])):
                cand[f"scale {si} ({c['tokens'][si]} tokens): −ℓ"] = lambda lsc=lsc: -lsc
                cand[f"scale {si}: caption gain"] = lambda lsc=lsc, rsc=rsc, esc=esc: 0.5 * (rsc - lsc) + 0.5 * (esc - lsc)
            cand["all scales: −ℓ"] = lambda: -c["l"]
            cand["contrast β4, 2 partners, empty caption ½ (no checks)"] = lambda: contrast(c)
            cand["contrast β4, 4 partners"] = lambda: contrast(pp[4])
            cand["contrast β4, 8 partners"] = lambda: contrast(pp[8])
            for beta in (2.0, 3.0, 8.0):
                cand[f"contrast β{beta:g}"] = lambda beta=beta: contrast(c, beta)
            cand["contrast β4, empty caption ¼"] = lambda: contrast(c, 4.0, 0.25)
            cand["contrast β4, empty caption ¾"] = lambda: contrast(c, 4.0, 0.75)
            cand["contrast β4, gain capped at its pool median"] = lambda: contrast(c, 4.0, cap_q=0.5)
            cand["per-scale standardised −ℓ + gain"] = lambda: per_scale_contrast(c, 1.0)
            cand["detail share alone (log10, higher = keep)"] = lambda: logd.numpy()
            for t in (1.5, 2.0, 3.0):
                for w in (1.0, 4.0):
                    cand[f"contrast − detail penalty (threshold {t:g}, weight {w:g})"] = lambda t=t, w=w: contrast(c) - pen(t, w)
            for t in (2.0, 3.0, 5.0):
                cand[f"contrast − detail (2, 4) − noise penalty (threshold {t:g}, weight 4)"] = lambda t=t: contrast(c) - pen(2.0, 4.0) - check("noise", t)
            for t in (2.0, 3.0, 5.0):
                cand[f"contrast − detail (2, 4) − empty penalty (threshold {t:g}, weight 4)"] = lambda t=t: contrast(c) - pen(2.0, 4.0) - check("empty", t)
            checks = pen(2.0, 4.0) + check("noise", 3.0) + check("empty", 3.0)
            # the partners and the empty caption's share, on top of the three checks (detail (2, 4), noise (3, 4),
            # empty (3, 4); they now catch the plain images the empty caption was first added for)
            named = {(2, 0.5): ": the previous default", (3, 0.25): ": the default"}
            for P in (2, 3, 4, 8):
                for share in (0.0, 0.25, 0.5):
                    cand[f"contrast, {P} partners, empty caption {share:g} − the three checks{named.get((P, share), '')}"] = \
                        lambda P=P, share=share: contrast(pp[P], 4.0, share) - checks
            final = contrast(pp[3], 4.0, 0.25) - checks
            # without a clean split the references come from a held-out random 10 % of the (dirty) pool
            held = torch.from_numpy(np.random.default_rng(seed).random(len(kinds)) < 0.1)
            pool_refs = {n: robust_reference([stats[n][held]], CHECKS[n].floor) for n in CHECKS}
            cand["the default, references from a random 10 % of the pool (no clean split)"] = lambda: contrast(pp[3], 4.0, 0.25) - sum(
                robust_penalty(stats[n], pool_refs[n], CHECKS[n].side, t, 4.0).numpy()
                for n, t in (("detail", 2.0), ("noise", 3.0), ("empty", 3.0)))
            for key, fn in cand.items():
                per.setdefault(key, []).append(evaluate(fn(), kinds))
            order = np.argsort(-final, kind="stable")
            n = len(final)
            for lo, hi in ((0, 0.05), (0.05, 0.2), (0.2, 0.4), (0.4, 0.5), (0.5, 0.6)):
                seg = kinds[order[int(lo * n) : int(hi * n)]]
                band_rows.setdefault(f"ranks {lo:g}–{hi:g}", []).append({k: float((seg == k).mean()) for k in kinds_order})
            base = Ratings.from_arrays([str(k) for k in d["keys"]], final)
            rated = Ratings(base.keys, base.ratings, ranking={"objective": "contrast", "head": "clean", "tail": "noise"})
            strategies = {"top-K": TopK()}
            for sg in (0.1, 0.2, 0.3):
                strategies[f"Shift-Gaussian head=auto (n 0, µ 0), σ {sg:g}" + (" (default)" if sg == 0.2 else "")] = ShiftGaussian(sigma=sg)
            strategies["Shift-Gaussian n 0.05, µ 0.05, σ 0.2 (small head dropped)"] = ShiftGaussian(n=0.05, mu=0.05, sigma=0.2, head="drop")
            strategies["Shift-Gaussian paper head (n 0.2, µ 0.6, σ 0.2)"] = ShiftGaussian(head="drop")
            for sname, strat in strategies.items():
                sel = strat.select(rated, 0.5, seed=seed)
                mask = np.zeros(n, dtype=bool)
                mask[sel.indices] = True
                sel_rows.setdefault(sname, []).append({"auc": {}, "kept": {k: float(mask[kinds == k].mean()) for k in kinds_order},
                                                       "defect_share": float((kinds[mask] != "clean").mean())})
        seeds = [s for s, _ in dumps]
        lines += ["", f"## {name} (pool {len(kinds)}, defect share {(kinds != 'clean').mean():.3f}; seeds {seeds})", "",
                  f"Image-check references (validation split, {ref.n} images; median / robust spread): "
                  + ", ".join(f"{n} {r.median:.2f} / {r.spread:.2f}" for n, r in refs.items())
                  + " (detail: log10 share; noise: grey levels; empty: log10 grey-level std)."]
        lines += table("Signals (top-K at keep 0.5)", {k: mean_rows(v) for k, v in per.items()}, kinds_order)
        lines += table("Selection rules on the final ranking (the default: contrast − the three image checks), keep 0.5",
                       {k: mean_rows(v) for k, v in sel_rows.items()}, kinds_order)
        lines += ["", "### What lies in each band of the final ranking (share of the band)", "",
                  "| band | " + " | ".join(kinds_order) + " |", "|---|" + "---:|" * len(kinds_order)]
        for band, rows in band_rows.items():
            lines.append(f"| {band} | " + " | ".join(f"{100 * np.mean([r[k] for r in rows]):.0f} %" for k in kinds_order) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.results) / f"rater_detail{args.tag}.md"
    out.write_text(md)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
