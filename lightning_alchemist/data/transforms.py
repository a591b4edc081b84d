"""Image transforms with PIL and torch only (torchvision is unusable on the CPU build machines)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor


class CenterCropResize:
    """Centre-crop to a square, resize to ``size`` (LANCZOS, as STAR/Alchemist do), map to [-1, 1].

    Args:
        size: output side in pixels.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"image size must be positive, got {size}")
        self.size = size

    def __call__(self, image: Image.Image) -> Tensor:
        return to_tensor(self.image(image))

    def image(self, image: Image.Image) -> Image.Image:
        """The cropped and resized RGB image, before the tensor conversion (e.g. for model-free heuristics)."""
        image = image.convert("RGB")
        w, h = image.size
        side = min(w, h)
        if w != h:
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if side != self.size:
            image = image.resize((self.size, self.size), Image.Resampling.LANCZOS)
        return image

    def __repr__(self) -> str:
        return f"CenterCropResize(size={self.size})"


def to_tensor(image: Image.Image) -> Tensor:
    """An RGB PIL image as a float tensor ``[3, H, W]`` in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_pil(image: Tensor) -> Image.Image:
    """A float tensor ``[3, H, W]`` in [-1, 1] as an RGB PIL image."""
    array = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")
