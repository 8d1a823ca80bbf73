"""Compiled CPU loops for the memory-bound steps of a click, where a chain of torch
operations would pass over large arrays several times (or reorder them element by element).

Each loop is compiled by numba on first use (importing anyseg does not import numba; the
machine code is cached on disk) and releases the GIL. A large loop's outer range is split
across ``torch.get_num_threads()`` Python threads (numba's own parallel layers are not safe
everywhere a server may call from several threads); a small one (a click's masks) runs on
the calling thread alone: torch's OpenMP workers keep spinning for a while after each torch
operation, and a helper thread sharing a core with them made a click slower, not faster.
Callers keep the torch form of each step for other devices and for autograd.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_pool: tuple[ThreadPoolExecutor, int] | None = None  # the helper threads and their count
SPLIT_WORK = 1 << 25
"""Multiply-adds from which a loop is split across threads. Measured on 2 cores: a click's
mask product (4 masks, 2^23; a multimask click now makes 3) and resize (3 masks of
1800 x 1200, up to 2^24.6) ran faster on one thread; 12 such masks' resize (2^25.6) and 16 prompts' mask product (2^27) ran
1.2-1.4x faster on two, 64 prompts' product (2^29) 1.7x."""


@functools.cache
def _compiled(name: str):
    import numba

    options = {"cache": True, "nogil": True, "error_model": "numpy"}
    if name == "mask_product":  # the 32-term dot products may be summed in any order
        options["fastmath"] = {"reassoc", "contract"}
    return numba.njit(**options)(globals()["_" + name])


def _run_split(name: str, n: int, work: int, *args) -> None:
    """``loop(start, stop, *args)`` over ``[0, n)``: in up to ``torch.get_num_threads()``
    parts at once (one on this thread) when its ``work`` (multiply-adds) reaches
    :data:`SPLIT_WORK`, else on this thread."""
    global _pool
    loop = _compiled(name)
    parts = max(1, min(torch.get_num_threads(), n)) if work >= SPLIT_WORK else 1
    bounds = [n * p // parts for p in range(parts + 1)]
    if parts > 1 and (_pool is None or _pool[1] < parts - 1):
        _pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="anyseg-kernel"), parts - 1
    others = [_pool[0].submit(loop, bounds[p], bounds[p + 1], *args) for p in range(1, parts)]
    loop(bounds[0], bounds[1], *args)
    for job in others:
        job.result()


def blend_rows_threshold(rows: np.ndarray, peaks: np.ndarray, taps: np.ndarray, weights: np.ndarray,
                         threshold: float, out: np.ndarray) -> None:
    """``out[k, i] = sum_t rows[k, taps[i, t]] * weights[i, t] > threshold`` (summed in
    order of t) for ``rows`` ``(K, h, W)`` float32 with their maxima ``peaks`` ``(K, h)``,
    ``taps`` / ``weights`` ``(H, T)`` (weights non-negative) and ``out`` ``(K, H, W)`` bool.

    An output row is written all False without visiting its pixels when the same weighted
    sum of its rows' maxima is not above the threshold: rounding is monotonic, so that sum
    bounds every pixel of the row exactly (most rows of a mask are background).
    """
    _run_split("blend_rows_threshold", out.shape[1], out.size * taps.shape[1], rows, peaks, taps, weights,
               np.float32(threshold), out)


def _blend_rows_threshold(start, stop, rows, peaks, taps, weights, threshold, out):
    n_taps = taps.shape[1]
    for i in range(start, stop):
        for k in range(rows.shape[0]):
            o = out[k, i]
            bound = peaks[k, taps[i, 0]] * weights[i, 0]
            for t in range(1, n_taps):
                bound += peaks[k, taps[i, t]] * weights[i, t]
            if bound <= threshold:
                o[:] = False
                continue
            # one pass per row: the sums of one or two stages' taps spelled out (in order)
            a, u = rows[k, taps[i, 0]], weights[i, 0]
            if n_taps == 2:
                b, v = rows[k, taps[i, 1]], weights[i, 1]
                for j in range(o.shape[0]):
                    o[j] = a[j] * u + b[j] * v > threshold
            elif n_taps == 4:
                b, v = rows[k, taps[i, 1]], weights[i, 1]
                c, x = rows[k, taps[i, 2]], weights[i, 2]
                d, y = rows[k, taps[i, 3]], weights[i, 3]
                for j in range(o.shape[0]):
                    o[j] = a[j] * u + b[j] * v + c[j] * x + d[j] * y > threshold
            else:
                for j in range(o.shape[0]):
                    acc = a[j] * u
                    for t in range(1, n_taps):
                        acc += rows[k, taps[i, t], j] * weights[i, t]
                    o[j] = acc > threshold


def mask_product(features: torch.Tensor, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Masks from upscaled features in the blocked pixel order of two 2x2 transposed
    convolutions: ``features`` ``(B, 16 h w, C)`` (fp32 or bf16; row ``16 (i w + j) + 4 s1
    + s2`` is pixel ``(4 i + 2 (s1 >> 1) + (s2 >> 1), 4 j + 2 (s1 & 1) + (s2 & 1))``),
    ``hyper`` ``(B, K, C)``: ``(B, K, 4h, 4w)`` float32 logits, written in raster order
    directly (the same as ``features @ hyper^T`` reordered, in about half the time)."""
    b, _, c = features.shape
    out = torch.empty(b, hyper.shape[1], 4 * h, 4 * w)
    bits = features.dtype == torch.bfloat16  # numpy has no bf16: its bits, widened in the loop
    feats = (features.view(torch.uint16) if bits else features.float()).contiguous().numpy()
    _run_split("mask_product", b * h, out.numel() * c, feats, bits, hyper.float().contiguous().numpy(), h, w,
               out.numpy())
    return out


def _mask_product(start, stop, feats, bits, hyper, h, w, out):
    c = feats.shape[2]
    wide = np.empty(c, np.uint32)
    row = wide.view(np.float32)
    for bi in range(start, stop):  # (mask batch, row of the h x w grid)
        b, i = bi // h, bi % h
        for j in range(w):
            base = (i * w + j) * 16
            for s in range(16):
                if bits:
                    for ch in range(c):
                        wide[ch] = np.uint32(feats[b, base + s, ch]) << 16
                else:
                    for ch in range(c):
                        row[ch] = feats[b, base + s, ch]
                y = 4 * i + 2 * (s >> 3) + ((s >> 1) & 1)
                x = 4 * j + 2 * ((s >> 2) & 1) + (s & 1)
                for m in range(hyper.shape[1]):
                    acc = np.float32(0)
                    for ch in range(c):
                        acc += row[ch] * hyper[b, m, ch]
                    out[b, m, y, x] = acc
