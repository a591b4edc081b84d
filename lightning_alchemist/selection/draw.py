"""Exact, seeded, O(N) random draws over tens of millions of items (pure numpy).

``torch.multinomial`` refuses more than 2^24 categories and ``numpy.choice(p=...)`` without
replacement is slow; Gumbel-top-k (Efraimidis–Spirakis) is exact, linear and has no cap.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

__all__ = ["gumbel_top_k", "index_dtype", "make_rng", "permutation", "rank_gumbel_top_k", "rank_order", "weighted_draw"]


def make_rng(seed: int, *stream: int) -> np.random.Generator:
    """A PCG64 generator for ``seed`` and an optional stream id (e.g. the epoch): identical on every machine."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & (2**63 - 1), *map(int, stream)])))


def index_dtype(n: int) -> type:
    """The smallest index dtype for ``n`` items (int32 halves the memory of 30M-item orders)."""
    return np.int32 if n < 2**31 else np.int64


def _linear_keys(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Float64 keys in ``[0, 2^32 - 1]``, descending in ``values``: a linear map of ``[lo, hi]`` (``hi > lo``).

    Monotone steps only (IEEE rounding is monotone): ``a > b`` never maps above ``b``'s key.
    2^32 - 2 levels: rounding can overshoot by ~1e-6, and the subtraction below stays >= 0.
    """
    q = values - lo
    q *= (2**32 - 2) / (hi - lo)
    np.subtract(float(2**32 - 1), q, out=q)
    return q


def _float32_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys descending in ``values`` through the order-preserving float32 bit map (any floats)."""
    with np.errstate(over="ignore"):  # beyond float32 range -> ±inf: a tie, fixed up by the caller
        f32 = values.astype(np.float32)
    f32 += np.float32(0.0)  # -0.0 -> +0.0: they are equal, so must tie
    bits = f32.view(np.int32)
    mask = bits >> 31
    mask |= np.int32(-(2**31))
    bits ^= mask  # order-preserving float32 -> uint32 (ascending) ...
    np.invert(bits, out=bits)  # ... inverted for descending order
    return bits.view(np.uint32)


def _key_range(values: np.ndarray) -> Optional[tuple[float, float]]:
    """``(lo, hi)`` when the linear keys apply (finite range, not all equal), else None."""
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    return (lo, hi) if np.isfinite(hi - lo) and hi > lo else None


def _descending_keys(values: np.ndarray) -> np.ndarray:
    """Keys (uint32, or float64 in uint32 range) whose ascending order is ``values``' descending order, up to ties.

    Finite values are quantised linearly over their range (fewer ties than float32 where the
    data are dense); anything else goes through the order-preserving float32 bit map.
    """
    span = _key_range(values)
    return _float32_keys(values) if span is None else _linear_keys(values, *span)


def rank_order(values: np.ndarray) -> np.ndarray:
    """Indices of ``values`` from highest to lowest; ties keep their original order (stable).

    Exact for float64 input, and several times faster than ``np.argsort(kind="stable")``: one
    SIMD sort of ``(32-bit key, index)`` packed into uint64, then an exact re-sort of the few runs
    whose 32-bit keys tie.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n >= 2**32:
        return np.argsort(-values, kind="stable")
    # uint64 = (key << 32) | index, written as two uint32 halves without 64-bit temporaries.
    packed = np.empty(n, dtype=np.uint64)
    halves = packed.view(np.uint32).reshape(n, 2)
    lo, hi = (0, 1) if np.little_endian else (1, 0)
    halves[:, hi] = _descending_keys(values)
    halves[:, lo] = np.arange(n, dtype=np.uint32)
    packed.sort()
    high = halves[:, hi]
    order = halves[:, lo].astype(np.int64)
    same = high[1:] == high[:-1]
    del high, halves, packed
    if same.any():
        in_run = np.zeros(n, dtype=bool)
        in_run[1:] |= same
        in_run[:-1] |= same
        pos = np.flatnonzero(in_run)
        sub = order[pos]
        # Runs come in descending key order, so their values are nearly sorted: timsort (numpy's
        # stable sort) is fast here, and keeps index order for exact ties.
        order[pos] = sub[np.argsort(-values[sub], kind="stable")]
    return order


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` items drawn without replacement with probability ∝ ``exp(log_weights)``.

    Gumbel-top-k: keep the ``k`` largest ``log w_i − log E_i`` with ``E_i ~ Exp(1)``. Items with
    weight 0 (``-inf``) are taken only when fewer than ``k`` others remain, uniformly among themselves.
    Returned positions are in no particular order.
    """
    n = len(log_weights)
    if not 0 <= k <= n:
        raise ValueError(f"cannot draw {k} of {n} items without replacement")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    keys = rng.standard_exponential(n)
    np.log(keys, out=keys)
    np.subtract(log_weights, keys, out=keys)
    if k == n:
        return np.arange(n, dtype=np.int64)
    top = np.argpartition(keys, n - k)[n - k :]
    finite = np.isfinite(keys[top])
    if not finite.all():
        # Fewer than k positive weights: keep all of them and fill uniformly from the zero-weight rest.
        positive = np.flatnonzero(np.isfinite(keys))
        zero = np.flatnonzero(~np.isfinite(keys))
        fill = rng.choice(zero, size=k - len(positive), replace=False)
        top = np.concatenate([positive, fill])
    return top.astype(np.int64, copy=False)


# Rank-weighted Gumbel-top-k (see rank_gumbel_top_k). Module constants so tests can force every path.
_CHUNK = 1 << 20  # rows per pass step: bounded temporaries, no 30M-row scratch arrays (smaller: no faster, measured)
_SAMPLE = 1 << 20  # rows whose keys estimate the thresholds (all rows below twice this)
_MAX_BITS = 18  # bins at most 2^bits: finer bins thin the band to sort, coarser ones keep the tables in cache (2^18 measured best at 30M)
_SAMPLE_SEED = 0x5EED  # the sample's own noise: it only steers the thresholds, never the result
_MARGIN_SD = 6.0  # threshold margin, in standard deviations of the sampled order statistic


def _rank_bins(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a bin of its value, descending (bin 0 holds the highest values), and the bins' counts.

    Bins are monotone in value (non-strictly): a higher value never lands in a later bin, and
    equal values share a bin, so rank-order position = rows before the bin + position inside it.
    """
    n = len(values)
    span = _key_range(values)
    if span is not None:  # (hi - v) · scale: monotone steps only, in [0, 2^bits - 1] (+ rounding below 1)
        top, scale = span[1], ((1 << bits) - 1) / (span[1] - span[0])
    bins = np.empty(n, dtype=np.int32)
    counts = np.zeros(1 << bits, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        v = values[s : s + _CHUNK]
        if span is None:
            b = (_float32_keys(v) >> np.uint32(32 - bits)).astype(np.int32)
        else:
            q = np.subtract(top, v)
            q *= scale
            b = q.astype(np.int32)  # truncation keeps the order
        bins[s : s + _CHUNK] = b
        counts += np.bincount(b, minlength=1 << bits)
    return bins, counts


def _exact_ranks(values: np.ndarray, bins: np.ndarray, starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rank-order positions of ``rows`` (value descending, ties by row), sorting only their bins' rows."""
    touched = np.zeros(len(starts), dtype=bool)
    touched[bins[rows]] = True
    members = np.concatenate(
        [np.flatnonzero(touched[bins[s : s + _CHUNK]]) + s for s in range(0, len(bins), _CHUNK)]
    )
    mb = bins[members]
    srt = np.lexsort((members, -values[members], mb))
    sb = mb[srt]
    ranks = np.empty(len(members), dtype=np.int64)
    ranks[srt] = starts[sb] + (np.arange(len(sb)) - np.searchsorted(sb, sb, side="left"))
    return ranks[np.searchsorted(members, rows)]


def _row_bounds(table: np.ndarray, bins: np.ndarray, log_e: np.ndarray) -> np.ndarray:
    """``[upper, lower]`` key bounds per row: its bin's log-weight bounds minus its ``log E``.

    One 16-byte gather through a complex view (numpy's row gather of a 2-column table is ~5x slower).
    """
    out = np.take(table.view(np.complex128).ravel(), bins).view(np.float64).reshape(-1, 2)
    out -= log_e[:, None]
    return out


def _kth_largest(x: np.ndarray, j: int) -> float:
    """The value at 0-based position ``j`` of ``x`` sorted descending."""
    return float(np.partition(x, len(x) - 1 - j)[len(x) - 1 - j])


def rank_gumbel_top_k(
    values: np.ndarray,
    k: int,
    log_weight: Callable[[np.ndarray], np.ndarray],
    split: int,
    head: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw ``k`` rows without replacement ∝ ``exp(log_weight(rank))``, rank as in :func:`rank_order`; a row mask.

    Exactly the Gumbel-top-k draw "keep the ``k`` largest ``log_weight(rank_i) − log E_i``",
    with ``E_i ~ Exp(1)`` drawn per row in row order from ``rng`` and ties broken by the lower
    row, over the rows with ``rank_i >= head`` — but without ranking all N rows (the full sort
    dominated the cost at 30M). Rows are binned by value (monotone bins, no sort); a bin's rank
    interval bounds its log-weight, hence each row's key; thresholds estimated from a sample and
    checked by exact counts split the rows into surely in, surely out and a thin band, and only
    the band's bins are sorted to get exact ranks. Every bound is one-sided under IEEE rounding
    (monotone operations), so the result is exactly the full computation's (tests compare).

    Args:
        log_weight: elementwise on float64 ranks, finite for ranks >= head, non-decreasing on
            ``[head, split)`` and non-increasing on ``[split, N)`` as evaluated in floating point.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if not 0 < k <= n - head:
        raise ValueError(f"cannot draw {k} of the {n - head} rows outside a head of {head}")
    bits = int(min(_MAX_BITS, max(10, int(np.log2(max(n, 1))) - 5)))  # ~32+ rows a bin, tables in cache
    bins, counts = _rank_bins(values, bits)
    starts = np.cumsum(counts) - counts
    # Bounds on log_weight over each bin's rank interval [lo, hi] (clipped to the head).
    last = starts + counts - 1
    lo = np.maximum(starts, head)
    live = (counts > 0) & (last >= head)
    f_lo, f_hi = log_weight(lo.astype(np.float64)), log_weight(np.maximum(last, lo).astype(np.float64))
    rising, falling = last < split, lo >= split
    table = np.full((len(counts), 2), -np.inf)  # columns: upper bound, lower bound
    upper = np.where(rising, f_hi, f_lo)
    peak = ~rising & ~falling & live
    if peak.any():  # lo < split <= last: the maximum sits at split - 1 or split
        upper[peak] = float(log_weight(np.array([split - 1.0, float(split)])).max())
    lower = np.where(rising, f_lo, np.where(falling, f_hi, np.minimum(f_lo, f_hi)))
    lower[starts < head] = -np.inf  # part of the bin is in the head
    table[live, 0], table[live, 1] = upper[live], lower[live]

    start_state = rng.bit_generator.state

    def noise():  # (first row, log E) per chunk: the draw's noise, the same stream on every pass
        rng.bit_generator.state = start_state
        for s in range(0, n, _CHUNK):
            g = rng.standard_exponential(min(_CHUNK, n - s))
            yield s, np.log(g, out=g)

    mask = np.zeros(n, dtype=bool)
    step = max(1, n // _SAMPLE)
    while True:
        # Thresholds with t_lo <= T <= t_hi for T the k-th largest true key, checked by counts below.
        if step == 1:  # exact: order statistics of every row's bounds
            bounds = np.concatenate([_row_bounds(table, bins[s : s + len(g)], g) for s, g in noise()])
            t_hi, t_lo = _kth_largest(bounds[:, 0], k - 1), _kth_largest(bounds[:, 1], k - 1)
        else:  # estimated on a sample of rows with noise of its own (i.i.d. like the draw's), with a margin
            rows = np.arange(0, n, step)
            bounds = _row_bounds(table, bins[rows], np.log(np.random.default_rng(_SAMPLE_SEED).standard_exponential(len(rows))))
            m, p = len(rows), k / n
            margin = _MARGIN_SD * np.sqrt(m * p * (1 - p)) + 8
            t_hi = _kth_largest(bounds[:, 0], int(min(m - 1, max(0, np.floor(p * m - margin)))))
            t_lo = _kth_largest(bounds[:, 1], int(min(m - 1, max(0, np.ceil(p * m + margin)))))
        floor = max(t_lo, -np.finfo(np.float64).max)  # rows with upper bound -inf (head) are never needed
        cand, cand_b, cand_g = [], [], []
        for s, g in noise():  # one pass: noise, bounds and the split, chunk by chunk (in cache)
            b = _row_bounds(table, bins[s : s + len(g)], g)
            sure = np.greater(b[:, 1], t_hi, out=mask[s : s + len(g)])  # true key >= lower bound > t_hi
            c = np.flatnonzero((b[:, 0] >= floor) > sure)  # upper bound reaches t_lo, and not sure
            cand.append(c + s)
            cand_b.append(b[c])
            cand_g.append(g[c])
        rows, bounds, log_e = np.concatenate(cand), np.concatenate(cand_b), np.concatenate(cand_g)
        num_sure = int(np.count_nonzero(mask))
        # Every row with upper > t_hi or lower >= t_lo is sure or a candidate: exact counts from those.
        above = num_sure + int(np.count_nonzero(bounds[:, 0] > t_hi))
        reach = num_sure + int(np.count_nonzero(bounds[:, 1] >= t_lo))
        if (above < k and (reach >= k or t_lo == -np.inf)) or step == 1:  # (with step 1 both hold by construction)
            break
        step = 1  # the sample misled (rows sorted by rating, or bad luck): exact thresholds
    need = k - num_sure
    # The same split again inside the candidates, now with exact order statistics.
    t_hi, t_lo = _kth_largest(bounds[:, 0], need - 1), _kth_largest(bounds[:, 1], need - 1)
    sure = bounds[:, 1] > t_hi
    mask[rows[sure]] = True
    need -= int(np.count_nonzero(sure))
    keep = (bounds[:, 0] >= t_lo) & ~sure
    rows, log_e = rows[keep], log_e[keep]
    if need > 0:
        ranks = _exact_ranks(values, bins, starts, rows)
        keys = np.full(len(rows), -np.inf)
        ok = ranks >= head
        keys[ok] = log_weight(ranks[ok].astype(np.float64))
        keys -= log_e
        mask[rows[np.lexsort((rows, -keys))[:need]]] = True
    return mask


def weighted_draw(
    weights: np.ndarray, num_samples: int, replacement: bool, rng: np.random.Generator,
    positive: Optional[np.ndarray] = None,
) -> np.ndarray:
    """``num_samples`` positions drawn ∝ ``weights`` (non-negative), shuffled.

    With replacement: inverse-CDF over a float64 cumulative sum (exact at any N, no 2^24 cap).
    Without: Gumbel-top-k over the positive weights, then a uniform shuffle of the drawn set.
    """
    if positive is None:
        positive = np.flatnonzero(weights > 0)
    w = weights[positive].astype(np.float64, copy=False)
    if replacement:
        cdf = np.cumsum(w)
        u = rng.random(num_samples)
        u *= cdf[-1]
        picked = np.searchsorted(cdf, u, side="right")
        np.minimum(picked, len(cdf) - 1, out=picked)
        return positive[picked]
    if num_samples > len(positive):
        # Too few positive weights (e.g. a curriculum bin at weight 0): Gumbel-top-k over every
        # item takes all positives, then fills uniformly from the zero-weight ones.
        if num_samples > len(weights):
            raise ValueError(f"cannot draw {num_samples} samples without replacement from {len(weights)} items")
        positive = np.arange(len(weights))
        w = weights.astype(np.float64, copy=False)
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    picked = gumbel_top_k(logw, num_samples, rng)
    return permutation(positive[picked], rng)


def permutation(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``values`` (a new array).

    Above a million items, sorting random 32-bit keys packed with positions (SIMD sort, sequential
    memory) beats Fisher–Yates' random access by 2x or more; colliding keys are re-shuffled, so
    the permutation stays uniform.
    """
    n = len(values)
    if n < 1_000_000 or n >= 2**32:
        return rng.permutation(values)
    packed = np.empty(n, dtype=np.uint64)
    halves = packed.view(np.uint32).reshape(n, 2)
    lo, hi = (0, 1) if np.little_endian else (1, 0)
    halves[:, hi] = rng.integers(0, 2**32, size=n, dtype=np.uint32)
    halves[:, lo] = np.arange(n, dtype=np.uint32)
    packed.sort()
    high = halves[:, hi]
    tie = high[1:] == high[:-1]
    pos = halves[:, lo].astype(np.int64)
    del high, halves, packed
    if tie.any():
        # ~n^2 / 2^33 colliding pairs (~26k at 15M): shuffle inside each run of equal keys.
        in_run = np.zeros(n, dtype=bool)
        in_run[1:] |= tie
        in_run[:-1] |= tie
        where = np.flatnonzero(in_run)
        new_run = np.ones(len(where), dtype=bool)
        new_run[1:] = ~tie[where[1:] - 1]
        run_id = np.cumsum(new_run)
        pos[where] = pos[where][np.lexsort((rng.random(len(where)), run_id))]
    return values[pos]
