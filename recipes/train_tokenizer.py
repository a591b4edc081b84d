"""Train the STAR proxy's multi-scale VQ tokenizer on a sample of the configured pool and cache it.

    python recipes/train_tokenizer.py                      # the star_tiny tokenizer, on shapes
    python recipes/train_tokenizer.py data=glyphs          # ... on the glyphs pool (data=wds data.urls=...: yours)
    python recipes/train_tokenizer.py model.tokenizer.train_steps=2000 +force=true

The checkpoint goes to ``<cache>/tokenizers/<fingerprint>.pt`` (``LIGHTNING_ALCHEMIST_CACHE``
overrides the cache root), where ``StarProxy`` finds it automatically. A tokenizer that is already
cached is not retrained unless ``+force=true``.
"""

from __future__ import annotations

from typing import Any

from pathlib import Path

from lightning_alchemist.cli import hydra_main

CONF = Path(__file__).resolve().parents[1] / "conf"


def train_tokenizer_recipe(cfg: Any) -> str:
    import torch

    from lightning_alchemist.errors import ConfigError
    from lightning_alchemist.runtime import set_threads
    from lightning_alchemist.proxy.factory import fit_to_data, model_config
    from lightning_alchemist.proxy.star.train_vq import load_or_train_tokenizer, tokenizer_cache_path

    mcfg = model_config(fit_to_data(cfg.model, cfg.get("data")))  # fits the configured pool (data=glyphs, data=wds ...)
    if mcfg.family != "star":
        raise ConfigError(f"config 'model': {mcfg.name} is a {mcfg.family} model; the VQ tokenizer recipe is for STAR (model=star_tiny)")
    set_threads(cfg.trainer.num_threads)
    vq = mcfg.tokenizer
    vq.checkpoint, vq.auto_train = None, True
    path = tokenizer_cache_path(vq)
    if cfg.get("force", False) and path.exists():
        path.unlink()
    cached = path.exists()
    load_or_train_tokenizer(vq)
    stats = torch.load(path, map_location="cpu", weights_only=True).get("stats", {})
    print(f"tokenizer {'(cached) ' if cached else ''}at {path}: {stats}")
    return str(path)


@hydra_main("config", CONF)
def main(cfg: Any) -> None:
    train_tokenizer_recipe(cfg)


if __name__ == "__main__":
    main()
