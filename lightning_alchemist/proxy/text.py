"""Text encoders behind one factory: ``captions -> (hidden [B,T,D], mask [B,T], pooled [B,D])``.

Kinds (``model.text.kind``):

- ``tiny``: a small :class:`~transformers.CLIPTextModel` built from config (seeded, frozen) with an
  offline word-level tokenizer (:class:`WordTokenizer`); the default for tests and CPU runs.
- ``clip`` / ``t5``: a real encoder and tokenizer from a local folder (a diffusers pipeline folder
  with ``tokenizer``/``text_encoder`` subfolders, or a plain model folder). Never a hub id.
- ``clip+t5``: FLUX's pair: pooled text from CLIP, token states from T5.
- ``precomputed``: text states cached per sample key by :func:`precompute_text`; scoring and
  training then skip the text encoder entirely.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_alchemist.errors import ConfigError, DataError

__all__ = [
    "TextConfig",
    "TextEncoder",
    "TextStates",
    "WordTokenizer",
    "build_text_encoder",
    "precompute_text",
    "EMPTY_KEY",
]

EMPTY_KEY = "__empty__"
"""Key under which a precomputed store keeps the empty caption (the unconditional input of CFG)."""

# The grammar words of the embedded ``shapes`` captions plus common caption words. Words outside the
# vocabulary are hashed into the remaining buckets, so any caption tokenizes without a fitted vocabulary.
BASIC_WORDS: tuple[str, ...] = tuple(
    """a an the and of on in at to with above below left right top bottom center centre
    small large big tiny medium circle square triangle diamond star rectangle ellipse
    red green blue yellow purple orange white black gray grey pink brown cyan
    background plain empty simple minimal image photo product picture
    , . is are two three one""".split()
)


@dataclass
class TextConfig:
    """Schema of ``model.text``.

    Attributes:
        kind: ``tiny`` | ``clip`` | ``t5`` | ``clip+t5`` | ``precomputed``.
        path: local folder of a real encoder (``clip``/``t5``/``clip+t5``) or of a precomputed store.
        subfolder: encoder subfolder inside ``path`` (default ``text_encoder``, when it exists).
        subfolder_2: the T5 subfolder for ``clip+t5`` (default ``text_encoder_2``).
        max_length: tokens per caption (padded/truncated); real CLIP uses 77.
        hidden_size, num_layers, num_heads, intermediate_size, vocab_size: the ``tiny`` encoder.
        vocab: optional JSON list of words for the ``tiny`` tokenizer (see :meth:`WordTokenizer.from_captions`).
        seed: seeds the ``tiny`` encoder's random weights, so a rebuilt model is identical.
    """

    kind: str = "tiny"
    path: Optional[str] = None
    subfolder: Optional[str] = None
    subfolder_2: Optional[str] = None
    max_length: int = 32
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 64
    vocab_size: int = 512
    vocab: Optional[str] = None
    seed: int = 0


@dataclass
class TextStates:
    """Encoded captions: ``hidden [B,T,D]``, ``mask [B,T]`` (bool, True = real token), ``pooled [B,P]``."""

    hidden: Tensor
    mask: Tensor
    pooled: Tensor


_WORD = re.compile(r"\w+|[^\w\s]")


class WordTokenizer:
    """Offline word-level tokenizer: ``<pad>=0, <bos>=1, <unk>=2, <eos>=vocab_size-1``.

    Known words get their own id; other words are hashed (crc32, stable across processes) into a
    shared bucket range, so unseen captions still tokenize deterministically.
    """

    PAD, BOS, UNK = 0, 1, 2

    def __init__(self, words: Sequence[str] = BASIC_WORDS, vocab_size: int = 512, max_length: int = 32) -> None:
        words = list(dict.fromkeys(w.lower() for w in words))
        n_special = 4  # pad, bos, unk, eos
        if vocab_size < len(words) + n_special + 1:
            raise ConfigError(
                f"config 'model.text.vocab_size': {vocab_size} is too small for {len(words)} words; "
                f"use at least {len(words) + n_special + 1}"
            )
        if max_length < 3:
            raise ConfigError(f"config 'model.text.max_length': got {max_length}, use at least 3")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.EOS = vocab_size - 1  # the largest id, so CLIP's pooler (argmax or eos lookup) picks it
        self.ids = {w: 3 + i for i, w in enumerate(words)}
        self.hash_lo = 3 + len(words)
        self.hash_n = self.EOS - self.hash_lo

    @classmethod
    def from_captions(cls, captions: Sequence[str], vocab_size: int = 512, max_length: int = 32) -> "WordTokenizer":
        """Build the vocabulary from a caption corpus (most frequent words first, ties by name)."""
        counts: dict[str, int] = {}
        for caption in captions:
            for word in _WORD.findall(caption.lower()):
                counts[word] = counts.get(word, 0) + 1
        reserve = min(64, vocab_size // 4)  # hash buckets kept for words the corpus did not have
        ranked = sorted(counts, key=lambda w: (-counts[w], w))[: max(vocab_size - 5 - reserve, 0)]
        return cls(ranked, vocab_size, max_length)

    def _id(self, word: str) -> int:
        known = self.ids.get(word)
        if known is not None:
            return known
        if self.hash_n <= 0:
            return self.UNK
        return self.hash_lo + zlib.crc32(word.encode()) % self.hash_n

    def __call__(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``[B, max_length]`` (long) and mask ``[B, max_length]`` (bool)."""
        ids = torch.full((len(captions), self.max_length), self.PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            toks = [self._id(w) for w in _WORD.findall(caption.lower())][: self.max_length - 2]
            seq = [self.BOS, *toks, self.EOS]
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids, ids != self.PAD


class TextEncoder(nn.Module):
    """A frozen caption encoder. Call :meth:`encode` (no grad)."""

    hidden_size: int
    pooled_size: int

    def encode(self, captions: Sequence[str], keys: Optional[Sequence[str]] = None) -> TextStates:  # noqa: D102
        raise NotImplementedError

    def train(self, mode: bool = True) -> "TextEncoder":
        # Frozen: always in eval mode (no dropout), whatever the parent module does.
        return super().train(False)


class TinyClipText(TextEncoder):
    """A tiny CLIP text transformer built from config, with the offline :class:`WordTokenizer`."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        if cfg.vocab:
            import json

            path = Path(cfg.vocab).expanduser()
            if not path.is_file():
                raise ConfigError(f"config 'model.text.vocab': file {path} not found; write a JSON list of words")
            words = json.loads(path.read_text())
        else:
            words = BASIC_WORDS
        self.tokenizer = WordTokenizer(words, cfg.vocab_size, cfg.max_length)
        config = CLIPTextConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            max_position_embeddings=cfg.max_length,
            projection_dim=cfg.hidden_size,
            pad_token_id=self.tokenizer.PAD,
            bos_token_id=self.tokenizer.BOS,
            eos_token_id=self.tokenizer.EOS,
            hidden_act="gelu",
        )
        # Seeded in a forked RNG: the same weights on every rebuild, the caller's RNG stream untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = CLIPTextModel(config)
        self.model.requires_grad_(False)
        self.hidden_size = self.pooled_size = cfg.hidden_size

    @torch.no_grad()
    def encode(self, captions: Sequence[str], keys: Optional[Sequence[str]] = None) -> TextStates:
        ids, mask = self.tokenizer(list(captions))
        device = next(self.model.parameters()).device
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device).long())
        return TextStates(out.last_hidden_state, mask.to(device), out.pooler_output)


def _folder(cfg: TextConfig, sub: Optional[str], default_sub: str) -> tuple[str, Optional[str]]:
    if not cfg.path:
        raise ConfigError(f"config 'model.text.path' is required for text kind '{cfg.kind}': pass a local folder")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"config 'model.text.path': folder {root} not found; download the text encoder there first")
    if sub:
        return str(root), sub
    return str(root), (default_sub if (root / default_sub).is_dir() else None)


def _tokenizer_sub(sub: Optional[str]) -> Optional[str]:
    if sub is None:
        return None
    return sub.replace("text_encoder", "tokenizer")


class HFText(TextEncoder):
    """A real CLIP and/or T5 encoder from a local folder (``kind``: ``clip``, ``t5`` or ``clip+t5``)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        self.kind = cfg.kind
        self.max_length = cfg.max_length
        self.clip = self.t5 = None
        try:
            if cfg.kind in ("clip", "clip+t5"):
                root, sub = _folder(cfg, cfg.subfolder, "text_encoder")
                self.clip_tok = AutoTokenizer.from_pretrained(root, subfolder=_tokenizer_sub(sub) or "", local_files_only=True)
                self.clip = CLIPTextModel.from_pretrained(root, subfolder=sub or "", local_files_only=True)
            if cfg.kind in ("t5", "clip+t5"):
                default = "text_encoder_2" if cfg.kind == "clip+t5" else "text_encoder"
                sub2 = cfg.subfolder_2 if cfg.kind == "clip+t5" else cfg.subfolder
                root, sub = _folder(cfg, sub2, default)
                self.t5_tok = AutoTokenizer.from_pretrained(root, subfolder=_tokenizer_sub(sub) or "", local_files_only=True)
                self.t5 = T5EncoderModel.from_pretrained(root, subfolder=sub or "", local_files_only=True)
        except ConfigError:
            raise
        except (OSError, ValueError) as err:
            msg = " ".join(str(err).split())[:300]
            raise ConfigError(f"config 'model.text.path': cannot load a {cfg.kind} encoder from {cfg.path}: {msg}") from None
        for m in (self.clip, self.t5):
            if m is not None:
                m.requires_grad_(False)
        self.hidden_size = self.t5.config.d_model if self.t5 is not None else self.clip.config.hidden_size
        self.pooled_size = self.clip.config.hidden_size if self.clip is not None else self.t5.config.d_model

    def _run(self, tok, model, captions: list[str]) -> tuple[Tensor, Tensor]:
        device = next(model.parameters()).device
        # CLIP has 77 positions whatever the T5 length is (FLUX: CLIP 77, T5 512)
        length = min(self.max_length, getattr(model.config, "max_position_embeddings", None) or self.max_length)
        enc = tok(captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        mask = enc["attention_mask"].to(device)
        out = model(input_ids=enc["input_ids"].to(device), attention_mask=mask)
        return out, mask.bool()

    @torch.no_grad()
    def encode(self, captions: Sequence[str], keys: Optional[Sequence[str]] = None) -> TextStates:
        captions = list(captions)
        pooled = hidden = mask = None
        if self.clip is not None:
            out, cmask = self._run(self.clip_tok, self.clip, captions)
            pooled = out.pooler_output
            hidden, mask = out.last_hidden_state, cmask
        if self.t5 is not None:
            out, tmask = self._run(self.t5_tok, self.t5, captions)
            hidden, mask = out.last_hidden_state, tmask
            if pooled is None:  # T5 has no pooled state: masked mean, as STAR's T5 path does
                w = tmask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        return TextStates(hidden, mask, pooled)


class PrecomputedText(TextEncoder):
    """Text states looked up by sample key from a store written by :func:`precompute_text`."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if not cfg.path:
            raise ConfigError("config 'model.text.path' is required for text kind 'precomputed': pass the store folder")
        root = Path(cfg.path).expanduser()
        files = sorted(root.glob("text-*.pt")) if root.is_dir() else []
        if not files:
            raise ConfigError(f"config 'model.text.path': no precomputed text states (text-*.pt) in {root}; run precompute_text first")
        self.root = root
        self.index: dict[str, tuple[int, int]] = {}
        self.chunks: list[dict[str, Tensor]] = []
        for c, f in enumerate(files):
            chunk = torch.load(f, map_location="cpu", weights_only=True)
            self.chunks.append({k: chunk[k] for k in ("hidden", "mask", "pooled")})
            for r, key in enumerate(chunk["keys"]):
                self.index[key] = (c, r)
        first = self.chunks[0]
        self.hidden_size = first["hidden"].shape[-1]
        self.pooled_size = first["pooled"].shape[-1]
        self.register_buffer("_device", torch.zeros(0), persistent=False)

    def encode(self, captions: Sequence[str], keys: Optional[Sequence[str]] = None) -> TextStates:
        if keys is None:
            if all(c == "" for c in captions):
                keys = [EMPTY_KEY] * len(captions)
            else:
                raise DataError(
                    f"precomputed text states in {self.root} are looked up by key, and none were given; "
                    "use a live text encoder (model.text.kind=tiny|clip|t5) to encode new prompts"
                )
        rows = []
        for key in keys:
            at = self.index.get(key)
            if at is None:
                raise DataError(f"no precomputed text states for key '{key}' in {self.root}; re-run precompute_text on this dataset")
            rows.append(at)
        device = self._device.device
        out = [torch.stack([self.chunks[c][name][r] for c, r in rows]).to(device) for name in ("hidden", "mask", "pooled")]
        return TextStates(*out)


def build_text_encoder(cfg: TextConfig) -> TextEncoder:
    """The text encoder for ``model.text`` (frozen, eval mode)."""
    if cfg.kind == "tiny":
        return TinyClipText(cfg)
    if cfg.kind in ("clip", "t5", "clip+t5"):
        return HFText(cfg)
    if cfg.kind == "precomputed":
        return PrecomputedText(cfg)
    raise ConfigError(f"config 'model.text.kind': got '{cfg.kind}', expected tiny, clip, t5, clip+t5 or precomputed")


@torch.no_grad()
def precompute_text(
    encoder: TextEncoder, keys: Sequence[str], captions: Sequence[str], out_dir: str | Path, chunk: int = 4096, batch_size: int = 256
) -> Path:
    """Encode ``captions`` and store their states by key under ``out_dir`` (plus the empty caption).

    Each chunk file ``text-NNNNN.pt`` is written atomically, so a store is never half-written.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    keys, captions = [*keys, EMPTY_KEY], [*captions, ""]
    for c, start in enumerate(range(0, len(keys), chunk)):
        ks, cs = keys[start : start + chunk], captions[start : start + chunk]
        parts = [encoder.encode(cs[i : i + batch_size]) for i in range(0, len(cs), batch_size)]
        payload = {
            "keys": list(ks),
            "hidden": torch.cat([p.hidden for p in parts]).cpu(),
            "mask": torch.cat([p.mask for p in parts]).cpu(),
            "pooled": torch.cat([p.pooled for p in parts]).cpu(),
        }
        tmp = out / f".text-{c:05d}.pt.tmp"
        torch.save(payload, tmp)
        tmp.replace(out / f"text-{c:05d}.pt")
    return out
