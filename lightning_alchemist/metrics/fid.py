"""FID through torchmetrics with a pluggable feature network (never torch-fidelity, never a download).

``torchmetrics.image.fid.FrechetInceptionDistance(feature=<int>)`` needs torch-fidelity, which
needs torchvision, which is broken on the CPU machines; with ``feature=<nn.Module>`` it needs
neither. Feature networks offered here:

- :class:`JudgeFeatures`: the ``shapes`` judge's penultimate features (per-place features and the
  pooled colours the background head reads) — meaningful for the embedded dataset, **not comparable to standard FID**;
- :class:`TorchScriptFeatures`: a TorchScript Inception on local disk (e.g. the
  ``inception-2015-12-05.pt`` used by StyleGAN/clean-fid, which returns its 2048-d pool features
  with ``return_features=True``) or any TorchScript image→``[N,D]`` network. Without the file,
  :func:`load_inception` returns a one-line reason instead of failing.

Images everywhere in this module are float ``[N,3,H,W]`` in [-1,1] (what the data and
``T2IModule.generate`` produce).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from lightning_alchemist.errors import ConfigError

__all__ = ["JudgeFeatures", "TorchScriptFeatures", "fid", "frechet_distance", "load_inception"]


class JudgeFeatures(nn.Module):
    """The ``shapes`` judge as an FID feature network (input: [0,1] floats, as torchmetrics passes them
    with ``normalize=True``)."""

    def __init__(self, judge: nn.Module) -> None:
        super().__init__()
        self.judge = judge
        self.num_features = int(judge.num_features)

    @torch.no_grad()
    def forward(self, images01: Tensor) -> Tensor:
        return self.judge.features(images01.float() * 2 - 1)


class TorchScriptFeatures(nn.Module):
    """A TorchScript feature network (Inception) reading [0,255] floats at its own input size.

    NVIDIA's ``inception-2015-12-05.pt`` resizes to 299 px itself and returns the 2048-d pool
    features when called with ``return_features=True``; a network without that keyword is called
    plainly and must return ``[N, D]``.
    """

    def __init__(self, net: torch.jit.ScriptModule, num_features: int, keyword: bool) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features
        self._keyword = keyword

    @torch.no_grad()
    def forward(self, images01: Tensor) -> Tensor:
        x = images01.float().clamp(0, 1) * 255
        out = self.net(x, return_features=True) if self._keyword else self.net(x)
        return out.flatten(1).float()


def load_inception(path: Optional[str | Path], probe_size: int = 32) -> tuple[Optional[TorchScriptFeatures], str]:
    """The Inception (TorchScript) feature network at ``path``, or ``(None, reason)`` when not available.

    A missing setting or file is not an error (the metric is skipped with the one-line reason);
    a file that is there but is not a usable TorchScript network is a :class:`ConfigError`.
    """
    if not path:
        return None, ("fid_inception skipped: eval.inception_weights is not set (give a local TorchScript Inception, "
                      "e.g. inception-2015-12-05.pt; nothing is downloaded)")
    file = Path(path).expanduser()
    if not file.is_file():
        return None, f"fid_inception skipped: no Inception weights at {file} (eval.inception_weights; nothing is downloaded)"
    try:
        net = torch.jit.load(str(file), map_location="cpu").eval()
    except Exception as err:  # a state dict, a corrupt or truncated file
        raise ConfigError(f"config 'eval.inception_weights': {file} is not a TorchScript network ({type(err).__name__}); "
                          "give a TorchScript Inception such as inception-2015-12-05.pt") from None
    probe = torch.zeros(2, 3, probe_size, probe_size)
    for keyword in (True, False):  # find out once how the network wants to be called, and its feature size
        try:
            with torch.no_grad():
                out = net(probe, return_features=True) if keyword else net(probe)
        except Exception:
            continue
        if isinstance(out, Tensor) and out.ndim >= 2 and out.shape[0] == 2:
            return TorchScriptFeatures(net, int(out.flatten(1).shape[1]), keyword), "ok"
    raise ConfigError(f"config 'eval.inception_weights': {file} does not map a [N,3,H,W] image batch to [N,D] features")


def _batches(images: Tensor, batch_size: int):
    for i in range(0, images.shape[0], batch_size):
        yield ((images[i : i + batch_size].float().clamp(-1, 1) + 1) / 2)


def fid(features: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 128) -> float:
    """Fréchet distance between the ``features`` statistics of ``real`` and ``fake`` ([-1,1] images).

    ``features`` takes [0,1] floats and returns ``[N,D]`` and has an int ``num_features``
    (:class:`JudgeFeatures`, :class:`TorchScriptFeatures`). Needs at least 2 images per side; the
    value is biased upward for small sets, so compare runs only at equal sample counts.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 real and 2 generated images (got {real.shape[0]} and {fake.shape[0]})")
    metric = FrechetInceptionDistance(feature=features, normalize=True, sync_on_compute=False)  # single-process evaluation, also inside a DDP run
    for x in _batches(real, batch_size):
        metric.update(x, real=True)
    for x in _batches(fake, batch_size):
        metric.update(x, real=False)
    # Clamp the tiny negative values that the eigenvalue route gives for (near-)identical sets.
    return max(float(metric.compute()), 0.0)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Reference Fréchet distance between two feature sets ``[N,D]`` in float64 numpy, for checks.

    ``tr sqrt(S1 S2)`` is computed as ``tr sqrt(R S2 R)`` with ``R = sqrt(S1)`` (symmetric
    eigendecompositions): a different route from torchmetrics' eigenvalues of ``S1 S2``.
    """
    import numpy as np

    def psd_sqrt(m: "np.ndarray") -> "np.ndarray":
        w, v = np.linalg.eigh((m + m.T) / 2)
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T

    x, y = a.double().numpy(), b.double().numpy()
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r1 = psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
