"""Caption variants: several captions per sample, stored once, and a seeded choice among them at training time.

Rephrasing that keeps the knowledge in the source data (LaCLIP, Recap-DataComp, DALL-E 3: mix originals with
rewrites; Brack et al. 2025: random caption lengths balance alignment against diversity). Two halves:

* **build** (:func:`build_caption_variants`): a Parquet sidecar ``captions.parquet`` with one row per
  ``(key, source, caption)``, written under the run's cache (never beside the user's data). Sources:
  dataset columns (a field of each sample's ``.json``, or for ``data=flux_reason`` a column of its
  parquet files, e.g. ``caption_detail``), deterministic template rewrites (:class:`TemplateRewriter`:
  clause reordering, inverse relations, a small synonym table; meaning-preserving on the embedded
  ``shapes`` and ``glyphs`` grammars), and a user callable named by import path (``module:function``,
  e.g. a local small language model) that maps a list of captions to a list of rewrites.
* **choose** (:class:`CaptionChooser`): per training sample, a source drawn with its configured
  probability and, with probability ``truncate``, a cut of a multi-sentence caption at a random sentence
  boundary, both a pure function of ``(seed, epoch, key)``: identical on every DDP rank and worker,
  different across epochs. The datamodule applies it to each training batch
  (:meth:`~lightning_alchemist.data.datamodule.T2IDataModule.use_captions`); shards are never rewritten.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightning_alchemist.config import to_dataclass
from lightning_alchemist.errors import ConfigError, DataError

__all__ = ["CaptionChooser", "CaptionTable", "CaptionsConfig", "TemplateRewriter", "build_caption_variants",
           "captions_config", "resolve_callable", "sentence_ends", "split_sentences", "truncate_sentences"]

log = logging.getLogger(__name__)

ORIGINAL = "original"  # the caption in the shards (always available; never stored in the sidecar)
TEMPLATE = "template"  # template rewrites
REWRITE = "rewrite"    # the user's callable
SIDECAR = "captions.parquet"


@dataclass
class CaptionsConfig:
    """Schema of the ``captions`` group: which caption variants to build and how training picks among them.

    Off by default (``captions=none``): no source, no truncation, training sees the shards' captions.
    """

    name: str = "none"
    # Dataset columns stored as sources named by the column: a field of each sample's .json member, or for
    # data=flux_reason a column of its parquet files (caption_detail, caption_composition, ...).
    columns: list[str] = field(default_factory=list)
    # Template rewrites per sample (source "template"; 0 = none); deterministic per key, seed-free.
    templates: int = 0
    # A user callable "module:function" taking a list of captions and returning one rewrite (or None) per caption
    # (source "rewrite"), e.g. a local small language model; called in batches of rewriter_batch.
    rewriter: Optional[str] = None
    rewriter_batch: int = 64
    # Training-time probability per source ("original", "template", "rewrite", or a column); they sum to 1.
    # A sample without the drawn source falls back on its other sources in proportion. Empty: "original" only.
    probs: dict[str, float] = field(default_factory=dict)
    # Probability of cutting a caption of at least min_sentences sentences after a random sentence (1 .. n-1 kept).
    truncate: float = 0.0
    min_sentences: int = 2

    @property
    def enabled(self) -> bool:
        """Whether training sees anything but the original captions."""
        return bool(self.probs) or self.truncate > 0

    def sources(self) -> list[str]:
        """The stored sources this config builds, in a fixed order."""
        out = list(self.columns)
        if self.templates:
            out.append(TEMPLATE)
        if self.rewriter:
            out.append(REWRITE)
        return out

    def build_identity(self) -> dict[str, Any]:
        """What determines the sidecar's content (the choice's probabilities do not): a cache key."""
        ident: dict[str, Any] = {"columns": list(self.columns), "templates": int(self.templates),
                                 "template_version": TemplateRewriter.VERSION}
        if self.rewriter:
            ident["rewriter"] = self.rewriter
            ident["rewriter_source"] = _source_digest(resolve_callable(self.rewriter))
        return ident


def captions_config(node: Any) -> CaptionsConfig:
    """Validate the ``captions`` group (types at compose time; here the cross-field rules). One-line errors."""
    cfg = to_dataclass(node, CaptionsConfig, "captions")
    if cfg.templates < 0:
        raise ConfigError(f"config 'captions.templates': got {cfg.templates}, expected >= 0 (0: no template rewrites)")
    if cfg.rewriter_batch <= 0:
        raise ConfigError(f"config 'captions.rewriter_batch': got {cfg.rewriter_batch}, expected a positive number")
    if not 0.0 <= cfg.truncate <= 1.0:
        raise ConfigError(f"config 'captions.truncate': got {cfg.truncate}, expected a probability in [0, 1]")
    if cfg.min_sentences < 2:
        raise ConfigError(f"config 'captions.min_sentences': got {cfg.min_sentences}, expected >= 2 (a cut keeps 1 .. n-1 sentences)")
    reserved = {ORIGINAL, TEMPLATE, REWRITE}.intersection(cfg.columns)
    if reserved:
        raise ConfigError(f"config 'captions.columns': {sorted(reserved)} name built-in sources; list dataset columns only")
    if len(set(cfg.columns)) != len(cfg.columns):
        raise ConfigError(f"config 'captions.columns': {cfg.columns} lists a column twice")
    if cfg.rewriter:
        resolve_callable(cfg.rewriter, "captions.rewriter")  # a bad path fails here, before any slow work
    known = [ORIGINAL, *cfg.sources()]
    if cfg.probs:
        unknown = sorted(set(cfg.probs) - set(known))
        if unknown:
            raise ConfigError(f"config 'captions.probs': {unknown} is not a configured source (sources: {', '.join(known)}); "
                              "add it to captions.columns/templates/rewriter or drop its probability")
        bad = {k: v for k, v in cfg.probs.items() if not (v >= 0 and np.isfinite(v))}
        if bad:
            raise ConfigError(f"config 'captions.probs': {bad} must be finite and >= 0")
        total = float(sum(cfg.probs.values()))
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"config 'captions.probs': the probabilities sum to {total:g}, expected 1 "
                              f"(got {dict(cfg.probs)})")
    missing = [s for s in cfg.sources() if s not in cfg.probs]
    if missing:
        raise ConfigError(f"config 'captions.probs': source(s) {missing} are built but have no probability; "
                          f"give each one, e.g. captions.probs.{missing[0]}=0.5 (and the rest to original)")
    return cfg


# ---------------------------------------------------------------------------------------------- user callables


def resolve_callable(path: str, where: str = "captions.rewriter") -> Callable[..., Any]:
    """The callable named ``"module:function"`` (``function`` may be dotted: ``module:Class.method``).

    Raises:
        ConfigError: one line naming ``where``, the path and what is wrong (format, module, attribute, not callable).
    """
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ConfigError(f"config '{where}': {path!r} is not an import path; expected 'module:function', "
                          "e.g. 'my_package.rewrite:paraphrase'")
    module_name, attr = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"config '{where}': cannot import module '{module_name}' of {path!r} ({err}); "
                          "put it on PYTHONPATH or install its package") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"config '{where}': module '{module_name}' has no attribute '{attr}' (from {path!r}); "
                              "check the function's name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"config '{where}': {path!r} names a {type(obj).__name__}, not a callable")
    return obj


def _source_digest(fn: Callable[..., Any]) -> str:
    """A digest of the callable's source, so an edited rewriter builds a fresh sidecar (its name when no source)."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- sentences

# Tokens ending in "." that do not end a sentence (lower-case, without the dot); single letters (initials) too.
_ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "st", "no", "approx", "fig", "cf", "ca"})
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|[。！？]+")


def sentence_ends(text: str) -> list[int]:
    """Character positions just after each sentence end of ``text`` (the last sentence's end excluded).

    A sentence ends at ``.``/``!``/``?`` (with closing quotes or brackets) followed by whitespace, or at
    ``。！？``; a ``.`` after an abbreviation (e.g., etc., Dr.) or an initial (J.) does not end one, and a
    decimal point (3.5) never does (no whitespace follows).
    """
    ends = []
    body = text.rstrip()
    for m in _END.finditer(body):
        if m.end() >= len(body):
            break
        if m.group(0).startswith("."):
            word = re.search(r"([\w.]+)$", body[: m.start()])
            token = word.group(1).lower() if word else ""
            if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                continue
        ends.append(m.end())
    return ends


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (stripped; joining them with single spaces restores it up to whitespace)."""
    bounds = [0, *sentence_ends(text), len(text)]
    return [s for s in (text[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:])) if s]


def truncate_sentences(text: str, keep: int) -> str:
    """``text`` cut after its first ``keep`` sentences: a prefix of ``text`` ending at a sentence boundary."""
    ends = sentence_ends(text)
    if keep <= 0 or keep > len(ends):
        return text
    return text[: ends[keep - 1]].rstrip()


# ---------------------------------------------------------------------------------------------- template rewrites


class TemplateRewriter:
    """Deterministic, meaning-preserving rewrites of a caption, keyed by ``(key, variant)``.

    Rules (each applied where it matches, picked per rewrite by a hash of the key and the variant index):

    * ``inverse``: "A above B" → "B below A" (and left/right): the same scene (``shapes``' two-object layouts);
    * ``front``: a trailing background clause moves to the front ("…, on a white background" →
      "on a white background, …");
    * ``synonyms``: a small table of words with the same meaning in these grammars (large → big, …).

    Quoted text (``glyphs``' rendered words) is never changed. A caption no rule matches has no rewrite.
    """

    VERSION = "1"
    INVERSE = {"above": "below", "below": "above", "to the left of": "to the right of", "to the right of": "to the left of"}
    SYNONYMS = (
        ("large", "big"),
        ("small", "little"),
        ("background", "backdrop"),
        ("in the center", "in the middle"),
        ("letters", "characters"),
        ("text reading", "text that reads"),
        ("tilted left", "tilted to the left"),
        ("tilted right", "tilted to the right"),
    )
    _RELATION = re.compile(r"^(?P<a>.+?) (?P<rel>above|below|to the left of|to the right of) (?P<b>.+?) (?P<tail>on (?:a|an) [a-z ]+)$")
    _FRONT = re.compile(r"^(?P<body>.+?),? (?P<bg>on (?:(?:a|an) [a-z ]+ background|a gradient from [a-z ]+ to [a-z ]+))$")
    RULES = ("inverse", "front", "synonyms")

    def applicable(self, caption: str) -> list[str]:
        """The rules that change ``caption``."""
        out = []
        if '"' not in caption and self._RELATION.match(caption):
            out.append("inverse")
        if self._FRONT.match(caption):
            out.append("front")
        if any(re.search(rf"\b{re.escape(a)}\b", _unquoted(caption)) for a, _ in self.SYNONYMS):
            out.append("synonyms")
        return out

    def apply(self, caption: str, rules: Sequence[str], u: Iterable[float] = ()) -> str:
        """``caption`` with ``rules`` applied in a fixed order (``u``: uniforms choosing which synonyms swap)."""
        text = caption
        if "inverse" in rules:
            m = self._RELATION.match(text)
            if m and '"' not in text:
                text = f"{m['b']} {self.INVERSE[m['rel']]} {m['a']} {m['tail']}"
        if "synonyms" in rules:
            draws = list(u)
            for i, (a, b) in enumerate(self.SYNONYMS):
                if i >= len(draws) or draws[i] < 0.5:
                    text = _replace_unquoted(text, a, b)
        if "front" in rules:
            m = self._FRONT.match(text)
            if m:
                text = f"{m['bg']}, {m['body']}"
        return text

    def rewrite(self, caption: str, key: str, variant: int = 0) -> Optional[str]:
        """Rewrite ``variant`` of ``caption`` for sample ``key``; ``None`` when no rule changes it."""
        rules = self.applicable(caption)
        if not rules:
            return None
        u = _uniforms(f"template\x1f{variant}\x1f{key}", 3 + len(self.SYNONYMS))
        chosen = [r for r, x in zip(rules, u) if x < 0.5]
        if not chosen:  # every rewrite changes something
            chosen = [rules[int(u[len(rules)] * len(rules)) % len(rules)]]
        out = self.apply(caption, chosen, u[3:])
        return out if out != caption else self.apply(caption, rules, ())


def _unquoted(text: str) -> str:
    return re.sub(r'"[^"]*"', '""', text)


def _replace_unquoted(text: str, old: str, new: str) -> str:
    parts = re.split(r'("[^"]*")', text)  # odd entries are quoted spans, kept as they are
    pattern = re.compile(rf"\b{re.escape(old)}\b")
    return "".join(p if i % 2 else pattern.sub(new, p) for i, p in enumerate(parts))


def _uniforms(label: str, n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) from a hash of ``label``: the same on every machine, process and rank."""
    words = []
    counter = 0
    while len(words) < n:
        digest = hashlib.blake2b(f"{label}\x1f{counter}".encode(), digest_size=32).digest()
        words.extend(np.frombuffer(digest, dtype="<u4").tolist())
        counter += 1
    return np.asarray(words[:n], dtype=np.float64) / 2**32


# ---------------------------------------------------------------------------------------------- build


@dataclass
class BuildSummary:
    """What :func:`build_caption_variants` stored: rows per source and what it skipped, by reason."""

    path: str
    samples: int
    rows: dict[str, int]
    skipped: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "samples": self.samples, "rows": dict(self.rows), "skipped": dict(self.skipped)}


def _column_values_from_json(dataset: Any, columns: Sequence[str]) -> Iterable[dict[str, Any]]:
    meta_of = getattr(dataset, "meta", None)
    if meta_of is None:
        raise DataError(f"captions.columns {list(columns)}: the dataset {type(dataset).__name__} has no per-sample metadata; "
                        "use a webdataset with .json members or data=flux_reason")
    for i in range(len(dataset)):
        meta = meta_of(i)
        yield {c: meta.get(c) for c in columns}


def _flux_reason_rows(data_cfg: Any, columns: Sequence[str], position: dict[str, int]) -> Iterable[tuple[int, dict[str, Any]]]:
    """``(pool position, {column: value})`` streamed from the FLUX-Reason parquet files (id + the columns only, by
    record batch); each pool key once (its first row, as the conversion keeps it)."""
    from lightning_alchemist.data.layouts.flux_reason import parquet_files

    done: set[int] = set()
    for path in parquet_files(data_cfg):
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        have = [c for c in columns if c in names]
        if "id" not in names or not have:
            continue
        for batch in pf.iter_batches(batch_size=max(int(data_cfg.flux_reason.batch_rows), 1), columns=["id", *have]):
            cols = batch.to_pydict()
            for i, key in enumerate(cols["id"]):
                pos = position.get(str(key))
                if pos is not None and pos not in done:
                    done.add(pos)
                    yield pos, {c: cols[c][i] for c in have}


class _SidecarWriter:
    """Rows of ``(key, source, caption)`` written to a Parquet file in bounded chunks (pools of millions)."""

    SCHEMA = pa.schema([("key", pa.string()), ("source", pa.string()), ("caption", pa.large_string())])

    def __init__(self, path: str, meta: dict[str, Any], chunk: int = 100_000) -> None:
        schema = self.SCHEMA.with_metadata({b"lightning_alchemist.captions": json.dumps(meta, sort_keys=True).encode()})
        self.writer = pq.ParquetWriter(path, schema)
        self.chunk = chunk
        self.rows: tuple[list[str], list[str], list[str]] = ([], [], [])
        self.counts: Counter[str] = Counter()

    def add(self, key: str, source: str, text: str) -> None:
        for column, value in zip(self.rows, (key, source, text)):
            column.append(value)
        self.counts[source] += 1
        if len(self.rows[0]) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.rows[0]:
            self.writer.write_table(pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(self.rows, self.SCHEMA)],
                                                         schema=self.writer.schema))
            self.rows = ([], [], [])

    def close(self) -> None:
        self.flush()
        self.writer.close()


def build_caption_variants(dataset: Any, cfg: CaptionsConfig, out: str | os.PathLike, data_cfg: Any = None) -> BuildSummary:
    """Write ``out/captions.parquet``: one row per ``(key, source, caption)`` of the pool's caption variants.

    Args:
        dataset: the pool (``keys`` and ``captions`` per position; ``meta(i)`` for json columns), e.g.
            :attr:`T2IDataModule.pool <lightning_alchemist.data.datamodule.T2IDataModule.pool>`.
        cfg: the validated ``captions`` config.
        out: a folder under the run's cache (the sidecar never goes beside the user's data).
        data_cfg: the ``data`` config; with ``data=flux_reason`` columns come from its parquet files.

    A missing, non-string or empty value, a value repeating the original or another source's, and a sample no
    template rule changes are skipped and counted by reason. Rows are written in bounded chunks to a temp file,
    renamed when complete: a killed build leaves no half sidecar.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys: Sequence[str] = dataset.keys
    originals: Sequence[str] = dataset.captions
    skipped: Counter[str] = Counter()
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".parquet.tmp")
    os.close(fd)
    writer = _SidecarWriter(tmp, {"sources": cfg.sources(), "samples": len(keys), "identity": cfg.build_identity()})

    def add(key: str, source: str, text: Any, original: str) -> bool:
        if not isinstance(text, str) or not text.strip():
            skipped[f"{source}:empty"] += 1
            return False
        text = text.strip()
        if text == original.strip():
            skipped[f"{source}:same_as_original"] += 1
            return False
        writer.add(key, source, text)
        return True

    try:
        if cfg.columns:
            if data_cfg is not None and getattr(data_cfg, "name", None) == "flux_reason":
                position = {k: i for i, k in enumerate(keys)}
                rows: Iterable[tuple[int, dict[str, Any]]] = _flux_reason_rows(data_cfg, cfg.columns, position)
            else:
                rows = enumerate(_column_values_from_json(dataset, cfg.columns))
            for pos, vals in rows:
                key, original = keys[pos], originals[pos]
                seen: set[str] = set()
                for col in cfg.columns:
                    value = vals.get(col)
                    if isinstance(value, str) and value.strip() in seen:
                        skipped[f"{col}:duplicate"] += 1
                        continue
                    if add(key, col, value, original):
                        seen.add(value.strip())
        if cfg.templates:
            rewriter = TemplateRewriter()
            for key, original in zip(keys, originals):
                made: set[str] = set()
                for v in range(cfg.templates):
                    text = rewriter.rewrite(original, key, v)
                    if text is None:
                        skipped[f"{TEMPLATE}:no_rule_applies"] += 1
                    elif text in made:
                        skipped[f"{TEMPLATE}:duplicate"] += 1
                    elif add(key, TEMPLATE, text, original):
                        made.add(text)
        if cfg.rewriter:
            fn = resolve_callable(cfg.rewriter)
            step = cfg.rewriter_batch
            for start in range(0, len(keys), step):
                chunk = list(originals[start : start + step])
                try:
                    result = list(fn(list(chunk)))
                except Exception as err:  # the user's code: name it, do not bury it in a traceback from here
                    raise DataError(f"captions.rewriter {cfg.rewriter!r} failed on captions {start}..{start + len(chunk) - 1} "
                                    f"({type(err).__name__}: {err}); fix the function or drop captions.rewriter") from err
                if len(result) != len(chunk):
                    raise DataError(f"captions.rewriter {cfg.rewriter!r} returned {len(result)} captions for {len(chunk)}; "
                                    "it must return one caption (or None) per input caption, in order")
                for key, original, text in zip(keys[start : start + step], chunk, result):
                    add(key, REWRITE, text, original)
        writer.close()
    except BaseException:
        writer.writer.close()
        os.unlink(tmp)
        raise
    path = out / SIDECAR
    os.replace(tmp, path)
    summary = BuildSummary(str(path), len(keys), {s: writer.counts.get(s, 0) for s in cfg.sources()}, dict(sorted(skipped.items())))
    if skipped:
        log.info("caption variants: %s", ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())))
    return summary


# ---------------------------------------------------------------------------------------------- choose


class CaptionTable:
    """The stored caption variants, looked up by sample key (64-bit key hashes, sorted; no dict of every key).

    Args:
        table: columns ``key``, ``source``, ``caption`` (e.g. :meth:`read` of a sidecar).
    """

    def __init__(self, table: pa.Table) -> None:
        from lightning_alchemist.selection.ratings import key_hashes

        missing = {"key", "source", "caption"} - set(table.column_names)
        if missing:
            raise DataError(f"caption variants: the table lacks column(s) {sorted(missing)} (has {table.column_names})")
        keys = table.column("key").cast(pa.string())
        hashes = key_hashes(keys) if len(keys) else np.zeros(0, np.uint64)
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.keys = keys.combine_chunks().take(pa.array(order)) if len(keys) else pa.array([], pa.string())
        source = table.column("source").cast(pa.string())
        self.sources: list[str] = sorted(pc.unique(source).to_pylist())
        codes = pc.index_in(source, value_set=pa.array(self.sources, pa.string())).to_numpy()
        self.codes = np.asarray(codes, dtype=np.int16)[order]
        self.captions = table.column("caption").combine_chunks().take(pa.array(order)) if len(keys) else pa.array([], pa.string())

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CaptionTable":
        """Read a sidecar written by :func:`build_caption_variants` (a folder means its ``captions.parquet``)."""
        path = Path(path)
        if path.is_dir():
            path = path / SIDECAR
        if not path.is_file():
            raise DataError(f"caption variants: no sidecar at {path}; build it with build_caption_variants (the pipeline does)")
        return cls(pq.read_table(path))

    def __len__(self) -> int:
        return len(self.hashes)

    def variants(self, key: str) -> dict[str, list[str]]:
        """``{source: [captions]}`` stored for ``key`` (empty when it has none)."""
        return self.lookup([key])[0]

    def lookup(self, keys: Sequence[str]) -> list[dict[str, list[str]]]:
        """:meth:`variants` of each of ``keys`` (one vectorised hash and search for the batch)."""
        from lightning_alchemist.selection.ratings import key_hashes

        if not len(self.hashes) or not len(keys):
            return [{} for _ in keys]
        hashes = key_hashes(pa.chunked_array([pa.array([str(k) for k in keys], pa.string())]))
        los = np.searchsorted(self.hashes, hashes, "left")
        his = np.searchsorted(self.hashes, hashes, "right")
        out: list[dict[str, list[str]]] = []
        for key, lo, hi in zip(keys, los.tolist(), his.tolist()):
            found: dict[str, list[str]] = {}
            for row in range(lo, hi):
                if self.keys[row].as_py() != key:  # a 64-bit collision: another key
                    continue
                found.setdefault(self.sources[int(self.codes[row])], []).append(self.captions[row].as_py())
            out.append(found)
        return out


class CaptionChooser:
    """Picks each training sample's caption among its variants, as a function of ``(seed, epoch, key)``.

    Args:
        cfg: the ``captions`` config (``probs``, ``truncate``, ``min_sentences``).
        table: the stored variants (``None``: only the original captions, e.g. truncation alone).
        seed: the run's seed.

    :attr:`counts` tallies the chosen sources (and ``truncated``) over the batches seen, for the report.
    """

    def __init__(self, cfg: CaptionsConfig, table: Optional[CaptionTable] = None, seed: int = 0) -> None:
        self.cfg = cfg
        self.table = table
        self.seed = int(seed)
        probs = dict(cfg.probs) or {ORIGINAL: 1.0}
        self.names = list(probs)
        self.probs = np.asarray([probs[n] for n in self.names], dtype=np.float64)
        self.counts: Counter[str] = Counter()

    def choose_one(self, key: str, original: str, epoch: int,
                   stored: Optional[dict[str, list[str]]] = None) -> tuple[str, str, bool]:
        """``(caption, source, truncated)`` for sample ``key`` in ``epoch`` (``stored``: its variants, if looked up)."""
        u = _uniforms(f"{self.seed}\x1f{epoch}\x1f{key}", 4)
        if stored is None:
            stored = self.table.variants(key) if self.table is not None else {}
        avail = np.asarray([n == ORIGINAL or bool(stored.get(n)) for n in self.names], dtype=bool)
        p = self.probs * avail
        if p.sum() <= 0:  # only sources this sample lacks were asked for: the original caption
            source, text = ORIGINAL, original
        else:
            cdf = np.cumsum(p / p.sum())
            idx = min(int(np.searchsorted(cdf, u[0], side="right")), len(cdf) - 1)
            source = self.names[idx]
            options = [original] if source == ORIGINAL else stored[source]
            text = options[min(int(u[1] * len(options)), len(options) - 1)]
        truncated = False
        if self.cfg.truncate > 0 and u[2] < self.cfg.truncate:
            ends = sentence_ends(text)
            if len(ends) + 1 >= self.cfg.min_sentences:
                keep = 1 + min(int(u[3] * len(ends)), len(ends) - 1)  # 1 .. n-1 sentences
                text, truncated = truncate_sentences(text, keep), True
        return text, source, truncated

    def choose(self, keys: Sequence[str], captions: Sequence[str], epoch: int) -> list[str]:
        """The captions of a batch for ``epoch`` (``keys`` and ``captions`` as the batch holds them)."""
        keys = [str(k) for k in keys]
        stored = self.table.lookup(keys) if self.table is not None else [{} for _ in keys]
        out = []
        for key, caption, variants in zip(keys, captions, stored):
            text, source, truncated = self.choose_one(key, str(caption), int(epoch), variants)
            self.counts[source] += 1
            self.counts["truncated"] += int(truncated)
            out.append(text)
        return out

    def __call__(self, batch: dict[str, Any], epoch: int) -> dict[str, Any]:
        """``batch`` with its ``caption`` list replaced by this epoch's choice (other entries unchanged)."""
        if "caption" in batch and "key" in batch:
            batch = dict(batch)
            batch["caption"] = self.choose(batch["key"], batch["caption"], epoch)
        return batch

    def shares(self) -> dict[str, float]:
        """The share of each chosen source (and of truncated captions) over what :meth:`choose` has seen."""
        total = sum(v for k, v in self.counts.items() if k != "truncated")
        return {k: v / total for k, v in sorted(self.counts.items())} if total else {}
