"""Binary-mask encodings and geometry, NumPy at the API.

- COCO run-length encoding (:func:`encode_rle`, :func:`decode_rle`, :func:`rle_area`,
  :func:`rle_to_bbox`) with pycocotools' strings; compressed ``counts`` are ``str``: JSON-ready.
- Bit packing as the parity fixtures store masks (:func:`pack_bits`, :func:`unpack_bits`).
- Boxes and outer polygons of masks (:func:`mask_to_box`, :func:`mask_to_polygons`).
- Connected-component clean-up with the official semantics (8-connectivity everywhere):
  :func:`small_components`, :func:`fill_holes`, :func:`remove_small_regions` (SAM 2's
  post-processing: areas ``<= max_area``) and :func:`amg_clean_regions` (the automatic mask
  generators' ``remove_small_regions``: areas ``< min_area``, keeps the largest island).

Masks are boolean arrays shaped ``H×W`` (or ``...×H×W`` where stated).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

from anyseg.errors import InvalidInputError

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# Outer-boundary tracing: pixels around a grid corner are TL=1, TR=2, BL=4, BR=8; a step along a
# pixel edge keeps the region on its right (clockwise on screen, y pointing down).
_STEPS = {"E": (1, 0), "S": (0, 1), "W": (-1, 0), "N": (0, -1)}
_LEFT_OF = {"E": "N", "N": "W", "W": "S", "S": "E"}


def _outgoing(code: int) -> tuple[str, ...]:
    tl, tr, bl, br = (bool(code & bit) for bit in (1, 2, 4, 8))
    allowed = {"E": br and not tr, "S": bl and not br, "W": tl and not bl, "N": tr and not tl}
    return tuple(d for d, ok in allowed.items() if ok)


_OUTGOING = {code: _outgoing(code) for code in range(16)}


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of an ``H×W`` mask: ``{"size": [H, W], "counts": str}`` (column-major runs),
    the string pycocotools writes.

    A mask with few runs (any object's mask: a few per column) is encoded from where its
    columns change (:func:`_column_runs`), in a fraction of the time pycocotools takes to copy
    the mask to column-major order and visit every pixel; a speckled one by pycocotools."""
    mask = _as_mask(mask, ndim=2)
    counts = _column_runs(mask)
    if counts is None:
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {"size": [int(s) for s in mask.shape], "counts": _counts_string(counts)}


def _column_runs(mask: np.ndarray) -> np.ndarray | None:
    """The run lengths of bool ``mask`` ``(H, W)`` read column by column, a run of zeros first
    (possibly empty): ``(R,)`` int64. None where the mask changes at more than one pixel in 64
    (or is empty), which pycocotools encodes faster."""
    h, w = mask.shape
    if mask.size == 0:
        return None
    if mask.flags.f_contiguous:  # already in column order: where it changes along its memory
        flat = mask.ravel(order="F")
        changed = flat[1:] != flat[:-1]  # a run starts at i + 1
        if np.count_nonzero(changed) > mask.size // 64:
            return None
        starts = np.flatnonzero(changed) + 1
        if flat[0]:
            starts = np.concatenate(([0], starts))
        return np.diff(starts, prepend=0, append=mask.size)
    below = _changes_below(mask)  # a run starts at (y + 1, x)
    if below is None:
        return None
    ys, xs = np.divmod(below, w)
    # a run also starts at the top of a column whose first value differs from the previous
    # column's last (the first column: from zero)
    tops = np.flatnonzero(mask[0] != np.concatenate(([False], mask[-1, :-1])))
    xs = np.concatenate((tops, xs))
    ys = np.concatenate((np.zeros(len(tops), np.int64), ys + 1))
    order = np.argsort(xs.astype(np.uint16 if w <= 1 << 16 else np.int64), kind="stable")  # by column, tops first
    return np.diff((xs * h + ys)[order], prepend=0, append=h * w)


def _changes_below(mask: np.ndarray) -> np.ndarray | None:
    """Where bool ``mask`` ``(H, W)`` changes from a row to the next: the flat indices ``y W +
    x`` of ``(H-1, W)`` where pixel ``(y + 1, x)`` differs from ``(y, x)``, ascending. None where
    more than one in 64 of the pixels (of the 8-pixel groups, rows of whole groups) changes."""
    if mask.shape[1] % 8 or not mask.flags.c_contiguous:
        below = mask[1:] != mask[:-1]
        return None if np.count_nonzero(below) > mask.size // 64 else np.flatnonzero(below)
    groups = mask.view(np.uint64)  # 8 pixels at a time: 3.5x faster on a 4032x3024 mask
    changed = groups[1:] != groups[:-1]
    if np.count_nonzero(changed) > mask.size // 64:
        return None
    pixels = (np.flatnonzero(changed)[:, None] * 8 + np.arange(8)).reshape(-1)
    flat = mask.reshape(-1)
    return pixels[flat[pixels] != flat[pixels + mask.shape[1]]]


def _counts_string(counts: np.ndarray) -> str:
    """pycocotools' compressed string of run lengths ``counts`` ``(R,)``: each count (less the
    count two before it, from the fourth on) in 5-bit groups, least significant first, as
    characters from ``"0"``, bit 5 set on all but a count's last group, which ends where the
    rest is the sign extension of its bit 4."""
    x = counts.astype(np.int64)
    x[3:] -= counts[1:-2]
    groups = np.ones(len(x), np.int64)
    k = 1
    while True:  # one more group for each value outside [-2^(5k-1), 2^(5k-1))
        more = (x < -(1 << (5 * k - 1))) | (x >= 1 << (5 * k - 1))
        if not more.any():
            break
        groups += more
        k += 1
    ks = np.arange(k)
    chars = ((x[:, None] >> 5 * ks) & 0x1F) + np.where(ks < groups[:, None] - 1, 0x20, 0) + 48  # (R, k)
    return chars[ks < groups[:, None]].astype(np.uint8).tobytes().decode("ascii")


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed ``str``/``bytes`` counts or uncompressed list counts) to an
    ``H×W`` bool mask."""
    compressed = _compressed(rle)
    with warnings.catch_warnings():  # pycocotools' __array__ predates NumPy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(compressed).astype(bool)


def rle_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE."""
    return int(coco_mask.area(_compressed(rle)))


def rle_to_bbox(rle: dict[str, Any]) -> list[int]:
    """Bounding box ``[x, y, w, h]`` of a COCO RLE (zeros when empty)."""
    return [int(v) for v in coco_mask.toBbox(_compressed(rle))]


def pack_bits(mask: np.ndarray) -> np.ndarray:
    """Pack a mask of any shape into a 1-D uint8 array (``np.packbits`` of the flattened mask)."""
    return np.packbits(np.asarray(mask).astype(bool).reshape(-1))


def unpack_bits(bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits`: a bool array of ``shape``."""
    count = int(np.prod(shape))
    bits = np.asarray(bits, dtype=np.uint8).reshape(-1)
    if bits.size * 8 < count:
        raise InvalidInputError(
            f"{bits.size} packed bytes cannot hold a mask of shape {tuple(shape)}"
        )
    return np.unpackbits(bits, count=count).astype(bool).reshape(shape)


def mask_to_box(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of ``...×H×W`` masks as ``...×4`` int64 XYXY (inclusive pixel indices, as the
    official ``batched_mask_to_box``); an empty mask gives ``[0, 0, 0, 0]``."""
    masks = _as_mask(masks)
    height, width = masks.shape[-2:]
    if height == 0 or width == 0:
        return np.zeros(masks.shape[:-2] + (4,), dtype=np.int64)
    in_col = masks.any(axis=-2)  # ...×W
    in_row = masks.any(axis=-1)  # ...×H
    x0 = np.argmax(in_col, axis=-1)
    x1 = width - 1 - np.argmax(in_col[..., ::-1], axis=-1)
    y0 = np.argmax(in_row, axis=-1)
    y1 = height - 1 - np.argmax(in_row[..., ::-1], axis=-1)
    boxes = np.stack([x0, y0, x1, y1], axis=-1).astype(np.int64)
    boxes[~in_col.any(axis=-1)] = 0
    return boxes


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[int]]:
    """Outer contours of an ``H×W`` mask, one flat ``[x0, y0, x1, y1, ...]`` list per 8-connected
    region, in raster order of the regions.

    Vertices lie on pixel corners (pixel ``(r, c)`` spans ``x`` in ``[c, c+1]``, ``y`` in
    ``[r, r+1]``), so the polygon encloses exactly the region's pixels (holes filled); they run
    clockwise on screen and collinear points are dropped. ``tolerance > 0`` further simplifies
    with Ramer–Douglas–Peucker (maximum deviation in pixels).
    """
    mask = _as_mask(mask, ndim=2)
    labels, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    polygons = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        region = ndimage.binary_fill_holes(labels[box] == k)
        points = _trace_outer(region) + [box[1].start, box[0].start]
        if tolerance > 0:
            points = _simplify_ring(points, tolerance)
        polygons.append([int(v) for v in points.reshape(-1)])
    return polygons


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of each ``H×W`` slice of a ``...×H×W`` mask.

    Returns ``(labels, areas)``, both int32 of the mask's shape: the component label (from 1, in
    raster order, per slice) and the component's pixel count at each foreground pixel, 0 at
    background pixels — the outputs of the official SAM 2 ``get_connected_components``.
    """
    mask = _as_mask(mask)
    labels = np.zeros(mask.shape, dtype=np.int32)
    areas = np.zeros(mask.shape, dtype=np.int32)
    for index in np.ndindex(mask.shape[:-2]):
        labels[index], _ = ndimage.label(mask[index], structure=_EIGHT_CONNECTED)
        sizes = np.bincount(labels[index].reshape(-1))
        sizes[0] = 0
        areas[index] = sizes[labels[index]]
    return labels, areas


def small_components(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Pixels of ``mask`` (``...×H×W``) whose 8-connected component has at most ``max_area``
    pixels. ``small_components(logits <= 0, a)`` is SAM 2's ``is_hole``."""
    _, areas = connected_components(mask)
    return (areas > 0) & (areas <= max_area)


def fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill background components of at most ``max_area`` pixels (``...×H×W`` bool).

    SAM 2 semantics: a hole is any 8-connected background component that small, including one
    touching the image border.
    """
    mask = _as_mask(mask)
    return mask | small_components(~mask, max_area)


def remove_small_regions(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Remove foreground components of at most ``max_area`` pixels (``...×H×W`` bool), as SAM 2
    removes "sprinkles"."""
    mask = _as_mask(mask)
    return mask & ~small_components(mask, max_area)


def amg_clean_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """The automatic mask generators' clean-up of an ``H×W`` mask; returns ``(mask, changed)``.

    ``mode="holes"`` fills 8-connected background components smaller than ``min_area`` (border
    ones included); ``mode="islands"`` removes foreground components smaller than ``min_area``,
    keeping the largest (the first in raster order on ties) when all are small. ``changed`` is true
    whenever some component was small, exactly as the official ``remove_small_regions`` reports it.
    """
    if mode not in ("holes", "islands"):
        raise InvalidInputError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = _as_mask(mask, ndim=2)
    working = ~mask if mode == "holes" else mask
    labels, count = ndimage.label(working, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.reshape(-1), minlength=count + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask, False
    if mode == "holes":
        return mask | np.isin(labels, np.flatnonzero(small) + 1), True
    keep = np.flatnonzero(~small) + 1
    if keep.size == 0:
        keep = np.array([np.argmax(sizes) + 1])
    return np.isin(labels, keep), True


def _as_mask(mask: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """``mask`` as a bool array; checks ``ndim`` (exactly) or at least two dimensions."""
    mask = np.asarray(mask)
    if ndim is not None and mask.ndim != ndim:
        raise InvalidInputError(f"expected an H×W mask, got shape {mask.shape}")
    if mask.ndim < 2:
        raise InvalidInputError(f"expected masks shaped ...×H×W, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _compressed(rle: dict[str, Any]) -> dict[str, Any]:
    """A pycocotools-ready compressed RLE from a compressed or uncompressed COCO RLE."""
    try:
        height, width = (int(s) for s in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"not a COCO RLE (expected 'size' and 'counts'): {e}") from e
    if isinstance(counts, list):
        if sum(counts) != height * width:
            raise InvalidInputError(
                f"uncompressed RLE counts sum to {sum(counts)}, not {height}×{width}"
            )
        return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise InvalidInputError(
            f"RLE counts must be str, bytes or a list, got {type(counts).__name__}"
        )
    return {"size": [height, width], "counts": counts}


def _trace_outer(region: np.ndarray) -> np.ndarray:
    """Corners of the outer boundary of one 8-connected, hole-free region (``h×w`` bool), as a
    ``K×2`` int array of ``(x, y)`` with collinear points dropped."""
    grid = np.pad(region, 1).astype(np.uint8)
    # code[y, x] describes the four pixels around corner (x, y) of the unpadded region.
    code = grid[:-1, :-1] + 2 * grid[:-1, 1:] + 4 * grid[1:, :-1] + 8 * grid[1:, 1:]
    row, col = np.argwhere(region)[0]
    start = (int(col), int(row))  # top-left corner of the first pixel; its top edge heads east
    x, y, heading = start[0], start[1], "E"
    corners = []
    while True:
        dx, dy = _STEPS[heading]
        x, y = x + dx, y + dy
        options = _OUTGOING[int(code[y, x])]
        turn = options[0] if len(options) == 1 else _LEFT_OF[heading]
        if turn != heading:
            corners.append((x, y))
        heading = turn
        if (x, y) == start:
            break
    return np.array(corners[-1:] + corners[:-1], dtype=np.int64)


def _simplify_ring(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer–Douglas–Peucker on a closed ``K×2`` polygon; never fewer than three points."""
    far = int(np.argmax(np.abs(points - points[0]).sum(axis=1)))
    ring = np.concatenate([points, points[:1]])
    keep = _rdp(ring[: far + 1], tolerance)[:-1] + [
        far + i for i in _rdp(ring[far:], tolerance)[:-1]
    ]
    return points[keep] if len(keep) >= 3 else points


def _rdp(chain: np.ndarray, tolerance: float) -> list[int]:
    """Indices of the points of an open ``K×2`` chain kept by Ramer–Douglas–Peucker."""
    keep = np.zeros(len(chain), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(chain) - 1)]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        a, b = chain[lo].astype(float), chain[hi].astype(float)
        seg = b - a
        rel = chain[lo + 1 : hi] - a
        length = np.hypot(*seg)
        cross = seg[0] * rel[:, 1] - seg[1] * rel[:, 0]
        dist = np.abs(cross) / length if length else np.hypot(rel[:, 0], rel[:, 1])
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            stack += [(lo, lo + 1 + i), (lo + 1 + i, hi)]
            keep[lo + 1 + i] = True
    return [int(i) for i in np.flatnonzero(keep)]
