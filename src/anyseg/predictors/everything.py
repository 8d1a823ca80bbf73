"""Segment everything: masks for a whole image from a grid of single-point prompts.

:class:`MaskGenerator` reproduces the official automatic mask generators, SAM's
(``segment_anything``) for SAM 1 and MobileSAM models and SAM 2's (``sam2``) for SAM 2
models, step by step:

1. crop boxes: the whole image, then ``crop_n_layers`` layers of 2**i x 2**i overlapping
   crops; each crop is embedded on its own;
2. a regular grid of points over each crop (``points_per_side``, thinned by
   ``crop_n_points_downscale_factor`` per layer, or explicit ``point_grids``), prompted in
   batches of ``points_per_batch``, one foreground click each, three masks per click
   (SAM 2: ``multimask_output`` and, with ``use_m2m``, one refinement pass that feeds each
   mask back as a mask prompt);
3. per mask: keep it if its predicted IoU exceeds ``pred_iou_thresh`` and its stability
   score (the IoU of the mask binarised at ``mask_threshold +- stability_score_offset``)
   reaches ``stability_score_thresh``; binarise at crop resolution, drop masks touching an
   inner crop edge;
4. box NMS inside each crop (``box_nms_thresh``, by predicted IoU), then across crops
   (``crop_nms_thresh``, preferring smaller crops);
5. ``min_mask_region_area``: SAM 1 fills holes and removes islands smaller than that on the
   final masks and runs box NMS again; SAM 2 fills holes and removes sprinkles of at most
   that many pixels on the 256 x 256 low-resolution logits, before upscaling (as the
   official SAM 2 generator does through its image predictor).

NMS follows ``torchvision.ops.batched_nms`` on CPU exactly, the order of ties included.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from anyseg.errors import InvalidInputError
from anyseg.io.images import as_rgb_array
from anyseg.io.masks import amg_clean_regions, decode_rle, encode_rle, mask_to_box, rle_area, small_components
from anyseg.predictors.image import ImagePredictor

MAX_IMAGE_PIXELS = 50_000_000
"""Largest image (width x height) the generator accepts: every kept mask is a full-size
array (``binary_mask``) or is decoded at full size for clean-up."""
MIN_CROP_SIDE = 16
"""The image, and every crop of it, must be at least this many pixels on each side (one
encoder patch)."""
MAX_ASPECT_RATIO = 64
"""The image's longer side may be at most this many times its shorter side (SAM 1 resizes
the longer side to 1024: beyond this the shorter one falls under one patch)."""
MAX_POINTS_PER_SIDE = 256
MAX_CROP_LAYERS = 4

# The official generators' defaults that differ between the families.
FAMILY_DEFAULTS = {"sam": {"pred_iou_thresh": 0.88}, "sam2": {"pred_iou_thresh": 0.8}}
OUTPUT_MODES = ("binary_mask", "coco_rle")
SAM2_LOW_RES_CLAMP = 32.0  # SAM 2's image predictor clamps the low-res logits it hands back

# torchvision's batched_nms runs one NMS per category (then re-sorts) above this many
# box coordinates on CPU; below, a single NMS.
_VANILLA_NMS_NUMEL = 4000


# ------------------------------------------------------------------------------ geometry


def point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` (x, y) cell centres of an ``n x n`` grid on ``[0, 1]^2``, row by row."""
    half_cell = 1 / (2 * n_per_side)
    side = np.linspace(half_cell, 1 - half_cell, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer; layer ``i`` has ``int(n_per_side / downscale**i)`` points per side."""
    return [point_grid(int(n_per_side / (downscale**i))) for i in range(n_layers + 1)]


def crop_boxes(hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer: the whole image (layer 0), then for layer ``i >= 1``
    a ``2**i x 2**i`` grid of crops (column by column) that overlap by
    ``overlap_ratio * short_side * 2 / 2**i`` pixels."""
    h, w = hw
    short_side = min(h, w)
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as torchvision's CPU kernel computes it.

    ``boxes`` ``(N, 4)`` XYXY and ``scores`` ``(N,)`` float32. Boxes are visited by
    decreasing score, ties in index order (torchvision's kernel sorts stably); each kept
    box suppresses the later ones whose IoU with it exceeds ``iou_threshold``. Areas are
    ``(x1 - x0) * (y1 - y0)`` and the IoU is computed in float32. Returns the kept
    indices, best first.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    order = _by_score(scores)
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):  # empty boxes: 0 / 0 never suppresses
        for i in order:
            if suppressed[i]:
                continue
            keep.append(i)
            w = np.maximum(np.float32(0), np.minimum(x1[i], x1) - np.maximum(x0[i], x0))
            h = np.maximum(np.float32(0), np.minimum(y1[i], y1) - np.maximum(y0[i], y0))
            inter = w * h
            iou = inter / (areas[i] + areas - inter)
            suppressed |= (iou.astype(np.float64) > iou_threshold) & (rank > rank[i])
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """``torchvision.ops.batched_nms`` with a single category, on CPU: :func:`nms`; above
    1000 boxes torchvision takes its per-category path, which returns the kept indices in
    increasing order re-sorted by score with torch's default (unstable) sort."""
    keep = nms(boxes, scores, iou_threshold)
    if np.size(boxes) > _VANILLA_NMS_NUMEL:
        kept_scores = torch.as_tensor(np.asarray(scores, dtype=np.float32)[np.sort(keep)])
        keep = np.sort(keep)[torch.sort(kept_scores, descending=True)[1].numpy()]
    return keep


def _by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing float32 score, ties in index order."""
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    return torch.sort(scores, descending=True, stable=True)[1].numpy()


def near_crop_edge(boxes: np.ndarray, crop_box: list[int], image_box: list[int], tol: float = 20.0) -> np.ndarray:
    """``(N,)`` whether each image-frame XYXY box lies within ``tol`` pixels of an edge of
    ``crop_box`` that is not also an edge of the image."""
    boxes = np.asarray(boxes, dtype=np.float32)
    at_crop = np.abs(boxes - np.asarray(crop_box, dtype=np.float32)) <= tol
    at_image = np.abs(boxes - np.asarray(image_box, dtype=np.float32)) <= tol
    return (at_crop & ~at_image).any(axis=1)


def xyxy_to_xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


# --------------------------------------------------------------------------- candidates


@dataclass
class MaskSet:
    """Masks with their measurements, all in the original image's frame.

    ``rles``: COCO RLEs (full image); ``boxes`` ``(N, 4)`` int64 XYXY (inclusive pixel
    indices); ``iou``, ``stability`` ``(N,)`` float32; ``points`` ``(N, 2)`` (x, y) of the
    prompting click; ``crop_boxes`` ``(N, 4)`` int64 XYXY.
    """

    rles: list[dict]
    boxes: np.ndarray
    iou: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.rles)

    def take(self, index: np.ndarray) -> "MaskSet":
        """The masks at ``index`` (indices or a boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return MaskSet(
            [self.rles[i] for i in index],
            self.boxes[index],
            self.iou[index],
            self.stability[index],
            self.points[index],
            self.crop_boxes[index],
        )

    @staticmethod
    def concat(sets: list["MaskSet"]) -> "MaskSet":
        return MaskSet(
            [r for s in sets for r in s.rles],
            np.concatenate([s.boxes for s in sets]).reshape(-1, 4),
            np.concatenate([s.iou for s in sets]),
            np.concatenate([s.stability for s in sets]),
            np.concatenate([s.points for s in sets]).reshape(-1, 2),
            np.concatenate([s.crop_boxes for s in sets]).reshape(-1, 4),
        )


# ---------------------------------------------------------------------------- generator


class MaskGenerator:
    """Masks for everything in an image, as the official automatic mask generator of the
    model's family computes them (see the module docstring for the steps).

    ``model``: any model from :func:`anyseg.load_model`. ``pred_iou_thresh=None`` takes the
    family's official default (SAM 1: 0.88, SAM 2: 0.8); every other default is the same
    in both. Thresholds at or below 0 switch their filter off. ``use_m2m`` and
    ``multimask_output=False`` are SAM 2 generator options (for SAM 1 ``use_m2m`` is
    refused; ``multimask_output=False`` keeps the single-mask output). ``precision``:
    as :class:`ImagePredictor`'s (default exact fp32). ``output_mode``:
    ``"binary_mask"`` (``H x W`` bool arrays) or ``"coco_rle"`` (compressed RLE dicts with
    ``str`` counts).
    """

    def __init__(
        self,
        model,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: float = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        precision: str = "fp32",
    ) -> None:
        family = getattr(model, "family", None)
        if family not in FAMILY_DEFAULTS:
            raise InvalidInputError(f"MaskGenerator needs a SAM or SAM 2 model, got {type(model).__name__}")
        self.family = family
        if pred_iou_thresh is None:
            pred_iou_thresh = FAMILY_DEFAULTS[family]["pred_iou_thresh"]
        self.points_per_batch = _integer(points_per_batch, "points_per_batch", 1)
        self.crop_n_layers = _integer(crop_n_layers, "crop_n_layers", 0, MAX_CROP_LAYERS)
        self.pred_iou_thresh = _real(pred_iou_thresh, "pred_iou_thresh")
        self.stability_score_thresh = _real(stability_score_thresh, "stability_score_thresh", high=1.0)
        self.stability_score_offset = _real(stability_score_offset, "stability_score_offset", low=0.0)
        self.mask_threshold = _real(mask_threshold, "mask_threshold")
        self.box_nms_thresh = _real(box_nms_thresh, "box_nms_thresh", 0.0, 1.0)
        self.crop_nms_thresh = _real(crop_nms_thresh, "crop_nms_thresh", 0.0, 1.0)
        self.crop_overlap_ratio = _real(crop_overlap_ratio, "crop_overlap_ratio", 0.0, 1.0)
        self.min_mask_region_area = _real(min_mask_region_area, "min_mask_region_area", low=0.0)
        if output_mode not in OUTPUT_MODES:
            raise InvalidInputError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}; got {output_mode!r}")
        self.output_mode = output_mode
        if use_m2m and family != "sam2":
            raise InvalidInputError("use_m2m is an option of the SAM 2 generator; this is a SAM 1 model")
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.point_grids = self._grids(points_per_side, point_grids, crop_n_points_downscale_factor)
        self.predictor = ImagePredictor(model, precision=precision)

    def _grids(self, points_per_side, point_grids, downscale) -> list[np.ndarray]:
        if (points_per_side is None) == (point_grids is None):
            raise InvalidInputError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            n = _integer(points_per_side, "points_per_side", 1, MAX_POINTS_PER_SIDE)
            downscale = _integer(downscale, "crop_n_points_downscale_factor", 1)
            if int(n / downscale**self.crop_n_layers) < 1:
                raise InvalidInputError(
                    f"points_per_side={n} with crop_n_points_downscale_factor={downscale} leaves no "
                    f"points in crop layer {self.crop_n_layers}"
                )
            return layer_point_grids(n, self.crop_n_layers, downscale)
        if not isinstance(point_grids, (list, tuple)) or len(point_grids) != self.crop_n_layers + 1:
            raise InvalidInputError(f"point_grids must be a list of {self.crop_n_layers + 1} grids, one per crop layer")
        grids = []
        for i, grid in enumerate(point_grids):
            try:
                grid = np.asarray(grid, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidInputError(f"point_grids[{i}] must be numeric") from None
            if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
                raise InvalidInputError(f"point_grids[{i}] must have shape (N, 2) with N >= 1, got {grid.shape}")
            if not (np.isfinite(grid).all() and (grid >= 0).all() and (grid <= 1).all()):
                raise InvalidInputError(f"point_grids[{i}] must hold (x, y) in [0, 1] (fractions of the crop)")
            grids.append(grid)
        return grids

    # ----------------------------------------------------------------------- public
    @torch.inference_mode()
    def generate(self, image) -> list[dict]:
        """Every mask of ``image`` (``(H, W, 3)`` uint8 RGB array or PIL image).

        Returns one record per mask: ``segmentation`` (``(H, W)`` bool, or a COCO RLE),
        ``area`` (pixels), ``bbox`` (XYWH), ``predicted_iou``, ``stability_score``,
        ``point_coords`` (``[[x, y]]``, the click), ``crop_box`` (XYWH).
        """
        image = as_rgb_array(image)
        hw = image.shape[:2]
        boxes, layers = self._crops(hw)
        per_crop = [self._process_crop(image, box, layer) for box, layer in zip(boxes, layers)]
        data = MaskSet.concat(per_crop)
        if len(boxes) > 1 and len(data):
            # duplicates across crops: prefer the mask from the smaller crop
            areas = (data.crop_boxes[:, 2] - data.crop_boxes[:, 0]) * (data.crop_boxes[:, 3] - data.crop_boxes[:, 1])
            scores = (1 / torch.from_numpy(areas)).numpy()
            data = data.take(batched_nms(data.boxes, scores, self.crop_nms_thresh))
        if self.family == "sam" and self.min_mask_region_area > 0:
            data = self._clean_small_regions(data)
        return self._records(data)

    # ---------------------------------------------------------------------- stages
    def _crops(self, hw: tuple[int, int]) -> tuple[list[list[int]], list[int]]:
        h, w = hw
        if h * w > MAX_IMAGE_PIXELS:
            raise InvalidInputError(
                f"the image is {w}x{h} = {h * w:,} pixels; the mask generator takes at most "
                f"{MAX_IMAGE_PIXELS:,}: downscale it first"
            )
        if min(h, w) < MIN_CROP_SIDE:
            raise InvalidInputError(f"the image is {w}x{h} pixels; segment everything needs at least {MIN_CROP_SIDE} per side")
        if max(h, w) > MAX_ASPECT_RATIO * min(h, w):
            raise InvalidInputError(
                f"the image is {w}x{h} pixels; its longer side may be at most {MAX_ASPECT_RATIO} times its shorter"
            )
        boxes, layers = crop_boxes(hw, self.crop_n_layers, self.crop_overlap_ratio)
        smallest = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes)
        if smallest < MIN_CROP_SIDE:
            raise InvalidInputError(
                f"the {w}x{h} image is too small for crop_n_layers={self.crop_n_layers}: its crops would be "
                f"{smallest} pixels on a side, under {MIN_CROP_SIDE}; use fewer crop layers"
            )
        return boxes, layers

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int) -> MaskSet:
        x0, y0, x1, y1 = crop_box
        self.predictor.set_image(image[y0:y1, x0:x1])
        features = self.predictor.features()
        crop_hw = (y1 - y0, x1 - x0)
        # SAM 1 handles the grid in float64 (NumPy), SAM 2 in float32 (torch).
        points = self.point_grids[layer] * np.array([[crop_hw[1], crop_hw[0]]])
        if self.family == "sam2":
            points = points.astype(np.float32)
        image_box = [0, 0, image.shape[1], image.shape[0]]
        batches = [
            self._process_batch(features, points[i : i + self.points_per_batch], crop_box, image_box)
            for i in range(0, len(points), self.points_per_batch)
        ]
        data = MaskSet.concat(batches)
        return data.take(batched_nms(data.boxes, data.iou, self.box_nms_thresh))

    def _process_batch(self, features, points: np.ndarray, crop_box: list[int], image_box: list[int]) -> MaskSet:
        """Prompt one batch of clicks (``points`` ``(B, 2)`` crop pixels); the masks that
        pass the filters, in the image frame."""
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        low, iou = self._predict(features, points, crop_hw)  # (M, 256, 256), (M,)
        points = np.repeat(points, len(low) // len(points), axis=0)
        if self.use_m2m:
            low, iou = self._refine(features, points, low.clamp(-SAM2_LOW_RES_CLAMP, SAM2_LOW_RES_CLAMP), crop_hw)
        iou = iou.float().cpu().numpy()
        if self.pred_iou_thresh > 0:
            keep = iou > self.pred_iou_thresh
            low, iou, points = low[torch.from_numpy(keep).to(low.device)], iou[keep], points[keep]
        if self.family == "sam2" and self.min_mask_region_area > 0:
            low = self._fill_low_res(low)
        # Each mask is measured on its own, so the upscaling can go in memory-bounded chunks.
        step = self._chunk(crop_hw)
        parts = [self._measure(low[i : i + step], iou[i : i + step], points[i : i + step], crop_box, image_box)
                 for i in range(0, len(low), step)]
        return MaskSet.concat([_empty(), *parts])

    def _measure(self, low: torch.Tensor, iou: np.ndarray, points: np.ndarray, crop_box, image_box) -> MaskSet:
        """Upscale low-res logits ``(M, 256, 256)`` to the crop, filter by stability,
        binarise, drop masks on inner crop edges; RLE-encode the rest in the image frame."""
        x0, y0, x1, y1 = crop_box
        logits = self.predictor.transform.masks(low[:, None].float(), (y1 - y0, x1 - x0))[:, 0]
        stability = self._stability(logits)
        rows = np.arange(len(stability))
        if self.stability_score_thresh > 0:
            rows = np.flatnonzero(stability >= self.stability_score_thresh)
        masks = (logits[torch.from_numpy(rows).to(logits.device)] > self.mask_threshold).cpu().numpy()
        boxes = mask_to_box(masks) + [x0, y0, x0, y0]
        inside = ~near_crop_edge(boxes, crop_box, image_box)
        rows = rows[inside]
        return MaskSet(
            [encode_rle(self._uncrop(m, crop_box, image_box)) for m in masks[inside]],
            boxes[inside],
            iou[rows],
            stability[rows],
            points[rows] + [x0, y0],
            np.tile(np.asarray(crop_box, dtype=np.int64), (len(rows), 1)),
        )

    def _predict(self, features, points: np.ndarray, crop_hw, mask_input: torch.Tensor | None = None, multimask=None):
        """Low-res logits ``(B*K, 256, 256)`` and predicted IoU ``(B*K,)`` for one click each."""
        model = self.predictor.model
        coords = self.predictor.transform.coords(torch.from_numpy(points).to(model.device), crop_hw)[:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int32, device=model.device)
        if mask_input is not None:
            mask_input = mask_input[:, None].to(model.dtype)
        multimask = self.multimask_output if multimask is None else multimask
        out = model.predict_masks(features, coords, labels, mask_input=mask_input, multimask=multimask,
                                  decoder=self.predictor.decoder)
        return out.masks.flatten(0, 1).float(), out.iou.flatten(0, 1).float()

    def _refine(self, features, points: np.ndarray, low: torch.Tensor, crop_hw):
        """SAM 2's ``use_m2m``: prompt each click again with its own mask, one mask out."""
        outs = [
            self._predict(features, points[i : i + self.points_per_batch], crop_hw, low[i : i + self.points_per_batch], False)
            for i in range(0, len(points), self.points_per_batch)
        ]
        return torch.cat([m for m, _ in outs]), torch.cat([s for _, s in outs])

    def _fill_low_res(self, low: torch.Tensor) -> torch.Tensor:
        """SAM 2's post-processing of ``(M, 256, 256)`` logits: background components of at
        most ``min_mask_region_area`` pixels become foreground (+10 over the 0 threshold),
        foreground ones of at most that size background (-10)."""
        if len(low) == 0:
            return low
        logits = low.float().cpu().numpy()
        holes = small_components(logits <= 0, self.min_mask_region_area)
        sprinkles = small_components(logits > 0, self.min_mask_region_area)
        logits = np.where(holes, np.float32(10.0), np.where(sprinkles, np.float32(-10.0), logits))
        return torch.from_numpy(logits).to(low.device)

    def _stability(self, logits: torch.Tensor) -> np.ndarray:
        """IoU of the masks at ``mask_threshold +- stability_score_offset``: ``(M, H, W)`` ->
        ``(M,)`` float32 (NaN when both are empty, as the official score)."""
        high = (logits > self.mask_threshold + self.stability_score_offset).sum(dim=(-1, -2))
        low = (logits > self.mask_threshold - self.stability_score_offset).sum(dim=(-1, -2))
        return (high / low).float().cpu().numpy()

    @staticmethod
    def _chunk(crop_hw) -> int:
        """Masks upscaled at once: about 32M float32 values (the SAM 1 path passes 1024 x 1024)."""
        return max(1, (32 << 20) // max(crop_hw[0] * crop_hw[1], 1024 * 1024))

    @staticmethod
    def _uncrop(mask: np.ndarray, crop_box: list[int], image_box: list[int]) -> np.ndarray:
        x0, y0, x1, y1 = crop_box
        if [x0, y0, x1, y1] == image_box:
            return mask
        full = np.zeros((image_box[3], image_box[2]), dtype=bool)
        full[y0:y1, x0:x1] = mask
        return full

    def _clean_small_regions(self, data: MaskSet) -> MaskSet:
        """SAM 1: fill small holes and remove small islands, then box NMS again, preferring
        the masks that needed no change."""
        if not len(data):
            return data
        area = self.min_mask_region_area
        boxes, unchanged, cleaned = [], [], {}
        for i, rle in enumerate(data.rles):
            mask, holes = amg_clean_regions(decode_rle(rle), area, "holes")
            mask, islands = amg_clean_regions(mask, area, "islands")
            boxes.append(mask_to_box(mask))
            unchanged.append(not (holes or islands))
            if holes or islands:
                cleaned[i] = encode_rle(mask)
        boxes = np.stack(boxes)
        keep = batched_nms(boxes, np.array(unchanged, dtype=np.float32), max(self.box_nms_thresh, self.crop_nms_thresh))
        for i in keep:
            if i in cleaned:
                data.rles[i] = cleaned[i]
                data.boxes[i] = boxes[i]
        return data.take(keep)

    def _records(self, data: MaskSet) -> list[dict]:
        records = []
        for i, rle in enumerate(data.rles):
            records.append(
                {
                    "segmentation": decode_rle(rle) if self.output_mode == "binary_mask" else rle,
                    "area": rle_area(rle),
                    "bbox": xyxy_to_xywh(data.boxes[i]),
                    "predicted_iou": float(data.iou[i]),
                    "point_coords": [[float(v) for v in data.points[i]]],
                    "stability_score": float(data.stability[i]),
                    "crop_box": xyxy_to_xywh(data.crop_boxes[i]),
                }
            )
        return records


def _empty() -> MaskSet:
    return MaskSet(
        [], np.zeros((0, 4), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
        np.zeros((0, 2)), np.zeros((0, 4), np.int64),
    )


def _integer(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidInputError(f"{name} must be {bounds}, got {value}")
    return value


def _real(value, name: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = {(True, True): f"in [{low}, {high}]", (True, False): f">= {low}", (False, True): f"<= {high}"}
        raise InvalidInputError(f"{name} must be {bounds[(low is not None, high is not None)]}, got {value}")
    return value
