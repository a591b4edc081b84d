"""Overhead of the method, as ratios measured side by side in one run (issue 7).

    python benchmarks/overhead.py                   # shapes, star_tiny, every part, 1M/10M/30M selection
    python benchmarks/overhead.py --quick           # small pool, few steps, 1M selection (a few minutes)
    python benchmarks/overhead.py --parts meta --model flux_tiny --device cuda

Parts (``--parts``, default all):
- ``meta``: a rater training step per meta-gradient variant (first_order, penalty, unrolled) vs a
  plain training step of the same proxy (``T2IModule``), same data and batch size. A rater step
  reads a pool batch and a validation batch; the plain step one batch. Plus where a first_order
  step's time goes (encode, losses, rater, backward, optimiser steps), timed outside Lightning.
- ``scoring``: ``lightning_alchemist.rater.scoring.score`` (decode + collate + proxy encode + rater,
  Parquet written) vs iterating the same datamodule's predict dataloader (decode + collate only).
- ``callback``: a tiny model's training step with vs without ``DataSelectionCallback``
  (``benchmarks/selection_scale.py``'s measurement).
- ``selection``: ``benchmarks/selection_scale.py``'s cases (read, ShiftGaussian, epoch order) with
  timings and peak memory at 1M, 10M and 30M ratings.
- ``features`` (issue 14, encode once): the encode stage's throughput vs the encoders' bare forward over
  the same pool (decode + ``proxy.encode``, nothing written); a first_order rater step (``--objective``,
  default ``official``, the meta-gradient rule) from cached features vs a plain target step from cached
  features; scoring from cached features vs a bare decode of the same shards; a target step with vs
  without the cache. All four side by side in one run.

Prints a table with the targets beside the measured values and writes
``benchmarks/results/overhead.{md,json}`` (or ``--out``) with date, machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]

PARTS = ("meta", "scoring", "callback", "selection", "features")
VARIANTS = ("first_order", "penalty", "unrolled")
MODELS = ("star_tiny", "star_40m", "flux_tiny")
TARGETS = {
    "meta_first_order": ("<= 2.0x a plain step", lambda r: r <= 2.0),
    "scoring": (">= 0.8x the bare decode rate", lambda r: r >= 0.8),
    "callback": ("<= 2 %", lambda r: r <= 2.0),
    "selection_30m": ("<= 3 s", lambda r: r <= 3.0),
    "features_rater": ("<= 1.6x a plain step", lambda r: r <= 1.6),
    "features_scoring": (">= 1.0x the bare decode rate", lambda r: r >= 1.0),
    "features_encode": (">= 0.9x the bare encoder forward", lambda r: r >= 0.9),
}
# --quick: a small shapes pool (cached after the first run) and few steps.
QUICK_SHAPES = ["data.shapes.num_pool=1000", "data.shapes.num_val=200", "data.shapes.shard_size=500"]


def _sibling(name: str) -> Any:
    """Another script of benchmarks/ as a module, imported by path (works however this file was loaded)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose(args: argparse.Namespace, *extra: str) -> Any:
    """The root config (conf/config.yaml) with this run's overrides."""
    from lightning_alchemist.cli import check_overrides

    overrides = [f"model={args.model}", f"rater.proxy={args.model}", f"data.batch_size={args.batch_size}",
                 *(QUICK_SHAPES if args.quick else []), *args.override, *extra]
    if args.model == "flux_tiny":
        overrides.append("data.image_size=32")
    return check_overrides("config", overrides, ROOT / "conf")


def trainer_kwargs(args: argparse.Namespace) -> dict:
    kw: dict[str, Any] = {"accelerator": "gpu" if args.device == "cuda" else "cpu", "devices": 1, "logger": False,
                          "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    if args.device == "cuda":
        kw["precision"] = "bf16-mixed"
    return kw


class StepTimer:
    """Lightning callback: wall time of each training step (batch start to batch end, data fetch excluded).

    Stops the fit after ``total`` steps (``max_steps`` would count one step per optimiser under
    manual optimisation: 2 or 3 per rater step).
    """

    def __new__(cls, sync: bool, total: int):
        import lightning.pytorch as pl
        import torch

        class _Timer(pl.Callback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self._t0 = 0.0

            def _now(self) -> float:
                if sync:
                    torch.cuda.synchronize()
                return time.perf_counter()

            def on_train_batch_start(self, *a: Any) -> None:
                self._t0 = self._now()

            def on_train_batch_end(self, trainer: Any, *a: Any) -> None:
                self.times.append(self._now() - self._t0)
                if len(self.times) >= total:
                    trainer.should_stop = True

        return _Timer()


_PROXIES: dict[str, Any] = {}


def _proxy(model_cfg: dict) -> Any:
    """A fresh copy of the proxy built once per run (every module starts from the same weights; builds are slow)."""
    import copy

    from lightning_alchemist.rater.recipe import build_rater_proxy

    key = json.dumps(model_cfg, sort_keys=True, default=str)
    if key not in _PROXIES:
        _PROXIES[key] = build_rater_proxy(model_cfg)
    return copy.deepcopy(_PROXIES[key])


def _rater_module(cfg: Any, variant: str) -> tuple[Any, Any]:
    """A fresh RaterModule (built as ``run_train_rater`` builds it) and its paired datamodule."""
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.config import as_container
    from lightning_alchemist.rater.config import rater_config
    from lightning_alchemist.rater.data import RaterDataModule
    from lightning_alchemist.rater.module import RaterModule, infer_rater_dims
    rcfg = rater_config(cfg.rater)
    import dataclasses

    rcfg = dataclasses.replace(rcfg, meta_gradient=variant) if variant != rcfg.meta_gradient else rcfg
    model_cfg = as_container(rcfg.proxy if rcfg.proxy is not None else cfg.model)
    proxy = _proxy(model_cfg)
    data = RaterDataModule(build_datamodule(cfg.data, seed=0), seed=0)
    token_dim, text_dim = infer_rater_dims(proxy, data.first_val_batch())
    module = RaterModule(proxy, token_dim, text_dim, rcfg, proxy_spec={"model": model_cfg, "finetune": None})
    return module, data


def _plain_module(cfg: Any) -> tuple[Any, Any]:
    """The same proxy (same builder, same model node) as a plain ``T2IModule``, and the pool datamodule."""
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.target.module import T2IModule
    from lightning_alchemist.config import as_container
    from lightning_alchemist.rater.config import rater_config

    proxy = rater_config(cfg.rater).proxy
    model_cfg = as_container(proxy if proxy is not None else cfg.model)
    return T2IModule(proxy=_proxy(model_cfg)), build_datamodule(cfg.data, seed=0)


def _time_steps(args: argparse.Namespace, module: Any, data: Any, steps: int, warmup: int) -> dict:
    import lightning.pytorch as pl

    timer = StepTimer(sync=args.device == "cuda", total=warmup + steps)
    trainer = pl.Trainer(max_epochs=10_000, limit_val_batches=0, num_sanity_val_steps=0,
                         callbacks=[timer], **trainer_kwargs(args))
    trainer.fit(module, datamodule=data)
    times = timer.times[warmup:]
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "steps": len(times)}


def measure_meta(args: argparse.Namespace) -> dict:
    """Median step time per variant and plain, interleaved over ``repeats`` (best median kept)."""
    import torch

    torch.manual_seed(0)
    cfg = compose(args)
    runs: dict[str, list[dict]] = {name: [] for name in ("plain", *args.variants)}
    for rep in range(args.repeats):
        for name in runs:
            module, data = _plain_module(cfg) if name == "plain" else _rater_module(cfg, name)
            res = _time_steps(args, module, data, args.steps, args.warmup)
            runs[name].append(res)
            print(f"  meta[{rep}] {name:12s} {res['median_ms']:8.1f} ms/step (median of {res['steps']}; "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
    best = {name: min(r["median_ms"] for r in rs) for name, rs in runs.items()}
    out = {"step_ms": {k: round(v, 2) for k, v in best.items()},
           "ratio_vs_plain": {k: round(best[k] / best["plain"], 2) for k in args.variants},
           "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats}
    out["breakdown_ms"] = meta_breakdown(args, cfg)
    return out


def meta_breakdown(args: argparse.Namespace, cfg: Any, steps: int = 6) -> dict:
    """Where rater steps (each variant) and a plain step spend their time: ms per phase, outside Lightning, same batches.

    The rater step is ``RaterModule.step_losses`` (frozen encode + proxy losses + rater + the
    variant's rater loss), one backward of their sum, and the optimiser steps; its frozen encode
    is also timed alone.
    """
    import torch

    from lightning_alchemist.data.sample import collate_samples

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.device == "cuda" else nullcontext
    phases: dict[str, list[float]] = {}

    def tick(name: str, t0: float) -> float:
        sync()
        now = time.perf_counter()
        phases.setdefault(name, []).append((now - t0) * 1e3)
        return now

    for variant in args.variants:
        module, data = _rater_module(cfg, variant)
        module.to(device)
        data.data.setup("fit")
        pool, val = data.data.pool, data.data.val
        bs = args.batch_size

        def batch_of(ds: Any, i: int) -> dict:
            b = collate_samples([ds[(i * bs + j) % len(ds)] for j in range(bs)])
            return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}

        proxy = module.proxy
        opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad] or [torch.nn.Parameter(torch.zeros(1))],
                                  lr=1e-4) for m in (proxy, module.rater)]
        ref = module.meta.reference_parameters()
        if ref:
            opts.append(torch.optim.AdamW(ref, lr=1e-4))
        for i in range(steps + 1):  # step 0 warms up and is dropped
            pb, vb = batch_of(pool, i), batch_of(val, i)
            sync()
            t = time.perf_counter()
            with amp(), torch.no_grad():
                proxy.encode(pb), proxy.encode(vb)
            t = tick(f"{variant}: frozen encode of pool + val (included in the next row)", t)
            with amp():
                out = module.step_losses({"pool": pb, "val": vb}, i)
            t = tick(f"{variant}: forward (encode, proxy losses, rater, rater loss)", t)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            total = out["rater"] + out["proxy"] + (out["reference"] if out["reference"] is not None else 0)
            total.backward()
            t = tick(f"{variant}: backward", t)
            for opt in opts:
                opt.step()
            tick(f"{variant}: optimiser steps", t)
            # the plain step on the same pool batch, right after (same load): the interleaved ratio
            name = "plain" if variant == args.variants[0] else f"plain (beside {variant})"
            t = time.perf_counter()
            with amp():
                with torch.no_grad():
                    enc = proxy.encode(pb)
                t = tick(f"{name}: frozen encode of the batch", t)
                loss = proxy.per_sample_loss(enc, generator=torch.Generator(device=device).manual_seed(i)).mean()
                t = tick(f"{name}: proxy loss (forward)", t)
            opts[0].zero_grad(set_to_none=True)
            loss.backward()
            t = tick(f"{name}: backward", t)
            opts[0].step()
            tick(f"{name}: optimiser step", t)
    med = {k: statistics.median(v[1:]) for k, v in phases.items()}  # step 0 warmed up
    ratio = {}
    for variant in args.variants:
        name = "plain" if variant == args.variants[0] else f"plain (beside {variant})"
        ours = sum(v for k, v in med.items() if k.startswith(f"{variant}:") and "included" not in k)
        ratio[variant] = round(ours / sum(v for k, v in med.items() if k.startswith(f"{name}:")), 2)
    shown = {k: round(v, 2) for k, v in med.items() if not k.startswith("plain (beside")}
    return {"phases_ms": shown, "interleaved_ratio": ratio}


def measure_scoring(args: argparse.Namespace) -> dict:
    """Samples/s: score() over the pool vs decode + collate of the same predict dataloader; interleaved."""
    import torch

    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.rater.scoring import score

    cfg = compose(args)
    rater, _ = _rater_module(cfg, "first_order")
    rater.eval()
    bare, scored = [], []
    rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            dm = build_datamodule(cfg.data, seed=0)
            dm.prepare_data()
            dm.setup("predict")
            start = time.perf_counter()
            n = 0
            for batch in dm.predict_dataloader():
                n += len(batch["key"])
            bare.append(n / (time.perf_counter() - start))
            dm = build_datamodule(cfg.data, seed=0)
            start = time.perf_counter()
            info = score(rater, dm, Path(tmp) / f"ratings{rep}", trainer_kwargs=trainer_kwargs(args))
            if args.device == "cuda":
                torch.cuda.synchronize()
            scored.append(info["rows"] / (time.perf_counter() - start))
            rows = info["rows"]
            print(f"  scoring[{rep}] bare {bare[-1]:8.0f}/s   score {scored[-1]:8.0f}/s   ({rows} samples; "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
    return {"samples": rows, "bare_per_s": round(max(bare)), "score_per_s": round(max(scored)),
            "ratio": round(max(scored) / max(bare), 3), "breakdown_ms": scoring_breakdown(args, rater, cfg)}


def scoring_breakdown(args: argparse.Namespace, rater: Any, cfg: Any, batches: int = 6, store: Any = None) -> dict:
    """ms per batch of scoring's pieces (median, first batch dropped): decode + collate, frozen encode, rater.

    With a feature ``store``: read + collate of cached features, their expansion (``from_features``), rater.
    """
    import torch

    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.features.dataset import FeatureView
    from lightning_alchemist.proxy.base import encoded_batch

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.device == "cuda" else nullcontext
    rater.to(device)
    dm = build_datamodule(cfg.data, seed=0)
    dm.setup("predict")
    if store is not None:
        dm.view = FeatureView(store)
    phases: dict[str, list[float]] = {}
    it = iter(dm.predict_dataloader())
    for _ in range(batches + 1):
        t = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            break
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        if "features" in batch:
            batch["features"] = {k: v.to(device) for k, v in batch["features"].items()}
        sync()
        t1 = time.perf_counter()
        with torch.no_grad(), amp():
            enc = encoded_batch(rater.proxy, batch)
            sync()
            t2 = time.perf_counter()
            rater.rate(rater.proxy.rater_inputs(enc))
            sync()
        t3 = time.perf_counter()
        names = (("cache read + collate", "expand cached features (from_features)") if store is not None
                 else ("decode + collate", "proxy frozen encode"))
        for name, value in ((names[0], t1 - t), (names[1], t2 - t1), ("rater forward", t3 - t2)):
            phases.setdefault(name, []).append(value * 1e3)
    return {k: round(statistics.median(v[1:] or v), 2) for k, v in phases.items()}


def measure_callback(args: argparse.Namespace) -> dict:
    callback_overhead = _sibling("selection_scale").callback_overhead

    return callback_overhead(steps=150 if args.quick else 300, repeats=args.repeats)


def measure_selection(args: argparse.Namespace) -> list[dict]:
    run_cases = _sibling("selection_scale").run_cases

    sizes = args.sizes or ([1_000_000] if args.quick else [1_000_000, 10_000_000, 30_000_000])
    return run_cases(sizes, ["read_ratings", "shift_gauss", "epoch_order"], args.data)


def measure_features(args: argparse.Namespace) -> dict:
    """The encode-once cache's four ratios, interleaved over ``repeats`` (best kept), on one pool."""

    import torch

    from lightning_alchemist.config import as_container
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.features import FeatureStore, encode_features, use_features
    from lightning_alchemist.rater.scoring import score

    torch.manual_seed(0)
    cfg = compose(args, f"rater.objective={args.objective}", "rater.score_with=rater", "rater.warmup.steps=0")
    model_cfg = as_container(cfg.model)
    dm = build_datamodule(cfg.data, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    pool_n = len(dm.pool)
    out: dict[str, Any] = {"pool": pool_n, "val": len(dm.val), "batch_size": args.batch_size, "objective": args.objective}
    with tempfile.TemporaryDirectory() as tmp:
        # 4. the encode stage vs the encoders' bare forward (decode + encode of the same predict loader, nothing written)
        bare, stage = [], []
        for rep in range(args.repeats):
            proxy = _proxy(model_cfg).eval()
            start = time.perf_counter()
            n = 0
            with torch.no_grad():
                for batch in dm.predict_dataloader():
                    proxy.encode(batch)
                    n += len(batch["key"])
            bare.append(n / (time.perf_counter() - start))
            info = encode_features(proxy, dm, Path(tmp) / f"f{rep}", splits=("pool",), trainer_kwargs=trainer_kwargs(args))
            stage.append(info["rows"] / info["seconds"])
            print(f"  encode[{rep}] bare forward {bare[-1]:7.0f}/s   encode stage {stage[-1]:7.0f}/s   ({n} samples; "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
        out["encode"] = {"bare_per_s": round(max(bare)), "stage_per_s": round(max(stage)), "ratio": round(max(stage) / max(bare), 3),
                         "bytes_per_sample": info["bytes_per_sample"]}
        root = Path(tmp) / "f0"
        encode_features(_proxy(model_cfg), dm, root, splits=("val",), trainer_kwargs=trainer_kwargs(args))
        store = FeatureStore(root)
        store.encoders = info["encoders"]
        # 1 + 3. a rater step (cached) vs a plain target step (cached and online)
        runs: dict[str, list[float]] = {"rater (cached)": [], "plain (cached)": [], "plain (online)": []}
        for rep in range(args.repeats):
            for name in runs:
                if name.startswith("rater"):
                    module, data = _rater_module(cfg, "first_order")
                    inner, proxy = data.data, module.proxy
                else:
                    module, data = _plain_module(cfg)
                    inner, proxy = data, module.proxy
                with use_features(inner, store if "cached" in name else None, proxy, stage=name) as on:
                    assert on == ("cached" in name), name
                    res = _time_steps(args, module, data, args.steps, args.warmup)
                runs[name].append(res["median_ms"])
                print(f"  steps[{rep}] {name:15s} {res['median_ms']:8.1f} ms/step (median of {res['steps']}; "
                      f"load {os.getloadavg()[0]:.1f})", flush=True)
        best = {k: min(v) for k, v in runs.items()}
        out["step_ms"] = {k: round(v, 2) for k, v in best.items()}
        out["rater_vs_plain"] = round(best["rater (cached)"] / best["plain (cached)"], 3)
        out["rater_vs_plain_online"] = round(best["rater (cached)"] / best["plain (online)"], 3)
        out["target_cached_vs_online"] = round(best["plain (cached)"] / best["plain (online)"], 3)
        # 2. scoring from cached features vs a bare decode of the same shards
        rater, _ = _rater_module(cfg, "first_order")
        rater.eval()
        decode, scored, read = [], [], []
        for rep in range(args.repeats):
            start = time.perf_counter()
            n = sum(len(b["key"]) for b in dm.predict_dataloader())
            decode.append(n / (time.perf_counter() - start))
            with use_features(dm, store, rater.proxy, stage="read"):  # the cache's own share: read + collate, no model
                start = time.perf_counter()
                n = sum(len(b["key"]) for b in dm.predict_dataloader())
                read.append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            with use_features(dm, store, rater.proxy, stage="score"):
                info = score(rater, dm, Path(tmp) / f"ratings{rep}", trainer_kwargs=trainer_kwargs(args))
            if args.device == "cuda":
                torch.cuda.synchronize()
            scored.append(info["rows"] / (time.perf_counter() - start))
            print(f"  scoring[{rep}] bare decode {decode[-1]:7.0f}/s   cache read {read[-1]:7.0f}/s   score (cached) {scored[-1]:7.0f}/s   "
                  f"({info['rows']} samples; load {os.getloadavg()[0]:.1f})", flush=True)
        out["scoring"] = {"decode_per_s": round(max(decode)), "score_per_s": round(max(scored)),
                          "ratio": round(max(scored) / max(decode), 3), "samples": info["rows"], "read_per_s": round(max(read)),
                          "breakdown_ms": scoring_breakdown(args, rater, cfg, store=store)}
    return out


def verdict(key: str, value: Optional[float]) -> str:
    if value is None:
        return "not measured"
    text, ok = TARGETS[key]
    return f"{text}: {'met' if ok(value) else 'MISSED'}"


def report(args: argparse.Namespace, results: dict, meta: dict) -> str:
    lines = [f"# Overhead ({meta['date']}, {meta['machine']})", "",
             f"Command: `{meta['command']}`  ", f"Load average: {meta['load_start']:.1f} at start, "
             f"{meta['load_end']:.1f} at end (other jobs share the CPUs: compare rows of one run, not runs).", "",
             "| measurement | ours | baseline (same run) | ratio | target |", "|---|---:|---:|---:|---|"]
    m = results.get("meta")
    if m:
        for v in args.variants:
            key = "meta_first_order" if v == "first_order" else None
            lines.append(f"| rater step, {v} ({args.model}, batch {m['batch_size']} pool + {m['batch_size']} val) | "
                         f"{m['step_ms'][v]:.1f} ms | {m['step_ms']['plain']:.1f} ms (plain step, batch {m['batch_size']}) | "
                         f"{m['ratio_vs_plain'][v]:.2f}x | {verdict(key, m['ratio_vs_plain'][v]) if key else '(compared)'} |")
    s = results.get("scoring")
    if s:
        lines.append(f"| scoring throughput ({s['samples']} samples) | {s['score_per_s']}/s | {s['bare_per_s']}/s "
                     f"(decode + collate) | {s['ratio']:.2f}x | {verdict('scoring', s['ratio'])} |")
    c = results.get("callback")
    if c:
        lines.append(f"| training step with DataSelectionCallback (tiny model) | {c['step_ms_callback']} ms | "
                     f"{c['step_ms_plain']} ms (without) | {c['step_overhead_pct']:+.2f} % | "
                     f"{verdict('callback', c['step_overhead_pct'])} |")
    sel = results.get("selection")
    if sel:
        for r in sel:
            key = "selection_30m" if r["case"] == "shift_gauss" and r["n"] == 30_000_000 else None
            lines.append(f"| {r['case']} at {r['n']:,} ratings (peak {r['peak_mb']} MB) | "
                         f"{r['seconds'] if r['seconds'] is not None else 'error'} s | | | "
                         f"{verdict(key, r['seconds']) if key else (r['error'] or '')} |")
    f = results.get("features")
    if f:
        e, st, sc = f["encode"], f["step_ms"], f["scoring"]
        lines += [f"| encode stage ({args.model}, {f['pool']} pool samples, {e['bytes_per_sample']} bytes a sample written) | "
                  f"{e['stage_per_s']}/s | {e['bare_per_s']}/s (decode + encoder forward, nothing written) | {e['ratio']:.2f}x | "
                  f"{verdict('features_encode', e['ratio'])} |",
                  f"| rater step, first_order ({f['objective']}), cached features (batch {f['batch_size']} pool + {f['batch_size']} val) | "
                  f"{st['rater (cached)']:.1f} ms | {st['plain (cached)']:.1f} ms (plain target step, cached features) | "
                  f"{f['rater_vs_plain']:.2f}x | {verdict('features_rater', f['rater_vs_plain'])} |",
                  f"| the same rater step vs a plain target step that encodes online | {st['rater (cached)']:.1f} ms | "
                  f"{st['plain (online)']:.1f} ms | {f['rater_vs_plain_online']:.2f}x | (compared) |",
                  f"| scoring from cached features ({sc['samples']} samples) | {sc['score_per_s']}/s | {sc['decode_per_s']}/s "
                  f"(bare decode + collate) | {sc['ratio']:.2f}x | {verdict('features_scoring', sc['ratio'])} |",
                  f"| reading cached features alone (read + collate, no model) | {sc['read_per_s']}/s | {sc['decode_per_s']}/s "
                  f"(bare decode + collate) | {sc['read_per_s'] / max(sc['decode_per_s'], 1):.2f}x | (compared) |",
                  f"| target step with the cache | {st['plain (cached)']:.1f} ms | {st['plain (online)']:.1f} ms (without) | "
                  f"{f['target_cached_vs_online']:.2f}x | (compared: lower is faster) |"]
        if sc.get("breakdown_ms"):
            lines += ["", f"Scoring from cached features, per batch of {args.batch_size} (median ms, outside Lightning): "
                      + ", ".join(f"{k} {v}" for k, v in sc["breakdown_ms"].items()) + "."]
    if s and s.get("breakdown_ms"):
        lines += ["", f"Scoring, per batch of {args.batch_size} (median ms, outside Lightning): "
                  + ", ".join(f"{k} {v}" for k, v in s["breakdown_ms"].items()) + "."]
    if m and m.get("breakdown_ms"):
        b = m["breakdown_ms"]
        lines += ["", "Interleaved ratio (outside Lightning; each rater step followed by a plain step on the same pool "
                  "batch, so both see the same load): " + ", ".join(f"{v} {r:.2f}x" for v, r in b["interleaved_ratio"].items())
                  + (f" ({verdict('meta_first_order', b['interleaved_ratio']['first_order'])})" if "first_order" in b["interleaved_ratio"] else "")
                  + ".", "", f"Where the time goes (median ms per step, outside Lightning, {args.model}, batch {m['batch_size']}):", "",
                  "| phase | ms |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in b["phases_ms"].items()]
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small pool, few steps, 1M selection only")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--model", choices=MODELS, default="star_tiny", help="the proxy (a conf/model entry)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: bf16 autocast (needs a GPU)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--objective", default="official", help="the rater objective of the features part's rater step and scoring")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 30; --quick 8)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats, best kept (default 2; --quick 1)")
    p.add_argument("--sizes", type=int, nargs="*", default=None, help="selection sizes (default 1M 10M 30M; --quick 1M)")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "la-selection-bench",
                   help="where the synthetic ratings for the selection part are cached")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared machine)")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. data.num_workers=2")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.steps = args.steps or (8 if args.quick else 30)
    args.repeats = args.repeats or (1 if args.quick else 2)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device here")
    return args


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.device}"
                       + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else ""),
            "command": "python benchmarks/overhead.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "load_start": os.getloadavg()[0]}
    results: dict[str, Any] = {}
    steps = {"meta": measure_meta, "scoring": measure_scoring, "callback": measure_callback, "selection": measure_selection,
             "features": measure_features}
    for part in args.parts:
        print(f"[{part}]", flush=True)
        start = time.perf_counter()
        results[part] = steps[part](args)
        print(f"[{part}] {time.perf_counter() - start:.0f} s", flush=True)
    meta["load_end"] = os.getloadavg()[0]
    text = report(args, results, meta)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.md").write_text(text + "\n")
    (args.out / "overhead.json").write_text(json.dumps({"run": meta, "args": {k: str(v) for k, v in vars(args).items()},
                                                        "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
