"""Evaluate a trained target text-to-image model: held-out loss, alignment, FID, CLIP score, a sample grid.

:func:`evaluate_model` is what ``recipes/evaluate.py`` and the pipeline call after training.
Every run is compared on the same prompts: for ``shapes`` they are captions of scenes drawn from
``eval.seed`` alone (independent of the data, the selection and ``keep``); for other data, the
first ``eval.num_prompts`` captions of the held-out split. Images are generated with fixed seeds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_alchemist.config import Choice, as_container, to_dataclass
from lightning_alchemist.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "METRIC_KEYS", "eval_config", "autoencoder_roundtrip", "evaluate_model", "load_target", "prompt_set", "sample_grid"]

class FidFeature(Choice):
    judge = "judge"
    inception = "inception"


class Attribute(Choice):
    """What the shapes judge can check in a generated image (:data:`metrics.judge.ATTRIBUTES`)."""

    position = "position"
    shape = "shape"
    color = "color"
    size = "size"
    background = "background"


FID_FEATURES = FidFeature.values()
# Keys every result has (None where a metric does not apply or was skipped; ``skipped`` says why).
METRIC_KEYS = ("val_loss", "val_samples", "num_prompts", "alignment", "alignment_breakdown", "alignment_reference",
               "alignment_ceiling", "fid_judge", "fid_judge_reference", "fid_judge_ceiling", "fid_inception", "clip_score", "skipped", "judge", "seconds",
               "generated_png", "eval_config")


@dataclass
class EvalConfig:
    """Schema of the ``eval`` group (``conf/eval/default.yaml``)."""

    num_prompts: int = 256          # generated images (one per prompt): alignment, CLIP score, the FID's generated side
    seed: int = 0                   # draws the prompt scenes and seeds generation: same prompts for every run and keep
    batch_size: int = 64            # generation / feature batch
    val_batches: Optional[int] = 16  # held-out loss on the first N batches (a fixed set; null = the whole split)
    fid_real: int = 1000            # real clean held-out images for the FID's reference side (capped at the split)
    fid_features: list[FidFeature] = field(default_factory=lambda: [FidFeature.judge, FidFeature.inception])  # judge: shapes only
    inception_weights: Optional[str] = None  # a local TorchScript Inception (e.g. inception-2015-12-05.pt)
    clip_weights: Optional[str] = None       # a local CLIP folder (CLIPModel + CLIPProcessor files)
    align_on: list[Attribute] = field(default_factory=lambda: [Attribute.position, Attribute.shape, Attribute.color])  # what must match the prompt
    judge: dict[str, Any] = field(default_factory=dict)  # overrides of metrics.judge.JudgeConfig (width, steps, ...)
    grid_images: int = 32           # images in generated.png
    grid_columns: int = 8


def eval_config(node: Any) -> EvalConfig:
    """Validate the ``eval`` group (one-line :class:`ConfigError` on a bad key or value)."""
    from lightning_alchemist.metrics.judge import ATTRIBUTES

    cfg = to_dataclass(node, EvalConfig, "eval")
    for name, low in (("num_prompts", 2), ("fid_real", 2), ("batch_size", 1), ("grid_columns", 1), ("grid_images", 0)):
        if getattr(cfg, name) < low:
            raise ConfigError(f"config 'eval.{name}': got {getattr(cfg, name)}, expected >= {low}")
    if cfg.val_batches is not None and cfg.val_batches <= 0:
        raise ConfigError(f"config 'eval.val_batches': got {cfg.val_batches}; use a positive number or null (whole split)")
    bad = [f for f in cfg.fid_features if f not in FID_FEATURES]
    if bad:
        raise ConfigError(f"config 'eval.fid_features': unknown {bad}; choose from {list(FID_FEATURES)}")
    bad = [a for a in cfg.align_on if a not in ATTRIBUTES]
    if bad or not cfg.align_on:
        raise ConfigError(f"config 'eval.align_on': unknown or empty {bad or cfg.align_on}; choose from {list(ATTRIBUTES)}")
    return cfg


# ----------------------------------------------------------------------------- prompts and images


def prompt_set(data_cfg: Any, eval_cfg: EvalConfig, val_dataset: Any = None) -> tuple[list[str], Optional[list[dict]]]:
    """The fixed prompts (and, for ``shapes``, their scenes) every evaluation of this config uses."""
    if data_cfg.name == "shapes":
        from lightning_alchemist.data.shapes import caption_of, random_scene

        # One generator per prompt: prompt i is the same whatever num_prompts is.
        scenes = [random_scene(np.random.default_rng([eval_cfg.seed, 8_713, i])) for i in range(eval_cfg.num_prompts)]
        return [caption_of(s) for s in scenes], scenes
    if val_dataset is None or len(val_dataset) == 0:
        raise ConfigError(f"data '{data_cfg.name}': no held-out samples to take evaluation prompts from")
    prompts = []
    for i in range(min(eval_cfg.num_prompts, len(val_dataset))):
        sample = val_dataset[i]
        if sample is not None and sample["caption"]:
            prompts.append(sample["caption"])
    return prompts, None


@torch.no_grad()
def generate_images(module: Any, prompts: Sequence[str], seed: int, batch_size: int) -> Tensor:
    """``module.generate`` over ``prompts`` in batches, batch ``b`` seeded ``seed * 1009 + b`` (reproducible)."""
    out = []
    for b, i in enumerate(range(0, len(prompts), batch_size)):
        out.append(module.generate(list(prompts[i : i + batch_size]), seed=seed * 1009 + b).float().cpu())
    return torch.cat(out).clamp(-1, 1)


def _real_images(dataset: Any, n: int) -> Tensor:
    """The first ``n`` decodable held-out images (a fixed set: every run is compared against the same)."""
    images = []
    for i in range(len(dataset)):
        if len(images) >= n:
            break
        sample = dataset[i]
        if sample is not None:
            images.append(sample["image"])
    if len(images) < 2:
        raise ConfigError("the held-out split has fewer than 2 usable images: FID needs more (raise data.shapes.num_val or give data.val_urls)")
    return torch.stack(images)


@torch.no_grad()
def heldout_loss(module: Any, datamodule: Any, max_batches: Optional[int] = None) -> tuple[float, int]:
    """Mean per-sample loss of the target on the clean held-out split, with the same seeded draws
    (noise, timesteps) per batch as ``T2IModule.validation_step``, so it equals Lightning's ``val/loss``."""
    was = module.training
    module.eval()
    total, count = 0.0, 0
    try:
        for batch_idx, batch in enumerate(datamodule.val_dataloader()):
            if max_batches is not None and batch_idx >= max_batches:
                break
            if not batch["key"]:
                continue
            batch = {**batch, "image": batch["image"].to(module.device)}
            gen = torch.Generator().manual_seed(getattr(module, "val_seed", 1234) * 100_003 + batch_idx)
            losses = module.proxy.per_sample_loss(module.encode(batch), generator=gen)
            total += float(losses.double().sum())
            count += int(losses.shape[0])
    finally:
        module.train(was)
    return (total / count if count else float("nan")), count


def sample_grid(images: Tensor, prompts: Sequence[str], columns: int = 8, cell: int = 128,
                marks: Optional[Sequence[bool]] = None, references: Optional[Tensor] = None) -> "Image.Image":
    """A PNG-ready grid: each image (upscaled to ``cell`` px, nearest) above its wrapped prompt;
    ``marks`` draws a green (True) or red (False) frame, e.g. whether the judge found it aligned.
    ``references`` (one per image, e.g. the clean render of the prompt's scene) go left of each image,
    labelled "asked" and "drawn", so a reader compares shapes, colours and places at a glance."""
    import textwrap

    from PIL import Image, ImageDraw

    from lightning_alchemist.data.transforms import to_pil

    n = images.shape[0]
    if references is not None and references.shape[0] != n:
        raise ValueError(f"sample_grid: {references.shape[0]} references for {n} images; give one per image")
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    pair = references is not None
    width = 2 * cell + 2 if pair else cell  # a reference and its image side by side, 2 px apart
    text_h, pad = (68 if pair else 56), 6
    chars = max(width // 6, 8)
    sheet = Image.new("RGB", (columns * (width + pad) + pad, rows * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        x = pad + (i % columns) * (width + pad)
        y = pad + (i // columns) * (cell + text_h + pad)
        gx = x + cell + 2 if pair else x
        if pair:
            sheet.paste(to_pil(references[i]).resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        sheet.paste(to_pil(images[i]).resize((cell, cell), Image.Resampling.NEAREST), (gx, y))
        if marks is not None:
            draw.rectangle((gx - 2, y - 2, gx + cell + 1, y + cell + 1), outline=(30, 160, 60) if marks[i] else (200, 40, 40), width=2)
        lines = textwrap.wrap(prompts[i], chars)[:5]
        if pair:
            lines = ["asked" + " " * max(cell // 6 - 5, 1) + "drawn", *lines]
        draw.multiline_text((x, y + cell + 3), "\n".join(lines), fill="black", spacing=1)
    return sheet


# ----------------------------------------------------------------------------- the evaluation


def _judge_for(data_cfg: Any, eval_cfg: EvalConfig) -> tuple[Any, dict[str, Any]]:
    from lightning_alchemist.metrics.judge import JudgeConfig, ensure_judge

    node = {**eval_cfg.judge, "image_size": data_cfg.image_size, "resolution": data_cfg.shapes.resolution}
    return ensure_judge(to_dataclass(node, JudgeConfig, "eval.judge"))


def evaluate_model(module: Any, datamodule: Any, eval_cfg: Any = None, out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Evaluate a trained target on fixed, seeded prompts; write ``generated.png`` (and nothing else) to ``out_dir``.

    Args:
        module: a :class:`~lightning_alchemist.target.module.T2IModule` (any module with ``generate(prompts, seed)``,
            ``proxy.per_sample_loss``, ``encode`` works).
        datamodule: the :class:`~lightning_alchemist.data.datamodule.T2IDataModule` it was trained with (its clean
            held-out ``val`` split gives the loss and the FID's real images).
        eval_cfg: the ``eval`` config node (:class:`EvalConfig` or dict/DictConfig; None = defaults).
        out_dir: where ``generated.png`` goes (None: no file).

    Returns:
        A JSON-serialisable dict with every key of :data:`METRIC_KEYS`: ``val_loss``; for ``shapes``,
        ``alignment`` (share of generated images whose judged scene matches the prompt on ``eval.align_on``),
        ``alignment_breakdown`` (per attribute), ``fid_judge`` (generated vs real held-out images in the judge's
        feature space) and their ``*_reference`` values (clean renders of the same prompts: what a perfect model
        scores at this sample size) and ``*_ceiling`` values (those renders after a round trip through the model's
        own frozen tokenizer/VAE: the best this model can draw); ``fid_inception`` and ``clip_score`` where local weights are given;
        ``skipped`` (metric -> one-line reason), ``judge`` (its held-out accuracy), ``seconds`` per stage.
    """
    cfg = eval_config(eval_cfg)
    data_cfg = datamodule.cfg
    t_all = time.time()
    seconds: dict[str, float] = {}
    result: dict[str, Any] = {k: None for k in METRIC_KEYS}
    skipped: dict[str, str] = {}

    t0 = time.time()
    result["val_loss"], result["val_samples"] = heldout_loss(module, datamodule, cfg.val_batches)
    seconds["val_loss"] = time.time() - t0

    t0 = time.time()
    prompts, scenes = prompt_set(data_cfg, cfg, datamodule.val)
    images = generate_images(module, prompts, cfg.seed, cfg.batch_size)
    result["num_prompts"] = len(prompts)
    seconds["generate"] = time.time() - t0

    judge, marks, ceiling = None, None, None
    if scenes is not None:
        from lightning_alchemist.metrics.judge import aligned_mask, judge_matches

        t0 = time.time()
        judge, stats = _judge_for(data_cfg, cfg)
        seconds["judge_load_or_train"] = time.time() - t0
        result["judge"] = {"heldout_exact": stats["heldout"]["exact"], "trained_seconds": stats["seconds"]}
        t0 = time.time()
        reference = _render_reference(scenes, judge)
        matches = judge_matches(judge, images, scenes, cfg.batch_size)
        marks_t = aligned_mask(matches, cfg.align_on)
        marks = marks_t.tolist()
        result["alignment"] = marks_t.float().mean().item()
        result["alignment_breakdown"] = {k: v.float().mean().item() for k, v in matches.items()}
        result["alignment_reference"] = aligned_mask(judge_matches(judge, reference, scenes, cfg.batch_size), cfg.align_on).float().mean().item()
        # The model's own frozen image autoencoder (STAR's VQ tokenizer, FLUX's VAE) bounds what it can draw:
        # the same clean renders after a round trip through it are the best this model could produce.
        ceiling = autoencoder_roundtrip(module, reference, cfg.batch_size)
        if ceiling is not None:
            result["alignment_ceiling"] = aligned_mask(judge_matches(judge, ceiling, scenes, cfg.batch_size), cfg.align_on).float().mean().item()
        else:
            skipped["alignment_ceiling"] = "alignment_ceiling skipped: the model exposes no image autoencoder (tokenizer/vae) to round-trip through"
        seconds["alignment"] = time.time() - t0
    else:
        skipped["alignment"] = f"alignment skipped: the judge reads 'shapes' scenes only (data={data_cfg.name})"

    inception = None
    if "inception" in cfg.fid_features:
        from lightning_alchemist.metrics.fid import load_inception

        inception, why = load_inception(cfg.inception_weights)
        if inception is None:
            skipped["fid_inception"] = why
    use_judge = "judge" in cfg.fid_features and judge is not None
    if "judge" in cfg.fid_features and judge is None:
        skipped["fid_judge"] = f"fid_judge skipped: the judge's features exist for 'shapes' only (data={data_cfg.name})"
    if use_judge or inception is not None:
        from lightning_alchemist.metrics.fid import JudgeFeatures, fid

        t0 = time.time()
        real = _real_images(datamodule.val, cfg.fid_real)
        seconds["fid_real_images"] = time.time() - t0
        if use_judge:
            t0 = time.time()
            feats = JudgeFeatures(judge)
            result["fid_judge"] = fid(feats, real, images, cfg.batch_size)
            result["fid_judge_reference"] = fid(feats, real, reference, cfg.batch_size)
            if ceiling is not None:
                result["fid_judge_ceiling"] = fid(feats, real, ceiling, cfg.batch_size)
            seconds["fid_judge"] = time.time() - t0
        if inception is not None:
            t0 = time.time()
            result["fid_inception"] = fid(inception, real, images, cfg.batch_size)
            seconds["fid_inception"] = time.time() - t0
    from lightning_alchemist.metrics.clip_score import clip_score, load_clip

    clip, why = load_clip(cfg.clip_weights)
    if clip is None:
        skipped["clip_score"] = why
    else:
        t0 = time.time()
        result["clip_score"] = clip_score(clip, images, prompts, cfg.batch_size)
        seconds["clip_score"] = time.time() - t0

    if out_dir is not None and cfg.grid_images:
        t0 = time.time()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        k = min(cfg.grid_images, len(prompts))
        refs = reference[:k] if scenes is not None else None  # the prompt's clean render beside what the model drew
        sample_grid(images[:k], prompts[:k], cfg.grid_columns, marks=marks[:k] if marks else None, references=refs).save(out / "generated.png")
        result["generated_png"] = str(out / "generated.png")
        seconds["grid"] = time.time() - t0
    for why in skipped.values():
        log.info(why)
    seconds["total"] = time.time() - t_all
    result["skipped"] = skipped
    result["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    result["eval_config"] = as_container(cfg)
    json.dumps(result)  # fail here, not in the caller's writer, if something is not JSON-serialisable
    return result


@torch.no_grad()
def autoencoder_roundtrip(module: Any, images: Tensor, batch_size: int = 64) -> Optional[Tensor]:
    """``images`` ([-1,1]) encoded and decoded by the model's frozen image autoencoder, or None if it has none.

    Uses ``proxy.reconstruct(images)`` when a proxy offers it, else STAR's multi-scale VQ tokenizer
    (``proxy.tokenizer``) or FLUX's VAE (``proxy.vae``, latent mode).
    """
    proxy = getattr(module, "proxy", module)
    device = getattr(module, "device", torch.device("cpu"))

    def one(x: Tensor) -> Tensor:
        if hasattr(proxy, "reconstruct"):
            return proxy.reconstruct(x)
        tok = getattr(proxy, "tokenizer", None)
        if tok is not None and hasattr(tok, "img_to_idx"):
            return tok.fhat_to_img(tok.quantize.idx_to_fhat(tok.img_to_idx(x)))
        vae = getattr(proxy, "vae", None)
        return vae.decode(vae.encode(x).latent_dist.mode()).sample

    tok, vae = getattr(proxy, "tokenizer", None), getattr(proxy, "vae", None)
    if not (hasattr(proxy, "reconstruct") or (tok is not None and hasattr(tok, "img_to_idx")) or hasattr(vae, "encode")):
        return None
    out = [one(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).clamp(-1, 1)


def _render_reference(scenes: Sequence[dict], judge: Any) -> Tensor:
    """Clean renders of the prompts' own scenes, read like the data (the ideal generator's output)."""
    from lightning_alchemist.metrics.judge import render_batch

    return render_batch(scenes, judge.cfg)


def load_target(ckpt: str | Path, model: Any = None, map_location: str = "cpu") -> Any:
    """A :class:`~lightning_alchemist.target.module.T2IModule` from a Lightning checkpoint of ``recipes/train.py``.

    The model/finetune configs saved in the checkpoint rebuild the frozen parts; ``model`` (a config
    node) replaces the saved model config. Errors are one line naming the file.
    """
    from lightning_alchemist.errors import AlchemistError, DataError
    from lightning_alchemist.target.module import T2IModule

    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found: train a target first (python recipes/train.py out=DIR writes "
                        f"<run dir>/train/checkpoints/last.ckpt) and pass ckpt=<that file>")
    kwargs = {"model": model} if model is not None else {}
    try:
        module = T2IModule.load_from_checkpoint(str(path), map_location=map_location, weights_only=False, **kwargs)
    except AlchemistError:
        raise
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        raise DataError(f"checkpoint {path}: cannot load a T2IModule from it ({type(err).__name__}: {detail}); "
                        "pass a last.ckpt written by recipes/train.py") from None
    return module.eval()
