"""Compiled CPU loops for the memory-bound steps of a click, where a chain of torch
operations would pass over large arrays several times (or reorder them element by element),
for the bf16 encoders' softmax over short rows, where torch's per-row cost dominates, for
the int8 linear layers' quantizing and dequantizing passes (each one pass, where torch
would take several), for a mask prompt's downscaling (float32, where torch takes a
dozen small operations), and for the mask decoder's small MLPs and its transformer's token
side on a few tokens (where torch's per-call cost dominates).

The loops are in :mod:`anyseg._loops`, compiled by numba on first use (importing anyseg
does not import numba; the machine code is cached on disk). Where torch runs on GNU OpenMP
(its Linux builds), a loop's outer range is split across torch's own OpenMP team
(``torch.get_num_threads()`` threads): the loops follow torch operations, whose worker
threads are still spinning, so the split starts at once (a helper thread of ours would
have to share a core with one of them: slower, not faster). Elsewhere a loop runs on the
calling thread. Callers keep the torch form of each step for other devices and for
autograd.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


@functools.cache
def _team() -> ctypes.CDLL | None:
    """torch's OpenMP runtime, when it is the one GNU OpenMP library loaded in this process
    (torch's Linux builds), else None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libgomp" in line}
    except OSError:  # not Linux
        return None
    if len(paths) != 1:
        return None
    lib = ctypes.CDLL(paths.pop())  # already loaded: the same library, the same team
    lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.GOMP_parallel.restype = None
    return lib


def _run(name: str, n: int, *args, parts_per_thread: int = 1) -> None:
    """``loop(start, stop, *args)`` over ``[0, n)``: in ``torch.get_num_threads()`` parts
    (times ``parts_per_thread``, each thread claiming the next part as it is free) on
    torch's OpenMP team where there is one (:func:`_team`), else on this thread. An
    argument is an int, a float32 scalar, a contiguous array, or a contiguous CPU tensor (a
    bf16 one the loop reads as 16-bit words): the team's entries take a tensor's memory as
    it is, which is quicker than making an array of it (this is per call, and a click makes
    a dozen)."""
    from anyseg import _loops  # compiled (or read from numba's cache) on first use

    threads = torch.get_num_threads()
    parts = min(threads * parts_per_thread, n)
    team = _team() if parts > 1 else None
    if team is None:
        getattr(_loops, name)(0, n, *(_array(arg) if isinstance(arg, torch.Tensor) else arg for arg in args))
        return
    # the descriptor of _loops' team entries: n, parts, the parts counter's address, the arguments
    words, keep = [n, parts, 0], []
    for arg in args:
        if isinstance(arg, torch.Tensor):
            assert arg.is_contiguous() and arg.device.type == "cpu"
            words += [arg.data_ptr(), *arg.shape]
            continue
        if isinstance(arg, np.float32):
            arg = np.array([arg])
        if isinstance(arg, np.ndarray):
            assert arg.flags.c_contiguous
            words += [arg.ctypes.data, *arg.shape]
            keep.append(arg)
        else:
            words.append(int(arg))
    assert len(words) < 63, "a team entry's descriptor holds 62 words of arguments"
    descriptor = np.zeros(64, np.int64)
    descriptor[: len(words)] = words
    descriptor[2] = descriptor.ctypes.data + 8 * 63  # the counter: the last word, zero
    # torch's team, however many parts: a thread per part would share the CPUs
    team.GOMP_parallel(_loops.team_entry(name), descriptor.ctypes.data, min(threads, parts), 0)


def loops_cached() -> bool:
    """Whether numba keeps the compiled loops on disk (else each process compiles its own)."""
    from anyseg import _loops

    return _loops._DISK_CACHE


def compile_team_entries() -> None:
    """Compile every loop's team entry now, or read it from numba's cache (each is otherwise
    compiled on its first use): see :func:`anyseg.models.mask_decoder.compile_loops`."""
    from anyseg import _loops

    for name in _loops.team_loops():
        _loops.team_entry(name)


PLACEMENT_ENV = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY")
"""Variables by which the environment places OpenMP threads itself (set to anything, e.g.
``OMP_PROC_BIND=false``, :func:`bound_threads` leaves placement alone)."""


@functools.cache
def _process_cpus() -> tuple[int, ...]:
    """The CPUs the process may run on (its first thread's, read before any binding here)."""
    return tuple(sorted(os.sched_getaffinity(os.getpid())))


# (calling thread's id, team size) -> whether its team's workers could be placed
_teams_placed: dict[tuple[int, int], bool] = {}


@contextmanager
def bound_threads() -> Iterator[None]:
    """Within this context, the calling thread and the other threads of its torch OpenMP team
    run on one CPU each: the caller on the process's first CPU (its own CPUs back after),
    the team's workers on the others (kept there). Only where the team has as many threads
    as the process has CPUs (two or more), on GNU OpenMP (:func:`_team`), and the
    environment does not place the threads itself (:data:`PLACEMENT_ENV`); else nothing.

    Unplaced, a worker woken after idle time may be queued on the CPU of the thread that
    woke it, which spins there waiting for it, for milliseconds until the scheduler moves
    one of them (on a virtual machine, whose idle CPUs look busy to the guest, often):
    paired clicks after 0.1 s idle 2-4% faster placed, on the 2-core AMD EPYC host.
    """
    cpus = _placement()
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus[:1])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _placement() -> tuple[int, ...] | None:
    """The process's CPUs where :func:`bound_threads` places threads (the team's workers
    placed on first use by each calling thread), else None."""
    n = torch.get_num_threads()
    if n < 2 or any(name in os.environ for name in PLACEMENT_ENV) or _team() is None:
        return None
    cpus = _process_cpus()
    if len(cpus) != n:
        return None
    key = (threading.get_native_id(), n)
    if key not in _teams_placed:
        tids = np.zeros(n, np.int64)
        _run("thread_ids", n, tids)
        try:
            for tid, cpu in zip([t for t in tids.tolist() if t != key[0]], cpus[1:]):
                os.sched_setaffinity(tid, (cpu,))
            _teams_placed[key] = True
        except OSError:  # not allowed here (a container's policy): leave placement to the system
            _teams_placed[key] = False
    return cpus if _teams_placed[key] else None


def placement_env(threads: int) -> dict[str, str]:
    """The environment under which OpenMP places a process's team of ``threads`` threads one
    per CPU from its start, where :func:`bound_threads` would place anyseg's (this process's
    CPUs and environment): ``OMP_PROC_BIND=close``, ``OMP_PLACES=threads``; else empty. For
    processes that run other torch code beside anyseg's (the official side of ``anyseg
    bench``: both sides then run with the same placement)."""
    if threads < 2 or threads != len(_process_cpus()) or any(name in os.environ for name in PLACEMENT_ENV):
        return {}
    return {"OMP_PROC_BIND": "close", "OMP_PLACES": "threads"}


def loops_apply(*tensors: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether the loops here (of ``dtype`` values: bf16 but for :func:`mask_downscale`)
    stand in for torch's operations on ``tensors``: all of ``dtype`` on the CPU, with no
    gradients recorded and not while torch's compiler traces (callers keep torch's form
    otherwise)."""
    return (not torch.is_grad_enabled() and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
            and not torch.compiler.is_compiling())


def _array(t: torch.Tensor) -> np.ndarray:
    """A contiguous CPU tensor as the array a loop reads (bf16 as 16-bit words)."""
    assert t.is_contiguous() and t.device.type == "cpu"  # as the team's entries require
    t = t.detach()
    return (t.view(torch.uint16) if t.dtype == torch.bfloat16 else t).numpy()


@functools.cache
def _no_rows(dtype: torch.dtype, *columns: int) -> torch.Tensor:
    """A tensor of no rows (of ``columns``): for a loop, an argument not given."""
    return torch.empty(0, *columns, dtype=dtype)


def _words(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's memory as 16-bit words (numpy has no bf16), contiguous."""
    return t.detach().contiguous().view(torch.uint16).numpy()


def resize_threshold(maps: np.ndarray, taps: np.ndarray, weights: np.ndarray, plan: tuple[np.ndarray, ...],
                     threshold: float, out: np.ndarray) -> None:
    """``out[k, i] = sum_t x[taps[i, t]] * weights[i, t] > threshold`` (summed in order of
    t) where ``x`` is ``maps[k]`` ``(h, w)`` float32 resized along its rows by ``plan`` (see
    :func:`anyseg.predictors.transforms.horizontal_plan`): ``taps`` / ``weights`` ``(H, T)``
    (weights non-negative), ``out`` ``(K, H, W)`` bool.

    Each low-res row is resized when an output row first needs it, into a small window
    that stays in the caches (no resized map is written). An output row is written all
    False without visiting its pixels when the same weighted sum of its rows' bounds (their
    maxima, up to rounding) is not above the threshold: rounding is monotonic, so that sum
    bounds every pixel of the row exactly (most rows of a mask are background), and the
    rows it reads are not even resized.
    """
    _run("resize_threshold", out.shape[1], maps, taps, weights, *plan, np.float32(threshold), out)


@functools.lru_cache(maxsize=32)
def _pil_weights(in_size: int, out_size: int, cubic: bool) -> tuple[np.ndarray, np.ndarray]:
    from anyseg import _loops

    return _loops.pil_weights(in_size, out_size, cubic)


def _pil_pass(src: np.ndarray, out_hw: tuple[int, int], cubic: bool) -> np.ndarray:
    """One of Pillow's two passes: ``src`` ``(H, W, 3)`` uint8 to ``out_hw``, which differs
    from its size in one dimension at most (``src`` itself where in none)."""
    (h, w), (hh, ww) = src.shape[:2], out_hw
    assert h == hh or w == ww, "a pass resizes along one dimension"
    if (h, w) == (hh, ww):
        return src
    out = np.empty((hh, ww, 3), np.uint8)
    weights = _pil_weights(h, hh, cubic) if h != hh else _pil_weights(w, ww, cubic)
    _run("pil_pass", hh, h != hh, src, *weights, out, parts_per_thread=4)
    return out


def pil_resize_normalize(image: np.ndarray, out_hw: tuple[int, int], size: int, vertical_first: bool, *,
                         cubic: bool = False, divisor: float = 1.0, mean: tuple[float, ...],
                         std: tuple[float, ...]) -> torch.Tensor:
    """``image`` ``(H, W, 3)`` uint8 RGB resized to ``out_hw`` ``(h, w)`` by Pillow's
    bilinear filter (``cubic``: bicubic) as ``Image.resize`` does it (its bytes), then
    ``(x - mean) / std`` per channel, ``x`` the float32 of ``value / divisor`` computed in
    float64, at the top left of a zero ``(3, size, size)`` float32 tensor: SAM 1's input
    (divisor 1), SAM 2's video frames (255, the square).

    Pillow resizes in two passes, each a fixed-point sum, along x then along y
    (``vertical_first``: the other way round): the result depends on the order, which the
    caller takes from its Pillow. Here each pass is split across torch's threads, in parts
    several per thread (a worker woken after idle time starts late and takes fewer), and
    the normalising and padding are one more pass. On the 2-core AMD host, 1800 x 1200 to
    1024 x 683 and the 1024 square: ~19 -> ~8 ms (Pillow resizes on one thread, and torch
    then makes four passes over the image)."""
    src = np.ascontiguousarray(image)
    (h0, w0), (h, w) = src.shape[:2], out_hw
    for hw in [(h, w0), (h, w)] if vertical_first else [(h0, w), (h, w)]:
        src = _pil_pass(src, hw, cubic)
    out = torch.empty(3, size, size)
    assert np.float32(divisor) == divisor, "the loop takes the divisor as a float32"
    _run("normalize_pad", size, src, np.float32(divisor), np.array(mean, np.float32),
         np.array(std, np.float32), out)
    return out


def mask_product(features: torch.Tensor, hyper: torch.Tensor, h: int, w: int, gelu: bool = False) -> torch.Tensor:
    """Masks from upscaled features in the blocked pixel order of two 2x2 transposed
    convolutions: ``features`` ``(B, 16 h w, C)`` (fp32 or bf16; row ``16 (i w + j) + 4 s1
    + s2`` is pixel ``(4 i + 2 (s1 >> 1) + (s2 >> 1), 4 j + 2 (s1 & 1) + (s2 & 1))``),
    ``hyper`` ``(B, K, C)``: ``(B, K, 4h, 4w)`` float32 logits, written in raster order
    directly (the same as ``features @ hyper^T`` reordered, in about half the time).
    ``gelu``: the product is of ``gelu(features)`` (bf16 only; see :func:`gelu_words`)."""
    b = features.shape[0]
    out = torch.empty(b, hyper.shape[1], 4 * h, 4 * w)
    bf16 = features.dtype == torch.bfloat16
    assert bf16 or not gelu, "the activation's table is of bf16 values"
    # the loop reads 16-bit words: one per bf16 value, two per float32
    words = features.contiguous() if bf16 else _words(features.float())
    _run("mask_product", b * h, words, bf16, gelu, gelu_words(), hyper.float().contiguous(), h, w, out)
    return out


def mask_downscale(masks: torch.Tensor, downscaling: torch.nn.Sequential) -> torch.Tensor:
    """SAM's mask downscaling (``Conv2d(1, c1, 2, 2)``, LayerNorm2d, GELU, ``Conv2d(c1, c2,
    2, 2)``, LayerNorm2d, GELU; its last convolution left out) of float32 mask logits
    ``masks`` ``(B, 1, 4h, 4w)``, in one pass: ``(B, h w, c2)`` float32, channels last (the
    modules' output as tokens). The modules' dozen small operations cost more than their
    arithmetic: for a 256 x 256 mask in a refinement click on the 2-core AMD host 1.0 ->
    0.35 ms."""
    conv1, norm1, _, conv2, norm2, _ = downscaling[:6]
    c1, c2 = len(conv1.weight), len(conv2.weight)
    b, _, hh, ww = masks.shape
    first = torch.cat([conv1.weight.reshape(c1, 4), torch.stack([conv1.bias, norm1.weight, norm1.bias], 1)], 1)
    second = torch.cat([conv2.weight.permute(0, 2, 3, 1).reshape(c2, 4 * c1),
                        torch.stack([conv2.bias, norm2.weight, norm2.bias], 1)], 1)
    out = torch.empty(b, (hh // 4) * (ww // 4), c2)
    eps = np.array([norm1.eps, norm2.eps], np.float32)
    _run("mask_downscale", b * (hh // 4), masks.reshape(b, hh, ww).contiguous(), first.float().contiguous(),
         second.float().contiguous(), eps, out)
    return out


@functools.cache
def gelu_words() -> np.ndarray:
    """Torch's exact GELU of every bf16 value, as a table of bf16 words indexed by the
    input's word (65536 entries, computed once by torch): a lookup is the same function as
    torch's bf16 GELU, to the bit, and on CPU costs less than evaluating it."""
    every = torch.from_numpy(np.arange(2**16, dtype=np.uint16).view(np.int16)).view(torch.bfloat16)
    return _words(torch.nn.functional.gelu(every))


def _norm_params(norm: torch.nn.Module) -> list:
    """An affine layer norm's weight, bias (float32 tensors) and epsilon (float32)."""
    return [norm.weight.float().contiguous(), norm.bias.float().contiguous(), np.float32(norm.eps)]


def layer_norm(x: torch.Tensor, norm: torch.nn.Module, gelu: bool = False, in_place: bool = False) -> torch.Tensor:
    """``norm(x)`` over the last axis of bf16 ``x`` ``(..., C)``, for an affine layer norm
    ``norm`` (``weight`` and ``bias`` ``(C,)``, ``eps``): float32 statistics, the result
    rounded to bf16 as torch rounds it (the statistics may differ from torch's in float32
    rounding). ``gelu``: ``gelu(norm(x))``, the GELU of the rounded result as torch's
    (:func:`gelu_words`). ``in_place``: written over contiguous ``x`` (its lines are in
    the caches already: no new buffer of a few MB to bring in), which is returned."""
    return _layer_norm(x, norm, gelu, None, in_place)[0]


def layer_norm_plus(x: torch.Tensor, norm: torch.nn.Module, addend: torch.Tensor, in_place: bool = False,
                    int8: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, y + addend)`` with ``y = norm(x)`` as :func:`layer_norm` (``in_place``: ``y``
    is ``x``), in one pass: ``x`` ``(B, N, C)``, ``addend`` ``(1, N, C)``, both bf16; the
    sum rounded to bf16 as torch rounds it. ``int8``: ``(q, scale)``, int8 ``(B N, C)`` and
    float32 ``(B N,)``, filled in the same pass with the sum's symmetric int8 rows (as
    :func:`quantize_rows` makes them)."""
    return _layer_norm(x, norm, False, addend, in_place, int8)


def _layer_norm(x: torch.Tensor, norm: torch.nn.Module, gelu: bool, addend: torch.Tensor | None,
                in_place: bool, int8: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, y + addend)`` from the one norm loop (an empty second result without ``addend``)."""
    c = x.shape[-1]
    if in_place:
        assert x.is_contiguous(), "a norm in place needs x's own (contiguous) memory"
    none = _no_rows(x.dtype, c)
    y = x if in_place else torch.empty(x.shape, dtype=x.dtype)
    y_plus = none if addend is None else torch.empty(x.shape, dtype=x.dtype)
    # given no rows for y, the loop writes over x
    rows = [t.contiguous().view(-1, c) for t in (x, none if addend is None else addend, none if in_place else y, y_plus)]
    q, scale = (_no_rows(torch.int8, c), _no_rows(torch.float32)) if int8 is None else int8
    assert q.is_contiguous() and q.shape[0] in (0, rows[0].shape[0]) and len(scale) == len(q)
    _run("layer_norm", rows[0].shape[0], rows[0], *_norm_params(norm), gelu, gelu_words(), *rows[1:], q, scale)
    return y, y_plus


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 rows of a 2-D bf16 or float32 CPU tensor ``x`` ``(M, K)``: ``(q, scale)``,
    ``q`` ``(M, K)`` int8 = ``round(x / scale)``, ``scale`` ``(M,)`` float32 = each row's
    largest magnitude / 127 (1 for a row of zeros), in one pass over ``x``."""
    bf16 = x.dtype == torch.bfloat16
    assert bf16 or x.dtype == torch.float32, "int8 rows are made of bf16 or float32 values"
    q = torch.empty(x.shape, dtype=torch.int8)
    scale = torch.empty(x.shape[0])
    _run("quantize_rows", x.shape[0], x.contiguous() if bf16 else _words(x), bf16, q, scale)
    return q, scale


def dequantize_rows(acc: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor, bias: torch.Tensor,
                    addend: torch.Tensor | None = None, first: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """``acc * row_scale[:, None] * col_scale + bias (+ addend)`` as bf16, for int32 products
    ``acc`` ``(M, N)``, float32 ``row_scale`` ``(M,)``, ``col_scale`` and ``bias`` ``(N,)``, and
    bf16 ``addend`` rows ``(P, N)`` that repeat along ``acc``'s rows from row ``first`` on
    (row ``i`` adds ``addend[(first + i) % P]``): one pass, one rounding. Written into
    ``out`` (bf16, contiguous ``(M, N)``) when given."""
    out = torch.empty(acc.shape, dtype=torch.bfloat16) if out is None else out
    extra = _no_rows(torch.bfloat16, acc.shape[1]) if addend is None else addend.contiguous().view(-1, acc.shape[1])
    assert out.is_contiguous() and out.shape == acc.shape
    _run("dequantize_rows", acc.shape[0], acc.contiguous(), row_scale.contiguous(), col_scale.contiguous(),
         bias.contiguous(), extra, first, out)
    return out


def product_softmax(acc: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor, bias: torch.Tensor,
                    group: int = 1) -> torch.Tensor:
    """The softmax of attention scores from an int8 product: ``softmax(acc * row_scale[:, None]
    * col_scale + bias[:, None])`` for int32 products ``acc`` ``(R, N)``, float32 ``row_scale``
    and ``bias`` ``(R,)``, ``col_scale`` ``(N,)``: along the rows where ``group`` is 1, else
    across each group of ``group`` consecutive rows (``(R / group, group, N)``, the softmax
    along the middle axis). bf16 ``(R, N)``, computed in float32 and rounded once (in one
    pass: the scores are never written)."""
    out = torch.empty(acc.shape, dtype=torch.bfloat16)
    n = acc.shape[0] // group
    _run("product_softmax", n, acc.contiguous(), row_scale.contiguous(), col_scale.contiguous(), bias.contiguous(),
         group, out)
    return out


def softmax_(x: torch.Tensor, addend: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(x + addend, -1)`` written over bf16 ``x`` (contiguous, rows ``(..., n)``),
    which is returned; ``addend`` ``(P, n)`` bf16 rows that repeat along ``x``'s rows (row
    ``i`` adds ``addend[i % P]``). In float32 from the bf16 inputs to one rounding (torch
    rounds ``x + addend`` to bf16 first), with an exp within about 1 ulp of float32's: the
    same bf16 results as torch's softmax, but for the odd last-bit rounding. Faster than
    torch's on rows of every length the models have (AMD EPYC, two threads: 3x on rows of
    16, whose per-row cost dominates torch's; 1.4x on 196; 1.14x on 4096; 1.02x on 28k)."""
    assert x.is_contiguous(), "a softmax in place needs x's own (contiguous) memory"
    n = x.shape[-1]
    rows = x.view(-1, n)
    extra = _no_rows(torch.bfloat16, n) if addend is None else addend.contiguous().view(-1, n)
    _run("softmax", rows.shape[0], rows, extra)
    return x


def tokens_apply(*tensors: torch.Tensor) -> bool:
    """Whether the token loops below stand in for torch's operations on float32 ``tensors``
    (as :func:`loops_apply`)."""
    return loops_apply(*tensors, dtype=torch.float32)


def attention_pack(attn: torch.nn.Module, norm: torch.nn.Module) -> np.ndarray:
    """The parameters of a mask decoder attention ``attn`` and of the layer norm ``norm`` of
    its step, float32 in one vector, as the token loops read them: the weight and bias of
    ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``, the output weight transposed, the
    norm's weight and bias."""
    layers = (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj)
    parts = [t for layer in layers for t in (layer.weight, layer.bias)]
    parts += [attn.out_proj.weight.t(), norm.weight, norm.bias]
    return torch.cat([t.detach().float().reshape(-1) for t in parts]).numpy()


# The token side of the mask decoder's two-way transformer, for a click's few tokens: each
# step (an attention's token-side products, its softmax over a few tokens, a residual and a
# layer norm) is one loop call instead of dozens of torch operations, whose per-call cost is
# most of their time there. float32, the products summed in another order than torch's.


def _floats(t: torch.Tensor, shape: torch.Size | None = None) -> np.ndarray:
    """A float32 CPU tensor without gradients (broadcast to ``shape``) as a contiguous array:
    the token loops' inputs, each call's few microseconds of conversions kept short."""
    if shape is not None and t.shape != shape:
        t = t.expand(shape)
    return t.contiguous().numpy()


def _token_loop(name: str, b: int, *args) -> None:
    """The token loop ``name`` over the ``b`` items, on this thread (a few tokens each)."""
    from anyseg import _loops

    getattr(_loops, name)(0, b, *args)


def token_self_attention(x: torch.Tensor, pe: torch.Tensor, skip_pe: bool, attn: torch.nn.Module,
                         pack: np.ndarray, eps: float) -> torch.Tensor:
    """``norm(x + attn(x + pe, x + pe, x))`` (``skip_pe``: ``norm(attn(x, x, x))``) for tokens
    ``x`` and ``pe`` ``(B, T, C)``; ``pack`` of ``attn`` and ``norm`` (:func:`attention_pack`),
    ``eps`` the norm's: ``(B, T, C)``."""
    out = np.empty(x.shape, np.float32)
    _token_loop("token_self_attention", len(x), _floats(x), _floats(pe, x.shape), skip_pe, attn.num_heads,
                attn.internal_dim, pack, np.float32(eps), out)
    return torch.from_numpy(out)


def token_queries(x: torch.Tensor, pe: torch.Tensor, attn: torch.nn.Module, pack: np.ndarray,
                  projected: bool) -> torch.Tensor:
    """A token -> image attention's queries for tokens ``x + pe`` ``(B, T, C)``, scaled, per
    head (row ``h T + t``): ``projected``, ``(B, heads T, d)``; else folded into the key
    projection, ``(B, heads T, C)`` (the scores are their products with the image tokens)."""
    b, t, c = x.shape
    h = attn.num_heads
    out = np.empty((b, h * t, attn.internal_dim // h if projected else c), np.float32)
    _token_loop("token_queries", b, _floats(x), _floats(pe, x.shape), h, attn.internal_dim, pack, projected, out)
    return torch.from_numpy(out)


def token_attention_out(x: torch.Tensor, pv: torch.Tensor, attn: torch.nn.Module, pack: np.ndarray,
                        projected: bool, eps: float) -> torch.Tensor:
    """``norm(x + attention)`` for tokens ``x`` ``(B, T, C)``, the token -> image attention's
    output made from ``pv`` (float32, row ``h T + t``): ``projected``, the heads' results
    ``(B, heads T, d)``; else their attention over the unprojected image tokens ``(B, heads
    T, C)``."""
    out = np.empty(x.shape, np.float32)
    _token_loop("token_attention_out", len(x), _floats(x), _floats(pv), attn.num_heads, attn.internal_dim, pack,
                projected, np.float32(eps), out)
    return torch.from_numpy(out)


def token_keys(x: torch.Tensor, m: torch.Tensor, pe: torch.Tensor, attn: torch.nn.Module, pack: np.ndarray,
               projected: bool, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For tokens ``x``, ``m`` and ``pe`` ``(B, T, C)``: ``y = norm(x + m)`` and an image ->
    token attention's token side for keys ``y + pe`` and values ``y``, per head (row ``h T +
    t``): the scaled key projections ``(B, heads T, d)`` (``projected``) or those folded into
    the query projection ``(B, heads T, C)`` with their bias ``(B, heads T)``, and the value
    projections folded into the output projection ``(B, heads T, C)`` (its bias shared out).
    Returns ``(y, keys, bias, values)``."""
    b, t, c = x.shape
    h = attn.num_heads
    out, bias, values = (np.empty(shape, np.float32) for shape in ((b, t, c), (b, h * t), (b, h * t, c)))
    keys = np.empty((b, h * t, attn.internal_dim // h if projected else c), np.float32)
    _token_loop("token_keys", b, _floats(x), _floats(m), _floats(pe, x.shape), h, attn.internal_dim, pack, projected,
                np.float32(eps), out, keys, bias, values)
    return tuple(torch.from_numpy(a) for a in (out, keys, bias, values))


def mlp_pack(mlps: list[torch.nn.Module]) -> tuple[np.ndarray, np.ndarray]:
    """K MLPs of the same shape (their linear layers in ``layers``) for :func:`token_mlps`:
    the layers' widths ``(L + 1,)`` int64, and each MLP's layers' weights and biases in
    turn, float32."""
    layers = mlps[0].layers
    dims = np.array([layers[0].in_features] + [layer.out_features for layer in layers], np.int64)
    parts = [t for mlp in mlps for layer in mlp.layers for t in (layer.weight, layer.bias)]
    return dims, torch.cat([t.detach().float().reshape(-1) for t in parts]).numpy()


def token_mlps(x: torch.Tensor, dims: np.ndarray, pack: np.ndarray, first: int = 0) -> torch.Tensor:
    """``x`` ``(K, R, dims[0])`` float32 through K ReLU MLPs of :func:`mlp_pack`, from its MLP
    ``first`` on, each on its R rows: ``(K, R, dims[-1])``. For the mask decoder's
    hypernetworks and IoU head on a prompt's few tokens: one loop call for all the layers,
    where torch takes a batched product per layer (warm, on the AMD host: SAM 2's
    hypernetworks 124 -> 63 us, its IoU head 66 -> 29 us, each call with its kept stack's
    lookup)."""
    out = np.empty((*x.shape[:2], dims[-1]), np.float32)
    _token_loop("token_mlps", len(x), _floats(x), dims, pack, first, out)
    return torch.from_numpy(out)
