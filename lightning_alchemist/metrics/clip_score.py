"""CLIP score through torchmetrics, only from CLIP weights on local disk (never a hub download).

``torchmetrics.multimodal.clip_score.CLIPScore`` accepts a callable returning ``(model, processor)``;
we load both from a local folder (``CLIPModel.save_pretrained`` layout plus its processor files).
transformers 5 returns ``BaseModelOutputWithPooling`` from ``get_image_features`` /
``get_text_features`` where torchmetrics 1.9 expects tensors, so the model is wrapped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_alchemist.errors import ConfigError

__all__ = ["clip_score", "load_clip"]


class _TensorFeatures(nn.Module):
    """A CLIPModel whose ``get_*_features`` return tensors (torchmetrics 1.9 vs transformers 5)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out: Any) -> Tensor:
        if isinstance(out, Tensor):
            return out
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out[0]

    def get_image_features(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def load_clip(path: Optional[str | Path]) -> tuple[Optional[tuple[nn.Module, Any]], str]:
    """``((model, processor), "ok")`` from a local CLIP folder, or ``(None, reason)`` when not available.

    A missing setting or folder skips the metric; a folder that is there but does not load is a
    :class:`ConfigError`.
    """
    if not path:
        return None, "clip_score skipped: eval.clip_weights is not set (give a local CLIP folder; nothing is downloaded)"
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None, f"clip_score skipped: no CLIP folder at {folder} (eval.clip_weights; nothing is downloaded)"
    try:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        raise ConfigError(f"config 'eval.clip_weights': cannot load a CLIP model and processor from {folder} ({detail})") from None
    return (_TensorFeatures(model), processor), "ok"


@torch.no_grad()
def clip_score(clip: tuple[nn.Module, Any], images: Tensor, prompts: Sequence[str], batch_size: int = 64) -> float:
    """Mean torchmetrics CLIP score (``max(100·cos, 0)``) of ``images`` ([-1,1]) against their ``prompts``."""
    import warnings

    from torchmetrics.multimodal.clip_score import CLIPScore

    if images.shape[0] != len(prompts) or not len(prompts):
        raise ValueError(f"clip_score needs one prompt per image (got {images.shape[0]} images, {len(prompts)} prompts)")
    model, processor = clip
    with warnings.catch_warnings():
        # Without torchvision, transformers uses its PIL image processor and says so each time.
        warnings.filterwarnings("ignore", message=".*torchvision.*")
        metric = CLIPScore(model_name_or_path=lambda: (model, processor), sync_on_compute=False)
        for i in range(0, len(prompts), batch_size):
            x = ((images[i : i + batch_size].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            metric.update(list(x), list(prompts[i : i + batch_size]))
        return float(metric.compute())
