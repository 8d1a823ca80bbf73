"""The compiled loops of :mod:`anyseg.kernels` (see there), and the entries through which
torch's OpenMP team runs them: C functions ``void(void *descriptor)`` that every thread of
a ``GOMP_parallel`` call runs, each claiming parts of a loop's range ``[0, n)`` (by an
atomic counter) and running ``loop(start, stop, *args)`` on them until none is left.

A descriptor is 64 int64 words, as :func:`anyseg.kernels._run` writes them: ``n``,
the number of parts, the address of the parts counter, then the loop's arguments in order
(an array's address and shape, or an int). Each loop and each entry is compiled, or read
from numba's cache, on its first use (:func:`team_entry`): the loops and their entries
share this file, as numba's cache follows the changes of a function's own file only.
The benchmark's host probe (:func:`multiply_adds`) is here too, compiled and cached alike.
"""

from __future__ import annotations

import functools
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.caching import FunctionCache
from numba.extending import intrinsic


def _disk_cache() -> bool:
    """Whether numba can keep the compiled loops on disk: beside this file, in
    ``NUMBA_CACHE_DIR`` or in the user's cache folder. Where none is writable (a read-only
    install whose user has no writable home) numba would refuse to define them at all;
    they are then compiled in each process instead, with a warning."""
    try:
        FunctionCache(_disk_cache)
    except RuntimeError:
        warnings.warn("anyseg: numba finds no writable folder to cache its compiled CPU loops in (set "
                      "NUMBA_CACHE_DIR to one): they are compiled again in each process (up to ~30 s)", RuntimeWarning)
        return False
    return True


_DISK_CACHE = _disk_cache()
_OPTIONS = {"cache": _DISK_CACHE, "nogil": True, "error_model": "numpy"}


RESIZE_WINDOW = 8
"""Low-res rows :func:`resize_threshold` keeps resized along x (a ring: row r in slot
``r % 8``); an output row reads at most 3 consecutive ones (two stages composed)."""


@numba.njit(**_OPTIONS)
def resize_threshold(start, stop, maps, taps, weights, plan_index, plan_weight, plan_base, threshold, out):
    """Output rows ``[start, stop)`` of every map: ``out[k, i, j] = sum_t x[taps[i, t], j] *
    weights[i, t] > threshold``, where ``x`` is ``maps[k]`` resized along its rows by the
    plan (:func:`_resize_row`), each low-res row once, when an output row needs it."""
    n_taps, width = taps.shape[1], out.shape[2]
    lo, hi = taps[start, 0], taps[start, 0]
    for i in range(start, stop):
        for t in range(n_taps):
            lo, hi = min(lo, taps[i, t]), max(hi, taps[i, t])
    peaks = np.empty(hi + 1 - lo, np.float32)
    window = np.empty((RESIZE_WINDOW, plan_index.shape[1]), np.float32)
    held = np.empty(RESIZE_WINDOW, np.int64)
    for k in range(maps.shape[0]):
        # a bound of each row's resized values: a linear resize takes convex combinations,
        # which exceed their largest term only by rounding (relative, or absolute among
        # subnormals); a bound too high merely skips fewer rows. A NaN either makes the
        # bound NaN (never below the threshold: the row is computed) or is left out (a sign
        # bit set: see _largest); every sample it reaches is NaN, and compares False.
        for r in range(lo, hi + 1):
            m = _largest(maps[k, r])
            peaks[r - lo] = m + abs(m) * np.float32(2**-16) + np.float32(1e-37)
        held[:] = -1
        for i in range(start, stop):
            o = out[k, i]
            # rounding is monotonic: the row's weighted bounds bound each of its pixels exactly
            bound = peaks[taps[i, 0] - lo] * weights[i, 0]
            for t in range(1, n_taps):
                bound += peaks[taps[i, t] - lo] * weights[i, t]
            if bound <= threshold:
                o[:] = False
                continue
            for t in range(n_taps):
                r = taps[i, t]
                if held[r % RESIZE_WINDOW] != r:
                    _resize_row(maps[k, r], window[r % RESIZE_WINDOW], plan_index, plan_weight, plan_base, width)
                    held[r % RESIZE_WINDOW] = r
            # the sums of one stage's taps, or of two composed stages' (3 rows), spelled out (in order)
            a, u = window[taps[i, 0] % RESIZE_WINDOW], weights[i, 0]
            if n_taps == 2:
                b, v = window[taps[i, 1] % RESIZE_WINDOW], weights[i, 1]
                for j in range(width):
                    o[j] = a[j] * u + b[j] * v > threshold
            elif n_taps == 3:
                b, v = window[taps[i, 1] % RESIZE_WINDOW], weights[i, 1]
                c, x = window[taps[i, 2] % RESIZE_WINDOW], weights[i, 2]
                for j in range(width):
                    o[j] = a[j] * u + b[j] * v + c[j] * x > threshold
            else:
                for j in range(width):
                    acc = a[j] * u
                    for t in range(1, n_taps):
                        acc += window[taps[i, t] % RESIZE_WINDOW, j] * weights[i, t]
                    o[j] = acc > threshold


@numba.njit(**_OPTIONS, fastmath={"contract"})
def mask_downscale(start, stop, masks, first, second, eps, out):
    """Rows ``[start, stop)`` of every mask's ``h x w`` grid through SAM's mask downscaling
    up to its last convolution: ``masks`` ``(B, 4h, 4w)`` float32 logits; ``first`` ``(c1,
    7)`` the first 2 x 2 stride-2 convolution's weights over a patch's (di, dj) pixels, its
    bias, and its layer norm's weight and bias; ``second`` ``(c2, 4 c1 + 3)`` the same for
    the second convolution (its weights over (di, dj, channel)); ``eps`` the two norms'
    epsilons; ``out`` ``(B, h w, c2)`` float32. Each norm over the channels, then the exact
    GELU, as LayerNorm2d and nn.GELU compute them (float32; each sum in the order of the
    convolutions' weights). A row of the grid at a time, its values in planes (a channel's
    or a sub-pixel's along the row), so that every step is vectorised along the row."""
    c1, c2 = first.shape[0], second.shape[0]
    h, w = masks.shape[1] // 4, masks.shape[2] // 4
    planes = np.empty((4, 4, w), np.float32)  # the row's 4 mask rows, each by column within its patch
    z = np.empty((4 * c1, w), np.float32)  # first stage, by (di, dj, channel)
    y = np.empty((c2, w), np.float32)
    stats = np.empty((2, w), np.float32)  # the norms' means and standard deviations along the row
    for bi in range(start, stop):
        b, i = bi // h, bi % h
        for a in range(4):
            for j in range(w):
                for q in range(4):
                    planes[a, q, j] = masks[b, 4 * i + a, 4 * j + q]
        for s in range(4):
            di, dj = 2 * (s >> 1), 2 * (s & 1)
            for k in range(c1):
                f = first[k]
                for j in range(w):
                    z[s * c1 + k, j] = (f[4] + f[0] * planes[di, dj, j] + f[1] * planes[di, dj + 1, j]
                                        + f[2] * planes[di + 1, dj, j] + f[3] * planes[di + 1, dj + 1, j])
            _norm_gelu(z[s * c1 : (s + 1) * c1], first[:, 5], first[:, 6], eps[0], stats)
        for o in range(c2):
            g = second[o]
            for j in range(w):
                y[o, j] = g[4 * c1]
            for t in range(4 * c1):
                for j in range(w):
                    y[o, j] += g[t] * z[t, j]
        _norm_gelu(y, second[:, 4 * c1 + 1], second[:, 4 * c1 + 2], eps[1], stats)
        for j in range(w):
            for o in range(c2):
                out[b, i * w + j, o] = y[o, j]


PIL_PRECISION_BITS = 22
"""Fraction bits of Pillow's fixed-point resampling weights for 8-bit images."""


@numba.njit(inline="always")
def _pil_filter(x, cubic):
    """Pillow's bilinear filter, or its bicubic one (a = -0.5), at ``x``: double precision,
    each step as Pillow's C writes it."""
    x = abs(x)
    if not cubic:
        return 1.0 - x if x < 1.0 else 0.0
    if x < 1.0:
        return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


@numba.njit(**_OPTIONS)
def pil_weights(in_size, out_size, cubic):
    """Pillow's bilinear (``cubic``: bicubic) resampling of ``in_size`` samples to
    ``out_size`` (the whole range, as ``Image.resize`` without a box), its arithmetic step
    by step (``precompute_coeffs`` in double precision, then ``normalize_coeffs_8bpc``):
    ``weights`` ``(out_size, K)`` int32 in units of ``2**-22``, zero past each output's
    taps, and ``bounds`` ``(out_size, 2)`` int32, each output's first input and number of
    taps."""
    scale = np.float64(in_size) / out_size
    filter_scale = max(scale, 1.0)
    support = (2.0 if cubic else 1.0) * filter_scale
    inv_scale = 1.0 / filter_scale
    size = int(np.ceil(support)) * 2 + 1
    weights = np.zeros((out_size, size), np.int32)
    bounds = np.zeros((out_size, 2), np.int32)
    k = np.empty(size, np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # int(): C's truncation, as Pillow's casts
        n = min(int(center + support + 0.5), in_size) - lo
        total = 0.0
        for t in range(n):
            k[t] = _pil_filter((np.float64(lo + t) - center + 0.5) * inv_scale, cubic)
            total += k[t]
        for t in range(n):
            v = (k[t] / total if total != 0.0 else k[t]) * (1 << PIL_PRECISION_BITS)
            weights[i, t] = int(v - 0.5) if v < 0 else int(v + 0.5)
        bounds[i, 0], bounds[i, 1] = lo, n
    return weights, bounds


@numba.njit(inline="always")
def _pil_sample(acc):
    """An 8-bit sample from its fixed-point sum (rounding term included), clamped."""
    v = acc >> PIL_PRECISION_BITS
    return np.uint8(0 if v < 0 else (255 if v > 255 else v))


@numba.njit(**_OPTIONS)
def pil_rows(start, stop, src, weights, bounds, out):
    """Pillow's horizontal pass over rows ``[start, stop)``: ``out[r]`` ``(w, 3)``
    uint8 = row ``r`` of ``src`` ``(H, W, 3)`` uint8 resampled along x by
    :func:`pil_weights` ``(w, K)`` / ``bounds``."""
    for r in range(start, stop):
        row, o = src[r], out[r]
        for j in range(weights.shape[0]):
            lo, n = bounds[j, 0], bounds[j, 1]
            a0 = a1 = a2 = np.int32(1 << (PIL_PRECISION_BITS - 1))
            for t in range(n):
                k = weights[j, t]
                a0 += np.int32(row[lo + t, 0]) * k
                a1 += np.int32(row[lo + t, 1]) * k
                a2 += np.int32(row[lo + t, 2]) * k
            o[j, 0], o[j, 1], o[j, 2] = _pil_sample(a0), _pil_sample(a1), _pil_sample(a2)


@numba.njit(**_OPTIONS)
def pil_columns(start, stop, src, weights, bounds, out):
    """Pillow's vertical pass over output rows ``[start, stop)``: ``out[i]`` ``(W, 3)`` uint8
    = the rows ``bounds[i, 0]`` on of ``src`` ``(H, W, 3)`` uint8 weighted by
    :func:`pil_weights` ``(h, K)``; vectorised along the row."""
    m = src.shape[1] * 3
    acc = np.empty(m, np.int32)
    for i in range(start, stop):
        lo, n = bounds[i, 0], bounds[i, 1]
        acc[:] = 1 << (PIL_PRECISION_BITS - 1)
        for t in range(n):
            k, row = weights[i, t], src[lo + t].reshape(m)
            for j in range(m):
                acc[j] += np.int32(row[j]) * k
        o = out[i].reshape(m)
        for j in range(m):
            o[j] = _pil_sample(acc[j])


@numba.njit(**_OPTIONS)
def pil_pass(start, stop, vertical, src, weights, bounds, out):
    """:func:`pil_columns` (``vertical``) or :func:`pil_rows` over ``[start, stop)``."""
    if vertical:
        pil_columns(start, stop, src, weights, bounds, out)
    else:
        pil_rows(start, stop, src, weights, bounds, out)


@numba.njit(**_OPTIONS)
def normalize_pad(start, stop, image, divisor, mean, std, out):
    """Rows ``[start, stop)`` of ``out`` ``(3, S, S)`` float32 = ``(x - mean) / std`` per
    channel, ``x`` the float32 of ``image / divisor`` (``image`` ``(h, w, 3)`` uint8,
    ``divisor`` a float32; divided in float64, as numpy divides, the rest in float32, as
    torch computes), at the top left, zero elsewhere."""
    h, w = image.shape[0], image.shape[1]
    for i in range(start, stop):
        for c in range(3):
            o = out[c, i]
            if i < h:
                m, s, row = mean[c], std[c], image[i]
                for j in range(w):
                    o[j] = (np.float32(np.float64(row[j, c]) / np.float64(divisor)) - m) / s
                o[w:] = 0
            else:
                o[:] = 0


@numba.njit(inline="always")
def _norm_gelu(v, weight, bias, eps, stats):
    """``v`` ``(C, n)`` float32, n values of C channels, = ``gelu(weight * (v - mean) /
    sqrt(var + eps) + bias)`` over the channels, in place: LayerNorm2d then nn.GELU (the
    exact, erf form), vectorised along the n. ``stats`` ``(2, n)``: room for the means and
    standard deviations."""
    c, n = v.shape
    mean, std = stats[0], stats[1]
    mean[:] = 0
    std[:] = 0
    for k in range(c):
        for j in range(n):
            mean[j] += v[k, j]
    for j in range(n):
        mean[j] /= np.float32(c)
    for k in range(c):
        for j in range(n):
            d = v[k, j] - mean[j]
            std[j] += d * d
    for j in range(n):
        std[j] = np.sqrt(std[j] / np.float32(c) + eps)
    for k in range(c):
        for j in range(n):
            u = weight[k] * ((v[k, j] - mean[j]) / std[j]) + bias[k]
            v[k, j] = np.float32(0.5) * u * (np.float32(1) + _erf(u * np.float32(0.7071067811865476)))


@numba.njit(inline="always")
def _erf(x):
    """erf of a float32 ``x`` within 6e-7 (Abramowitz and Stegun 7.1.26, evaluated in
    float32; torch's CPU erf is within 3e-8), in vectorisable arithmetic."""
    t = np.float32(1) / (np.float32(0.3275911) * abs(x) + np.float32(1))
    r = np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        r = r * t + np.float32(c)
    e = np.float32(1) - r * t * _exp_neg(-x * x)
    return e if x >= 0 else -e


@numba.njit(inline="always")
def _select(e, x0, x1, x2, x3, x4):
    """``(x0, ..., x4)[e]`` as selects (vectorisable), not a gather."""
    return x0 if e == 0 else (x1 if e == 1 else (x2 if e == 2 else (x3 if e == 3 else x4)))


@numba.njit(inline="always")
def _resize_row(row, dst, plan_index, plan_weight, plan_base, width):
    """``row`` resized along x into ``dst[:width]`` by the plan's taps, each sample
    ``fma(x[i0], w0, fma(x[i1], w1, ... x[iT] * wT))`` (with two taps, torch's CPU kernel's
    arithmetic to the bit). With chunks (``plan_base[0] >= 0``; two or three taps), each 16
    samples read 5 consecutive inputs from ``plan_base[chunk]`` on, and ``plan_index`` holds
    offsets into those (selected, not gathered: several times faster); else the indices."""
    n_taps = plan_index.shape[0]
    i0, w0, i1, w1 = plan_index[0], plan_weight[0], plan_index[1], plan_weight[1]
    if plan_base[0] >= 0:
        i2, w2 = plan_index[n_taps - 1], plan_weight[n_taps - 1]
        for c in range(-(-width // 16)):
            b = plan_base[c]
            x0, x1, x2, x3, x4 = row[b], row[b + 1], row[b + 2], row[b + 3], row[b + 4]
            if n_taps == 2:
                for jj in range(16):  # a constant count: the loop is unrolled into vectors
                    j = 16 * c + jj
                    dst[j] = _fma(_select(i0[j], x0, x1, x2, x3, x4), w0[j],
                                  _select(i1[j], x0, x1, x2, x3, x4) * w1[j])
            else:
                for jj in range(16):
                    j = 16 * c + jj
                    last = _select(i2[j], x0, x1, x2, x3, x4) * w2[j]
                    dst[j] = _fma(_select(i0[j], x0, x1, x2, x3, x4), w0[j],
                                  _fma(_select(i1[j], x0, x1, x2, x3, x4), w1[j], last))
    else:
        for j in range(width):
            acc = row[plan_index[n_taps - 1, j]] * plan_weight[n_taps - 1, j]
            for t in range(n_taps - 2, -1, -1):
                acc = _fma(row[plan_index[t, j]], plan_weight[t, j], acc)
            dst[j] = acc


# the 32-term dot products may be summed in any order
@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def mask_product(start, stop, words, bf16, gelu, table, hyper, h, w, out):
    c = hyper.shape[2]
    wide = np.empty(c, np.uint32)
    row = wide.view(np.float32)
    for bi in range(start, stop):  # (mask batch, row of the h x w grid)
        b, i = bi // h, bi % h
        for j in range(w):
            base = (i * w + j) * 16
            for s in range(16):
                if gelu:  # bf16 words through the activation's table
                    for ch in range(c):
                        wide[ch] = np.uint32(table[words[b, base + s, ch]]) << 16
                elif bf16:
                    for ch in range(c):
                        wide[ch] = np.uint32(words[b, base + s, ch]) << 16
                else:  # float32: two words each
                    for ch in range(c):
                        wide[ch] = _float32_bits(words[b, base + s, 2 * ch], words[b, base + s, 2 * ch + 1])
                y = 4 * i + 2 * (s >> 3) + ((s >> 1) & 1)
                x = 4 * j + 2 * ((s >> 2) & 1) + (s & 1)
                for m in range(hyper.shape[1]):
                    acc = np.float32(0)
                    for ch in range(c):
                        acc += row[ch] * hyper[b, m, ch]
                    out[b, m, y, x] = acc


@numba.njit(inline="always")
def _bf16_bits(bits):
    """float32 bits rounded to the nearest bf16, ties to even (as torch rounds): the upper
    16 bits of the result (integer arithmetic, so the loops around it vectorise). A NaN stays
    a NaN as long as its low 16 bits are zero, as they are for NaNs made from bf16 inputs."""
    return (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


@numba.njit(inline="always")
def _float32_bits(low, high):
    """The bits of a little-endian float32 stored as two 16-bit words, low word first."""
    return np.uint32(low) | np.uint32(high) << np.uint32(16)


@numba.njit(inline="always")
def _widen(word):
    """The float32 value of a bf16 word."""
    return _as_float(np.uint32(word) << np.uint32(16))


@numba.njit(inline="always")
def _narrow(value):
    """The bf16 word nearest a float32 value (:func:`_bf16_bits`)."""
    return np.uint16(_bf16_bits(_as_bits(value)) >> np.uint32(16))


@numba.njit(inline="always")
def _norm_rows(x, start, r, weight, bias, eps, scale, shift, y):
    """``y[start : start + r]`` (``x``'s own rows where ``y`` has none) = the layer norm of
    the bf16 rows ``x[start : start + r]``, rounded to bf16 (float32 statistics in two
    passes; ``scale`` and ``shift`` hold the rows' 1 / std and -mean / std). The rows go in
    groups, so that their sums' reductions overlap (one row's alone is a chain of dependent
    steps)."""
    c = x.shape[1]
    for k in range(r):
        xi = x[start + k]
        total = np.float32(0)
        for j in range(c):
            total += _widen(xi[j])
        mean = total / np.float32(c)
        total = np.float32(0)
        for j in range(c):
            d = _widen(xi[j]) - mean
            total += d * d
        scale[k] = np.float32(1) / np.sqrt(total / np.float32(c) + eps)
        shift[k] = -mean * scale[k]
    for k in range(r):
        xi, a, b = x[start + k], scale[k], shift[k]
        if y.shape[0]:
            yi = y[start + k]
            for j in range(c):
                yi[j] = _narrow((_widen(xi[j]) * a + b) * weight[j] + bias[j])
        else:  # in place: through x itself (an alias of x passed as y would defeat vectorisation)
            for j in range(c):
                xi[j] = _narrow((_widen(xi[j]) * a + b) * weight[j] + bias[j])


_GROUP = 4  # rows per group of _norm_rows


# the row sums may be taken in any order. The results are read back in loops of their own
# (the GELU lookups, the sum): a loop that also wrote them would not vectorise.
@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def layer_norm(start, stop, x, weight, bias, eps, gelu, table, addend, y, y_plus, q, q_scale):
    """``y`` (``x`` itself where ``y`` has no rows) = the layer norm of ``x``, then
    (``gelu``) its GELU from ``table``; and, where ``y_plus`` has rows, ``y_plus`` =
    ``y + addend`` (``addend``'s rows repeating), and where ``q`` has rows, ``q`` and
    ``q_scale`` = ``y_plus``'s symmetric int8 rows (as :func:`quantize_rows`)."""
    scale, shift = np.empty(_GROUP, np.float32), np.empty(_GROUP, np.float32)
    row = np.empty(x.shape[1], np.float32)
    out = y if y.shape[0] else x
    for i in range(start, stop, _GROUP):
        r = min(_GROUP, stop - i)
        _norm_rows(x, i, r, weight, bias, eps, scale, shift, y)
        for k in range(r):
            yi = out[i + k]
            if gelu:
                for j in range(x.shape[1]):
                    yi[j] = table[yi[j]]
            if y_plus.shape[0]:
                pi, ai = y_plus[i + k], addend[(i + k) % addend.shape[0]]
                for j in range(x.shape[1]):
                    pi[j] = _narrow(_widen(yi[j]) + _widen(ai[j]))
                if q.shape[0]:
                    wide = row.view(np.uint32)
                    for j in range(x.shape[1]):
                        wide[j] = np.uint32(pi[j]) << np.uint32(16)
                    q_scale[i + k] = _quantize_row(row, q[i + k])


# Cephes' expf: e^x = 2^k e^r with k = round(x / ln 2) and |r| <= ln 2 / 2 (ln 2 in two
# parts, so that r is exact), e^r by a degree-7 polynomial: within about 1 ulp of float32.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_EXP_POLY = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                          1.6666665459e-1, 5.0000001201e-1))


@numba.njit(inline="always")
def _exp_neg(x):
    """e^x for a float32 ``x <= 0`` (0 from -87 down: below float32's normal range, which
    the softmax's terms there do not reach in any case; -inf, a masked score, among them),
    in vectorisable arithmetic."""
    y = max(x, np.float32(-87.0))  # keeps the exponent's bits in range
    k = np.floor(y * _LOG2E + np.float32(0.5))
    r = y - k * _LN2_HI - k * _LN2_LO
    p = _EXP_POLY[0]
    for c in _EXP_POLY[1:]:
        p = p * r + c
    e = (p * r * r + r + np.float32(1)) * _as_float(np.uint32(np.int32(k) + np.int32(127)) << np.uint32(23))
    return np.float32(0) if x < np.float32(-87.0) else e  # a NaN stays a NaN


@numba.njit(inline="always")
def _ordered(bits):
    """int32 float bits with a negative value's magnitude bits flipped, so that they order as
    the floats do, and back (the map is its own inverse). The casts keep the arithmetic in
    32 bits (numba widens integer operations to 64, which halves the vector lanes)."""
    return np.int32(bits ^ np.int32((bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@numba.njit(inline="always")
def _largest(s):
    """The largest of the float32 values ``s``, as the largest of their bits made to order
    (:func:`_ordered`): an integer maximum vectorises, a float one is a chain of dependent
    steps (its NaN rules kept). A NaN with its sign bit clear is the largest; one with it
    set, the smallest."""
    top = np.int32(-(2**31))
    for j in range(s.shape[0]):
        top = max(top, _ordered(np.int32(_as_bits(s[j]))))
    return _as_float(np.uint32(_ordered(top)))


# the row's maximum and sum may be taken in any order
@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def softmax(start, stop, x, addend):
    """Rows ``x[start:stop]`` (bf16 words) = the softmax of ``x + addend`` along the row,
    ``addend``'s rows repeating (none: no addend), computed in float32 and rounded to bf16
    once."""
    n = x.shape[1]
    s = np.empty(n, np.float32)
    for i in range(start, stop):
        xi = x[i]
        if addend.shape[0]:
            ai = addend[i % addend.shape[0]]
            for j in range(n):
                s[j] = _widen(xi[j]) + _widen(ai[j])
        else:
            for j in range(n):
                s[j] = _widen(xi[j])
        m = _largest(s)
        total = np.float32(0)
        for j in range(n):
            s[j] = _exp_neg(s[j] - m)
            total += s[j]
        inv = np.float32(1) / total
        for j in range(n):
            xi[j] = _narrow(s[j] * inv)


# The token side of the mask decoder's two-way transformer (kernels.token_*): a prompt's
# few tokens, float32. Each attention's parameters come as one packed vector
# (kernels.attention_pack); products are sums along the inputs, in any order.


@numba.njit(inline="always")
def _affine(x, weight, bias, out):
    """``out[t, o] = x[t] . weight[o] + bias[o]``: ``x`` ``(T, n)``, ``weight`` ``(m, n)`` (a
    linear layer's), ``out`` ``(T, m)``. Eight sums at a time in registers, of two outputs
    of four rows (of four outputs of one row where there are fewer than four; outputs past
    the end repeat the last): each load serves several products (one output of one row at
    a time: 1.75x as long)."""
    rows, m = x.shape[0], weight.shape[0]
    t = 0
    while t + 4 <= rows:
        x0, x1, x2, x3 = x[t], x[t + 1], x[t + 2], x[t + 3]
        for o in range(0, m, 2):
            p = min(o + 1, m - 1)
            w0, w1 = weight[o], weight[p]
            a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = np.float32(0)
            for i in range(w0.shape[0]):
                u, v = w0[i], w1[i]
                a0 += x0[i] * u
                a1 += x1[i] * u
                a2 += x2[i] * u
                a3 += x3[i] * u
                c0 += x0[i] * v
                c1 += x1[i] * v
                c2 += x2[i] * v
                c3 += x3[i] * v
            out[t, o], out[t + 1, o], out[t + 2, o], out[t + 3, o] = a0 + bias[o], a1 + bias[o], a2 + bias[o], a3 + bias[o]
            out[t, p], out[t + 1, p], out[t + 2, p], out[t + 3, p] = c0 + bias[p], c1 + bias[p], c2 + bias[p], c3 + bias[p]
        t += 4
    for r in range(t, rows):
        xr = x[r]
        for o in range(0, m, 4):
            o1, o2, o3 = min(o + 1, m - 1), min(o + 2, m - 1), min(o + 3, m - 1)
            w0, w1, w2, w3 = weight[o], weight[o1], weight[o2], weight[o3]
            a0 = a1 = a2 = a3 = np.float32(0)
            for i in range(w0.shape[0]):
                a0 += xr[i] * w0[i]
                a1 += xr[i] * w1[i]
                a2 += xr[i] * w2[i]
                a3 += xr[i] * w3[i]
            out[r, o], out[r, o1], out[r, o2], out[r, o3] = a0 + bias[o], a1 + bias[o1], a2 + bias[o2], a3 + bias[o3]


@numba.njit(inline="always")
def _norm_into(x, weight, bias, eps, out):
    """``out`` = the layer norm of the rows of ``x`` ``(T, C)`` (two passes for the
    statistics)."""
    n = np.float32(x.shape[1])
    for t in range(x.shape[0]):
        xt, o = x[t], out[t]
        total = np.float32(0)
        for v in xt:
            total += v
        mean = total / n
        total = np.float32(0)
        for v in xt:
            total += (v - mean) * (v - mean)
        inv = np.float32(1) / np.sqrt(total / n + eps)
        for i in range(x.shape[1]):
            o[i] = (xt[i] - mean) * inv * weight[i] + bias[i]


@numba.njit(inline="always")
def _add_terms(row, a, weight, lo, n):
    """``row[j] += sum_e a[lo + e] * weight[lo + e, j]`` over ``e < n`` (a head's part of a
    product with ``n`` terms), four terms a pass: a pass per term would store ``row`` n
    times (2.5x as long)."""
    e = 0
    while e + 4 <= n:
        a0, a1, a2, a3 = a[lo + e], a[lo + e + 1], a[lo + e + 2], a[lo + e + 3]
        w0, w1, w2, w3 = weight[lo + e], weight[lo + e + 1], weight[lo + e + 2], weight[lo + e + 3]
        for j in range(row.shape[0]):
            row[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j]
        e += 4
    for k in range(e, n):
        ak, wk = a[lo + k], weight[lo + k]
        for j in range(row.shape[0]):
            row[j] += ak * wk[j]


@numba.njit(inline="always")
def _attention_views(pack, c, d, heads):
    """The parameters in ``pack`` (:func:`anyseg.kernels.attention_pack`) of an attention
    of width ``c``, internal width ``d`` and ``heads`` heads: ``q``, ``k``, ``v`` weights ``(d,
    c)`` and biases, the output weight ``(c, d)``, its bias, its transpose ``(d, c)``, then a
    norm's weight and bias; and the heads' width and its ``^-0.5``, the scores' scale."""
    sizes = (d * c, d, d * c, d, d * c, d, c * d, c, d * c, c, c)
    parts = []
    i = 0
    for n in sizes:
        parts.append(pack[i:i + n])
        i += n
    views = (parts[0].reshape((d, c)), parts[1], parts[2].reshape((d, c)), parts[3], parts[4].reshape((d, c)),
             parts[5], parts[6].reshape((c, d)), parts[7], parts[8].reshape((d, c)), parts[9], parts[10])
    dh = d // heads
    return views, dh, np.float32(dh**-0.5)


@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def token_self_attention(start, stop, x, pe, skip_pe, heads, width, pack, eps, out):
    """Items ``[start, stop)`` of ``out`` ``(B, T, C)`` = ``norm(x + attn(x + pe, x + pe, x))``
    for tokens ``x`` and their encoding ``pe`` ``(B, T, C)`` (``skip_pe``: ``norm(attn(x, x,
    x))``), ``attn`` of ``heads`` heads and internal width ``width``."""
    t, c = x.shape[1], x.shape[2]
    (wq, bq, wk, bk, wv, bv, wo, bo, _, nw, nb), dh, scale = _attention_views(pack, c, width, heads)
    qin, y = np.empty((t, c), np.float32), np.empty((t, c), np.float32)
    q, k = np.empty((t, width), np.float32), np.empty((t, width), np.float32)
    v, o = np.empty((t, width), np.float32), np.empty((t, width), np.float32)
    s = np.empty(t, np.float32)
    for b in range(start, stop):
        xb = x[b]
        for i in range(t):
            for j in range(c):
                qin[i, j] = xb[i, j] if skip_pe else xb[i, j] + pe[b, i, j]
        _affine(qin, wq, bq, q)
        _affine(qin, wk, bk, k)
        _affine(xb, wv, bv, v)
        for hh in range(heads):
            lo = hh * dh
            for i in range(t):
                top = -np.inf
                for j in range(t):
                    acc = np.float32(0)
                    for e in range(dh):
                        acc += q[i, lo + e] * k[j, lo + e]
                    s[j] = acc * scale
                    top = max(top, s[j])
                total = np.float32(0)
                for j in range(t):
                    s[j] = np.exp(s[j] - top)
                    total += s[j]
                o[i, lo:lo + dh] = 0
                for j in range(t):
                    p = s[j] / total
                    for e in range(dh):
                        o[i, lo + e] += p * v[j, lo + e]
        _affine(o, wo, bo, y)
        if not skip_pe:
            for i in range(t):
                for j in range(c):
                    y[i, j] += xb[i, j]
        _norm_into(y, nw, nb, eps, out[b])


@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def token_queries(start, stop, x, pe, heads, width, pack, projected, out):
    """Items ``[start, stop)`` of a token -> image attention's queries, ``(x + pe) W_q + b_q``
    per head scaled by ``d^-0.5`` (``d = width / heads``), row ``h T + t`` of ``out`` each:
    ``projected``, as they are, ``out`` ``(B, heads T, d)``; else folded into the key
    projection, ``q_h W_k,h`` ``out`` ``(B, heads T, C)``."""
    t, c = x.shape[1], x.shape[2]
    (wq, bq, wk, _, _, _, _, _, _, _, _), dh, scale = _attention_views(pack, c, width, heads)
    u, qp = np.empty((t, c), np.float32), np.empty((t, width), np.float32)
    for b in range(start, stop):
        for i in range(t):
            for j in range(c):
                u[i, j] = x[b, i, j] + pe[b, i, j]
        _affine(u, wq, bq, qp)
        for hh in range(heads):
            lo = hh * dh
            for i in range(t):
                row = out[b, hh * t + i]
                if projected:
                    for e in range(dh):
                        row[e] = qp[i, lo + e] * scale
                    continue
                row[:] = 0
                _add_terms(row, qp[i], wk, lo, dh)
                for j in range(c):
                    row[j] *= scale


@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def token_attention_out(start, stop, x, pv, heads, width, pack, projected, eps, out):
    """Items ``[start, stop)`` of ``out`` ``(B, T, C)`` = ``norm(x + o W_o + b_o)``, where a
    token -> image attention's per-head results ``o`` come from ``pv`` (row ``h T + t``):
    ``projected``, ``pv`` ``(B, heads T, d)`` is ``o``; else ``pv`` ``(B, heads T, C)`` is the
    attention over the unprojected image tokens, ``o_h = pv_h W_v,h^T + b_v,h``."""
    t, c = x.shape[1], x.shape[2]
    (_, _, _, _, wv, bv, wo, bo, _, nw, nb), dh, _ = _attention_views(pack, c, width, heads)
    a, y = np.empty((t, width), np.float32), np.empty((t, c), np.float32)
    for b in range(start, stop):
        for hh in range(heads):
            lo, rows = hh * dh, pv[b, hh * t:(hh + 1) * t]
            if projected:  # element by element: numba's slice assignment takes ~3 s more to compile
                for i in range(t):
                    for e in range(dh):
                        a[i, lo + e] = rows[i, e]
            else:
                _affine(rows, wv[lo:lo + dh], bv[lo:lo + dh], a[:, lo:lo + dh])
        _affine(a, wo, bo, y)
        for i in range(t):
            for j in range(c):
                y[i, j] += x[b, i, j]
        _norm_into(y, nw, nb, eps, out[b])


@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def token_keys(start, stop, x, m, pe, heads, width, pack, projected, eps, out, fold_q, bias, values):
    """Items ``[start, stop)`` of ``out`` ``(B, T, C)`` = ``norm(x + m)``, and of an image ->
    token attention's token side for keys ``out + pe`` and values ``out`` (row ``h T + t``
    each, ``d = width / heads``): its key projections per head scaled by ``d^-0.5``,
    ``k_h``, as they are in ``fold_q`` ``(B, heads T, d)`` (``projected``), else folded into
    the query projection, ``fold_q`` ``(B, heads T, C)`` = ``k_h W_q,h`` and ``bias``
    ``(B, heads T)`` = ``k_h . b_q,h``; and ``values`` ``(B, heads T, C)`` = ``v_h W_o,h^T +
    b_o / heads``, the value projections folded into the output projection."""
    t, c = x.shape[1], x.shape[2]
    (wq, bq, wk, bk, wv, bv, _, bo, wot, nw, nb), dh, scale = _attention_views(pack, c, width, heads)
    y, u = np.empty((t, c), np.float32), np.empty((t, c), np.float32)
    kh, vh = np.empty((t, width), np.float32), np.empty((t, width), np.float32)
    for b in range(start, stop):
        for i in range(t):
            for j in range(c):
                y[i, j] = x[b, i, j] + m[b, i, j]
        ob = out[b]
        _norm_into(y, nw, nb, eps, ob)
        for i in range(t):
            for j in range(c):
                u[i, j] = ob[i, j] + pe[b, i, j]
        _affine(u, wk, bk, kh)
        _affine(ob, wv, bv, vh)
        for hh in range(heads):
            lo = hh * dh
            for i in range(t):
                row = hh * t + i
                f = fold_q[b, row]
                if projected:
                    for e in range(dh):
                        f[e] = kh[i, lo + e] * scale
                else:
                    f[:] = 0
                    _add_terms(f, kh[i], wq, lo, dh)
                    acc = np.float32(0)
                    for e in range(dh):
                        acc += kh[i, lo + e] * bq[lo + e]
                    for j in range(c):
                        f[j] *= scale
                    bias[b, row] = acc * scale
                vr = values[b, row]
                for j in range(c):
                    vr[j] = bo[j] / np.float32(heads)
                _add_terms(vr, vh[i], wot, lo, dh)


@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def token_mlps(start, stop, x, dims, pack, first, out):
    """MLPs ``[start, stop)`` of a stack of K, from MLP ``first`` of ``pack`` on (ReLUs
    between the layers, a NaN kept), each on its rows: ``x`` ``(K, R, dims[0])``, ``out``
    ``(K, R, dims[-1])``; ``dims`` the layers' widths, ``pack`` each MLP's layers' weights
    ``(out, in)`` and biases in turn (:func:`anyseg.kernels.mlp_pack`)."""
    per = 0
    for n in range(len(dims) - 1):
        per += dims[n + 1] * (dims[n] + 1)
    rows, layers = x.shape[1], len(dims) - 1
    for k in range(start, stop):
        i = (first + k) * per
        cur = x[k]
        for n in range(layers):
            width = dims[n + 1]
            weight = pack[i:i + width * dims[n]].reshape((width, dims[n]))
            bias = pack[i + width * dims[n]:i + width * (dims[n] + 1)]
            i += width * (dims[n] + 1)
            nxt = out[k] if n == layers - 1 else np.empty((rows, width), np.float32)
            _affine(cur, weight, bias, nxt)
            if n < layers - 1:
                for r in range(rows):
                    for j in range(width):
                        nxt[r, j] = np.float32(0) if nxt[r, j] < 0 else nxt[r, j]
            cur = nxt


_COLUMNS = 512  # columns per pass of product_softmax's softmax across rows


# the maxima and sums may be taken in any order; the scores are finite (int32 products
# times finite scales), which lets the maxima vectorise
@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract", "nnan", "ninf", "nsz"})
def product_softmax(start, stop, acc, row_scale, col_scale, bias, group, out):
    """Rows of ``out`` (bf16 words) = the softmax of the scores ``acc[i, j] * row_scale[i] *
    col_scale[j] + bias[i]`` (int32 products ``acc``), in float32, rounded to bf16 once:
    along each row where ``group`` is 1 (rows ``[start, stop)``), else across each group of
    ``group`` consecutive rows, column by column (groups ``[start, stop)``)."""
    n = acc.shape[1]
    if group == 1:
        s = np.empty(n, np.float32)
        for i in range(start, stop):
            a, o, rs, b = acc[i], out[i], row_scale[i], bias[i]
            for j in range(n):
                s[j] = np.float32(a[j]) * (rs * col_scale[j]) + b
            m = _largest(s)
            total = np.float32(0)
            for j in range(n):
                s[j] = _exp_neg(s[j] - m)
                total += s[j]
            inv = np.float32(1) / total
            for j in range(n):
                o[j] = _narrow(s[j] * inv)
        return
    width = min(n, _COLUMNS)
    s = np.empty((group, width), np.float32)
    m, inv = np.empty(width, np.float32), np.empty(width, np.float32)
    for g in range(start, stop):
        for c0 in range(0, n, width):
            w = min(width, n - c0)
            cs = col_scale[c0 : c0 + w]
            for t in range(group):
                r, st = g * group + t, s[t]
                a, rs, b = acc[r, c0 : c0 + w], row_scale[r], bias[r]
                for j in range(w):
                    st[j] = np.float32(a[j]) * (rs * cs[j]) + b
            for j in range(w):
                m[j] = s[0, j]
            for t in range(1, group):
                st = s[t]
                for j in range(w):
                    m[j] = max(m[j], st[j])
            for j in range(w):
                inv[j] = np.float32(0)
            for t in range(group):
                st = s[t]
                for j in range(w):
                    st[j] = _exp_neg(st[j] - m[j])
                    inv[j] += st[j]
            for j in range(w):
                inv[j] = np.float32(1) / inv[j]
            for t in range(group):
                st, o = s[t], out[g * group + t, c0 : c0 + w]
                for j in range(w):
                    o[j] = _narrow(st[j] * inv[j])


# a row's largest magnitude may be found in any order
@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def quantize_rows(start, stop, words, bf16, q, scale):
    """Rows ``q[start:stop]`` (int8) and ``scale`` (float32) = the symmetric int8 rows of
    ``words`` (bf16 words, or float32 as pairs of words where not ``bf16``): ``q = round(x /
    scale)`` with ``scale = max |x| / 127`` per row (1 for a row of zeros)."""
    k = q.shape[1]
    row = np.empty(k, np.float32)
    wide = row.view(np.uint32)
    for i in range(start, stop):
        w = words[i]
        if bf16:
            for j in range(k):
                wide[j] = np.uint32(w[j]) << np.uint32(16)
        else:  # float32: two words each
            for j in range(k):
                wide[j] = _float32_bits(w[2 * j], w[2 * j + 1])
        scale[i] = _quantize_row(row, q[i])


@numba.njit(inline="always")
def _quantize_row(row, qi):
    """``qi`` (int8) = ``round(row / scale)`` for float32 values ``row``, with ``scale = max
    |row| / 127`` (1 for a row of zeros), which is returned."""
    # the largest magnitude as the largest of the bits without the sign: non-negative floats
    # order as their bits do, and an integer maximum vectorises (a float one would be a
    # chain of dependent steps, its NaN rules kept)
    wide = row.view(np.uint32)
    top_bits = np.uint32(0)
    for j in range(row.shape[0]):
        top_bits = max(top_bits, np.uint32(wide[j] & np.uint32(0x7FFFFFFF)))  # 32-bit lanes (see _ordered)
    top = _as_float(top_bits)
    inv = np.float32(127) / top if top > 0 else np.float32(0)
    for j in range(row.shape[0]):
        qi[j] = np.int8(np.int32(np.rint(row[j] * inv)))
    return top / np.float32(127) if top > 0 else np.float32(1)


@numba.njit(**_OPTIONS, fastmath={"contract"})
def dequantize_rows(start, stop, acc, row_scale, col_scale, bias, addend, first, out):
    """Rows ``out[start:stop]`` (bf16 words) = ``acc * row_scale[i] * col_scale[j] + bias[j]``
    for int32 products ``acc``, plus ``addend`` (bf16 words, its rows repeating from row
    ``first``: row i adds ``addend[(first + i) % P]``; none: no rows), rounded to bf16 once."""
    for i in range(start, stop):
        a, o, s = acc[i], out[i], row_scale[i]
        if addend.shape[0]:
            e = addend[(first + i) % addend.shape[0]]
            for j in range(acc.shape[1]):
                o[j] = _narrow(np.float32(a[j]) * (s * col_scale[j]) + bias[j] + _widen(e[j]))
        else:
            for j in range(acc.shape[1]):
                o[j] = _narrow(np.float32(a[j]) * (s * col_scale[j]) + bias[j])


@numba.njit(**_OPTIONS, fastmath={"reassoc", "contract"})
def multiply_adds(x, y, reps):
    """``reps`` passes of float32 multiply-adds over ``x`` and ``y`` (sizes a multiple of
    16), into 16 sums: :func:`anyseg.bench.host_probe`'s fixed work."""
    acc = np.zeros(16, np.float32)
    for _ in range(reps):
        for i in range(0, x.size, 16):
            for k in range(16):
                acc[k] += x[i + k] * y[i + k]
    return acc.sum()


@intrinsic
def _as_float(typingctx, bits):
    """The float32 whose bits are the uint32 ``bits``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _as_bits(typingctx, value):
    """The bits of the float32 ``value``, as a uint32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` of float32s, rounded once."""

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32] * 3)), args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def _pointer(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.int64), codegen


@intrinsic
def _claim(typingctx, address):
    """Atomically add one to the int64 at ``address``; its value before."""

    def codegen(context, builder, signature, args):
        counter = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", counter, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(types.int64), codegen


@functools.cache
def team_entry(name: str) -> int:
    """The address of loop ``name``'s team entry (the function ``name + "_team"`` below) as
    a C function, compiled, or read from numba's cache, on its first use: an entry compiles
    its loop with it, and a process compiles only those it runs."""
    return numba.cfunc(types.void(types.voidptr), nopython=True, cache=_DISK_CACHE)(globals()[name + "_team"]).address


def team_loops() -> list[str]:
    """The loops that have team entries."""
    return [name.removesuffix("_team") for name in globals() if name.endswith("_team")]


@numba.njit(inline="always")
def _next_part(d):
    """The next unclaimed part of the range ``[0, d[0])`` as ``(start, stop)`` (no part is
    empty); ``(n, n)`` when none is left."""
    n, parts = d[0], d[1]
    part = _claim(d[2])
    if part >= parts:
        return n, n
    return n * part // parts, n * (part + 1) // parts


_gettid = types.ExternalFunction("gettid", types.int32())  # glibc's (2.30 on)


@numba.njit(**_OPTIONS)
def thread_ids(start, stop, tids):
    """``tids[start:stop]`` = the (Linux) id of the thread that runs this."""
    for i in range(start, stop):
        tids[i] = _gettid()


def thread_ids_team(data):
    # one part per thread (the others' entries run parts until none is left): each thread
    # of the team writes its id once
    d = numba.carray(data, (64,), np.int64)
    tids = numba.carray(_pointer(d[3]), (d[4],), np.int64)
    start, stop = _next_part(d)
    thread_ids(start, stop, tids)


def resize_threshold_team(data):
    d = numba.carray(data, (64,), np.int64)
    maps = numba.carray(_pointer(d[3]), (d[4], d[5], d[6]), np.float32)
    taps = numba.carray(_pointer(d[7]), (d[8], d[9]), np.int64)
    weights = numba.carray(_pointer(d[10]), (d[11], d[12]), np.float32)
    plan_index = numba.carray(_pointer(d[13]), (d[14], d[15]), np.int32)
    plan_weight = numba.carray(_pointer(d[16]), (d[17], d[18]), np.float32)
    plan_base = numba.carray(_pointer(d[19]), (d[20],), np.int64)
    threshold = numba.carray(_pointer(d[21]), (d[22],), np.float32)[0]
    out = numba.carray(_pointer(d[23]), (d[24], d[25], d[26]), np.bool_)
    start, stop = _next_part(d)
    while start < stop:
        resize_threshold(start, stop, maps, taps, weights, plan_index, plan_weight, plan_base, threshold, out)
        start, stop = _next_part(d)


def mask_product_team(data):
    d = numba.carray(data, (64,), np.int64)
    words = numba.carray(_pointer(d[3]), (d[4], d[5], d[6]), np.uint16)
    table = numba.carray(_pointer(d[9]), (d[10],), np.uint16)
    hyper = numba.carray(_pointer(d[11]), (d[12], d[13], d[14]), np.float32)
    out = numba.carray(_pointer(d[17]), (d[18], d[19], d[20], d[21]), np.float32)
    start, stop = _next_part(d)
    while start < stop:
        mask_product(start, stop, words, d[7] != 0, d[8] != 0, table, hyper, d[15], d[16], out)
        start, stop = _next_part(d)


def layer_norm_team(data):
    d = numba.carray(data, (64,), np.int64)
    x = numba.carray(_pointer(d[3]), (d[4], d[5]), np.uint16)
    weight = numba.carray(_pointer(d[6]), (d[7],), np.float32)
    bias = numba.carray(_pointer(d[8]), (d[9],), np.float32)
    eps = numba.carray(_pointer(d[10]), (d[11],), np.float32)[0]
    table = numba.carray(_pointer(d[13]), (d[14],), np.uint16)
    addend = numba.carray(_pointer(d[15]), (d[16], d[17]), np.uint16)
    y = numba.carray(_pointer(d[18]), (d[19], d[20]), np.uint16)
    y_plus = numba.carray(_pointer(d[21]), (d[22], d[23]), np.uint16)
    q = numba.carray(_pointer(d[24]), (d[25], d[26]), np.int8)
    q_scale = numba.carray(_pointer(d[27]), (d[28],), np.float32)
    start, stop = _next_part(d)
    while start < stop:
        layer_norm(start, stop, x, weight, bias, eps, d[12] != 0, table, addend, y, y_plus, q, q_scale)
        start, stop = _next_part(d)


def softmax_team(data):
    d = numba.carray(data, (64,), np.int64)
    x = numba.carray(_pointer(d[3]), (d[4], d[5]), np.uint16)
    addend = numba.carray(_pointer(d[6]), (d[7], d[8]), np.uint16)
    start, stop = _next_part(d)
    while start < stop:
        softmax(start, stop, x, addend)
        start, stop = _next_part(d)


def quantize_rows_team(data):
    d = numba.carray(data, (64,), np.int64)
    words = numba.carray(_pointer(d[3]), (d[4], d[5]), np.uint16)
    q = numba.carray(_pointer(d[7]), (d[8], d[9]), np.int8)
    scale = numba.carray(_pointer(d[10]), (d[11],), np.float32)
    start, stop = _next_part(d)
    while start < stop:
        quantize_rows(start, stop, words, d[6] != 0, q, scale)
        start, stop = _next_part(d)


def dequantize_rows_team(data):
    d = numba.carray(data, (64,), np.int64)
    acc = numba.carray(_pointer(d[3]), (d[4], d[5]), np.int32)
    row_scale = numba.carray(_pointer(d[6]), (d[7],), np.float32)
    col_scale = numba.carray(_pointer(d[8]), (d[9],), np.float32)
    bias = numba.carray(_pointer(d[10]), (d[11],), np.float32)
    addend = numba.carray(_pointer(d[12]), (d[13], d[14]), np.uint16)
    out = numba.carray(_pointer(d[16]), (d[17], d[18]), np.uint16)
    start, stop = _next_part(d)
    while start < stop:
        dequantize_rows(start, stop, acc, row_scale, col_scale, bias, addend, d[15], out)
        start, stop = _next_part(d)


def product_softmax_team(data):
    d = numba.carray(data, (64,), np.int64)
    acc = numba.carray(_pointer(d[3]), (d[4], d[5]), np.int32)
    row_scale = numba.carray(_pointer(d[6]), (d[7],), np.float32)
    col_scale = numba.carray(_pointer(d[8]), (d[9],), np.float32)
    bias = numba.carray(_pointer(d[10]), (d[11],), np.float32)
    out = numba.carray(_pointer(d[13]), (d[14], d[15]), np.uint16)
    start, stop = _next_part(d)
    while start < stop:
        product_softmax(start, stop, acc, row_scale, col_scale, bias, d[12], out)
        start, stop = _next_part(d)


def mask_downscale_team(data):
    d = numba.carray(data, (64,), np.int64)
    masks = numba.carray(_pointer(d[3]), (d[4], d[5], d[6]), np.float32)
    first = numba.carray(_pointer(d[7]), (d[8], d[9]), np.float32)
    second = numba.carray(_pointer(d[10]), (d[11], d[12]), np.float32)
    eps = numba.carray(_pointer(d[13]), (d[14],), np.float32)
    out = numba.carray(_pointer(d[15]), (d[16], d[17], d[18]), np.float32)
    start, stop = _next_part(d)
    while start < stop:
        mask_downscale(start, stop, masks, first, second, eps, out)
        start, stop = _next_part(d)


def pil_pass_team(data):
    d = numba.carray(data, (64,), np.int64)
    src = numba.carray(_pointer(d[4]), (d[5], d[6], d[7]), np.uint8)
    weights = numba.carray(_pointer(d[8]), (d[9], d[10]), np.int32)
    bounds = numba.carray(_pointer(d[11]), (d[12], d[13]), np.int32)
    out = numba.carray(_pointer(d[14]), (d[15], d[16], d[17]), np.uint8)
    start, stop = _next_part(d)
    while start < stop:
        pil_pass(start, stop, d[3] != 0, src, weights, bounds, out)
        start, stop = _next_part(d)


def normalize_pad_team(data):
    d = numba.carray(data, (64,), np.int64)
    image = numba.carray(_pointer(d[3]), (d[4], d[5], d[6]), np.uint8)
    divisor = numba.carray(_pointer(d[7]), (d[8],), np.float32)[0]
    mean = numba.carray(_pointer(d[9]), (d[10],), np.float32)
    std = numba.carray(_pointer(d[11]), (d[12],), np.float32)
    out = numba.carray(_pointer(d[13]), (d[14], d[15], d[16]), np.float32)
    start, stop = _next_part(d)
    while start < stop:
        normalize_pad(start, stop, image, divisor, mean, std, out)
        start, stop = _next_part(d)
