"""Mask encodings and geometry (anyseg.io.masks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from scipy import ndimage

from anyseg.errors import InvalidInputError
from anyseg.io.masks import (
    amg_clean_regions,
    connected_components,
    decode_rle,
    encode_rle,
    fill_holes,
    mask_to_box,
    mask_to_polygons,
    pack_bits,
    remove_small_regions,
    rle_area,
    rle_to_bbox,
    small_components,
    unpack_bits,
)


def _blobs(seed: int, shape=(40, 50), density=0.45) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return noise > np.quantile(noise, 1 - density)


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major runs, starting with background)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    return {"size": list(mask.shape), "counts": counts}


# --- RLE -------------------------------------------------------------------------------------


def test_rle_round_trip_and_json_ready():
    mask = _blobs(0)
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [40, 50]
    json.dumps(rle)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"].encode() == reference["counts"]
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(decode_rle(as_bytes), mask)
    assert decode_rle(rle).dtype == bool


def _pycocotools_counts(mask: np.ndarray) -> str:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def test_rle_is_pycocotools_string_for_every_kind_of_mask():
    """encode_rle finds a compact mask's runs from where its columns change and leaves a
    speckled one to pycocotools: either way pycocotools' own string."""
    from anyseg.io.masks import _column_runs

    rng = np.random.default_rng(3)
    masks = [np.zeros((1, 1), bool), np.ones((1, 1), bool), np.ones((7, 1), bool), np.ones((1, 9), bool)]
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        speckled = rng.random((h, w)) < rng.random()
        box = np.zeros((h, w), bool)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        box[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = True
        masks += [speckled, box, ~box, np.zeros((h, w), bool), np.ones((h, w), bool)]
    yy, xx = np.mgrid[:300, :400]
    masks.append((xx - 200) ** 2 + 4 * (yy - 150) ** 2 < 120**2)  # a compact object (rows of 8-pixel groups)
    masks.append(masks[-1][:, :397])  # and rows that are not (a strided view), and one copied
    masks.append(masks[-1].copy())
    masks.append(np.zeros((200, 300), bool)[:, ::2])  # a strided view
    masks[-1][50:60, 10:20] = True
    far = np.zeros((3000, 3000), bool)  # run lengths of 24 bits, signed differences
    far[0, 0] = far[-1, -1] = far[1500, 7] = True
    masks.append(far)
    wide = np.zeros((2, 70000), bool)  # more columns than 16 bits count
    wide[1, 65537:] = True
    masks.append(wide)
    for mask in masks:  # rows in memory (the predictors' masks) and columns (pycocotools' decodes)
        for laid_out in (mask, np.ascontiguousarray(mask), np.asfortranarray(mask)):
            assert encode_rle(laid_out) == {"size": list(mask.shape), "counts": _pycocotools_counts(mask)}
    for compact in masks[-6:-3] + [far]:
        assert _column_runs(compact) is not None and _column_runs(np.asfortranarray(compact)) is not None
    speckled = np.zeros((64, 64), bool)
    speckled[::2, ::2] = True
    for laid_out in (speckled, np.asfortranarray(speckled)):
        assert _column_runs(laid_out) is None and encode_rle(laid_out)["counts"] == _pycocotools_counts(speckled)


def test_uncompressed_rle():
    mask = _blobs(1)
    rle = _uncompressed(mask)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    assert rle_area(rle) == mask.sum()
    with pytest.raises(InvalidInputError, match="sum to"):
        decode_rle({"size": [4, 4], "counts": [3, 2]})


def test_rle_area_and_bbox():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    rle = encode_rle(mask)
    assert rle_area(rle) == 18
    assert rle_to_bbox(rle) == [3, 2, 6, 3]
    assert rle_to_bbox(encode_rle(np.zeros((4, 4), bool))) == [0, 0, 0, 0]


def test_real_sav_annotation_round_trips(samples_dir):
    annotation = json.loads((samples_dir / "annotations" / "sav_000001_manual.json").read_text())
    for frame in annotation["masklet"][::30]:
        for rle in frame:
            mask = decode_rle(rle)
            assert mask.shape == (848, 480)
            assert encode_rle(mask)["counts"] == rle["counts"]
            assert rle_area(rle) == mask.sum()


@pytest.mark.parametrize("bad", [{"counts": "abc"}, {"size": [2, 2], "counts": 3}, "rle"])
def test_bad_rle(bad):
    with pytest.raises(InvalidInputError):
        decode_rle(bad)


# --- bits ------------------------------------------------------------------------------------


def test_pack_bits_matches_fixture_convention(fixtures_dir):
    data = np.load(fixtures_dir / "sam_vit_small.amg.npz")
    bits, shape = data["masks_bits"], tuple(data["masks_shape"])
    masks = unpack_bits(bits, shape)
    expected = np.unpackbits(bits)[: int(np.prod(shape))].reshape(shape)
    np.testing.assert_array_equal(masks, expected.astype(bool))
    np.testing.assert_array_equal(pack_bits(masks), bits)


def test_pack_unpack_round_trip_odd_size():
    mask = _blobs(2, shape=(3, 7, 5))
    bits = pack_bits(mask)
    assert bits.dtype == np.uint8 and bits.shape == (14,)
    np.testing.assert_array_equal(unpack_bits(bits, mask.shape), mask)
    with pytest.raises(InvalidInputError):
        unpack_bits(bits[:3], mask.shape)


# --- boxes and polygons ----------------------------------------------------------------------


def test_mask_to_box_batched_inclusive_and_empty():
    masks = np.zeros((2, 3, 10, 12), bool)
    masks[0, 0, 2:5, 3:9] = True
    masks[1, 2, 9, 11] = True
    boxes = mask_to_box(masks)
    assert boxes.shape == (2, 3, 4) and boxes.dtype == np.int64
    np.testing.assert_array_equal(boxes[0, 0], [3, 2, 8, 4])
    np.testing.assert_array_equal(boxes[1, 2], [11, 9, 11, 9])
    np.testing.assert_array_equal(boxes[0, 1], [0, 0, 0, 0])
    np.testing.assert_array_equal(mask_to_box(masks[0, 0]), [3, 2, 8, 4])


def _shoelace(polygon: list[int]) -> float:
    pts = np.array(polygon, dtype=float).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _rasterise(polygon: list[int], shape) -> np.ndarray:
    """Even-odd fill tested at pixel centres."""
    pts = np.array(polygon, dtype=float).reshape(-1, 2)
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    inside = np.zeros(shape, bool)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        crosses = (y0 > ys) != (y1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_at)
    return inside


def test_rectangle_polygon_has_four_corners():
    mask = np.zeros((8, 9), bool)
    mask[2:5, 1:7] = True
    assert mask_to_polygons(mask) == [[1, 2, 7, 2, 7, 5, 1, 5]]


def test_diagonal_pixels_form_one_region():
    mask = np.eye(3, dtype=bool)
    (polygon,) = mask_to_polygons(mask)
    assert _shoelace(polygon) == 3


@pytest.mark.parametrize("seed", range(6))
def test_polygons_enclose_exactly_each_region_with_holes_filled(seed):
    mask = _blobs(seed, density=0.3 + 0.05 * seed)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    polygons = mask_to_polygons(mask)
    assert len(polygons) == count
    for k, polygon in enumerate(polygons, start=1):
        region = ndimage.binary_fill_holes(labels == k)
        assert _shoelace(polygon) == region.sum()  # clockwise on screen = positive here
        np.testing.assert_array_equal(_rasterise(polygon, mask.shape), region)
        pts = np.array(polygon).reshape(-1, 2)
        steps = np.sign(np.diff(np.vstack([pts, pts[:1]]), axis=0))
        assert (np.abs(steps).sum(axis=1) == 1).all()  # axis-aligned edges
        assert not (steps == np.roll(steps, 1, axis=0)).all(axis=1).any()  # no collinear points


def test_polygon_tolerance_simplifies():
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 < 400
    (exact,) = mask_to_polygons(disc)
    (simple,) = mask_to_polygons(disc, tolerance=1.0)
    assert len(simple) < len(exact) / 3
    assert abs(_shoelace(simple) - disc.sum()) < 0.05 * disc.sum()
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
    (pixel,) = mask_to_polygons(np.pad([[True]], 2), tolerance=5.0)
    assert len(pixel) >= 6


# --- connected components --------------------------------------------------------------------


def test_connected_components_are_eight_connected_with_areas():
    mask = np.array(
        [
            [1, 0, 0, 1],
            [0, 1, 0, 1],
            [0, 0, 0, 0],
            [1, 1, 0, 0],
        ],
        bool,
    )
    labels, areas = connected_components(mask)
    np.testing.assert_array_equal(labels, [[1, 0, 0, 2], [0, 1, 0, 2], [0, 0, 0, 0], [3, 3, 0, 0]])
    np.testing.assert_array_equal(areas, [[2, 0, 0, 2], [0, 2, 0, 2], [0, 0, 0, 0], [2, 2, 0, 0]])
    batched_labels, batched_areas = connected_components(np.stack([mask, ~mask])[:, None])
    assert batched_labels.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(batched_areas[0, 0], areas)


def test_fill_holes_sam2_semantics():
    mask = np.ones((7, 7), bool)
    mask[2:4, 2:4] = False  # interior hole of 4
    mask[0, 6] = False  # border-touching background of 1: also a hole for SAM 2
    mask[5, 0:2] = False  # 2 pixels ...
    mask[6, 2] = False  # ... plus one diagonal neighbour: one 8-connected hole of 3
    np.testing.assert_array_equal(fill_holes(mask, 4), np.ones((7, 7), bool))
    partly = fill_holes(mask, 3)
    assert not partly[2:4, 2:4].any() and partly[0, 6] and partly[5, 0] and partly[6, 2]
    np.testing.assert_array_equal(fill_holes(mask, 0), mask)
    batched = fill_holes(np.stack([mask, mask]), 3)
    np.testing.assert_array_equal(batched[1], partly)


def test_remove_small_regions_and_small_components():
    mask = np.zeros((6, 8), bool)
    mask[0:3, 0:3] = True  # 9
    mask[5, 7] = True  # 1
    mask[4, 4] = mask[5, 5] = True  # 2, diagonal
    np.testing.assert_array_equal(remove_small_regions(mask, 2), mask & (np.arange(6)[:, None] < 3))
    single = np.zeros_like(mask)
    single[5, 7] = True
    np.testing.assert_array_equal(small_components(mask, 1), single)
    logits = np.where(mask, 1.0, -1.0)
    np.testing.assert_array_equal(
        small_components(logits > 0, 2), mask & (np.arange(6)[:, None] >= 3)
    )


def test_amg_clean_regions_official_semantics():
    mask = np.ones((6, 6), bool)
    mask[2:4, 2:4] = False  # interior hole of 4
    mask[0, 0] = False  # border background of 1
    filled, changed = amg_clean_regions(mask, 4, "holes")  # strictly smaller than 4 only
    assert changed and filled[0, 0] and not filled[2:4, 2:4].any()
    same, changed = amg_clean_regions(mask, 1, "holes")
    assert not changed and np.array_equal(same, mask)

    islands = np.zeros((6, 6), bool)
    islands[0, 0:2] = True  # 2
    islands[3:6, 3:6] = True  # 9
    cleaned, changed = amg_clean_regions(islands, 3, "islands")
    assert changed and not cleaned[0].any() and cleaned[3:, 3:].all()

    tiny = np.zeros((6, 6), bool)
    tiny[0, 0:2] = True  # 2, first in raster order
    tiny[4, 0:2] = True  # 2
    tiny[5, 5] = True  # 1
    kept, changed = amg_clean_regions(tiny, 10, "islands")  # all small: keep the largest (first)
    assert changed and kept.sum() == 2 and kept[0, 0:2].all()

    with pytest.raises(InvalidInputError):
        amg_clean_regions(mask, 4, "both")


def test_shape_validation():
    with pytest.raises(InvalidInputError):
        encode_rle(np.zeros((2, 3, 4), bool))
    with pytest.raises(InvalidInputError):
        mask_to_box(np.zeros(5, bool))
