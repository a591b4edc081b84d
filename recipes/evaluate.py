"""Evaluate a trained target text-to-image model from its checkpoint.

    python recipes/evaluate.py ckpt=DIR/train/checkpoints/last.ckpt out=DIR
    python recipes/evaluate.py ckpt=... out=... eval.num_prompts=64 eval.inception_weights=/models/inception-2015-12-05.pt

Writes ``OUT/metrics.json`` (held-out loss; for ``shapes`` the judge's alignment and FID in its feature
space; FID with a local Inception and CLIP score with local CLIP weights when given) and
``OUT/generated.png`` (the first generated images with their prompts; a green frame = judged aligned).
Config: ``conf/evaluate.yaml``; the ``eval`` group is ``lightning_alchemist.metrics.evaluate.EvalConfig``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lightning_alchemist.cli import hydra_main

CONF = Path(__file__).resolve().parents[1] / "conf"

log = logging.getLogger("lightning_alchemist.evaluate")


def evaluate(cfg: Any) -> dict[str, Any]:
    """Load the checkpoint ``cfg.ckpt``, evaluate it on ``cfg.data``'s held-out split, write ``cfg.out``/metrics.json."""
    from lightning_alchemist.config import as_container, data_config
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.errors import ConfigError
    from lightning_alchemist.runtime import set_threads
    from lightning_alchemist.metrics.evaluate import eval_config, evaluate_model, load_target

    if not cfg.get("ckpt"):
        raise ConfigError("config 'ckpt' is required: pass ckpt=DIR/train/checkpoints/last.ckpt (written by recipes/train.py)")
    ecfg = eval_config(cfg.get("eval"))  # validate everything before loading anything
    data = data_config(cfg.data)
    set_threads(cfg.get("num_threads"))
    model = as_container(cfg.model) if cfg.get("model") is not None else None
    module = load_target(cfg.ckpt, model=model)
    size = getattr(module.proxy, "image_size", None)
    if size and int(size) != data.image_size:
        raise ConfigError(f"config 'data.image_size': {data.image_size} px, but the checkpoint's model works on {size} px; "
                          f"pass data.image_size={size}")
    dm = build_datamodule(data, seed=int(cfg.seed))
    dm.prepare_data()
    dm.setup("validate")
    out = Path(cfg.out)
    result = evaluate_model(module, dm, ecfg, out)
    result["checkpoint"] = str(Path(cfg.ckpt).expanduser())
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "metrics.json")  # atomic: a reader never sees half a file
    print(summary_line(result))
    for why in result["skipped"].values():
        print(why)
    print(f"wrote {out / 'metrics.json'} and {result['generated_png'] or 'no grid'}")
    return result


def summary_line(result: dict[str, Any]) -> str:
    """The headline numbers of an evaluation on one line."""
    def fmt(key: str) -> str:
        value = result.get(key)
        return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} -"

    keys = ("val_loss", "alignment", "alignment_reference", "fid_judge", "fid_judge_reference", "fid_inception", "clip_score")
    return ", ".join(fmt(k) for k in keys) + f" ({result['num_prompts']} prompts, {result['seconds']['total']:.0f} s)"


@hydra_main("evaluate", CONF)
def main(cfg: Any) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
