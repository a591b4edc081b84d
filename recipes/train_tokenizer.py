"""Train the STAR proxy's multi-scale VQ tokenizer on a sample of the configured pool and cache it.

    python recipes/train_tokenizer.py                      # the star_tiny tokenizer, on shapes
    python recipes/train_tokenizer.py data=glyphs          # ... on the glyphs pool (data=wds data.urls=...: yours)
    python recipes/train_tokenizer.py model.tokenizer.train_steps=2000 +force=true

The checkpoint goes to ``<cache>/tokenizers/<fingerprint>.pt`` (``LIGHTNING_ALCHEMIST_CACHE``
overrides the cache root), where ``StarProxy`` finds it automatically. A tokenizer that is already
cached is not retrained unless ``+force=true``.
"""

from __future__ import annotations

import os
import sys

# Python puts this script's folder first on sys.path; a sibling recipe named like a stdlib module
# (recipes/select.py vs `select`) would then shadow it. Recipes import the package, not siblings.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from typing import Any

from lightning_alchemist.cli import hydra_main


def train_tokenizer_recipe(cfg: Any) -> str:
    import torch

    from lightning_alchemist.errors import ConfigError
    from lightning_alchemist.proxy.factory import fit_to_data, model_config
    from lightning_alchemist.proxy.star.train_vq import load_or_train_tokenizer, tokenizer_cache_path

    mcfg = model_config(fit_to_data(cfg.model, cfg.get("data")))  # fits the configured pool (data=glyphs, data=wds ...)
    if mcfg.family != "star":
        raise ConfigError(f"config 'model': {mcfg.name} is a {mcfg.family} model; the VQ tokenizer recipe is for STAR (model=star_tiny)")
    if cfg.trainer and cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
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


@hydra_main("config")
def main(cfg: Any) -> None:
    train_tokenizer_recipe(cfg)


if __name__ == "__main__":
    main()
