"""SA-Co concept-segmentation metrics (SAM 3): cgF1, IL_MCC, positive micro-F1, phrase
HOTA, YT-VIS mAP, phrase AP and TETA for videos; the cgF1 family for images.

The numbers follow the definitions of the official SAM 3 evaluators
(``sam3/eval/saco_veval_evaluators.py``, ``cgf1_eval.py``, ``ytvis_eval.py`` and the
HOTA toolkit), re-implemented in plain NumPy; RLE masks go through pycocotools and
one-to-one matching through SciPy's Hungarian solver.

Vocabulary. A *query* is one (media, noun phrase) pair: a (video, category) pair in
SA-Co/VEval, an ``images`` entry in SA-Co/Gold. Ground truth and predictions are
*masklets*: one mask (and box) per frame, ``None`` where the object is absent.

* **Spatio-temporal IoU** of two masklets: summed intersection over summed union over all
  frames (1 when both are empty everywhere). Boxes likewise, with per-frame box areas.
* **cgF1** (``demo`` keys). Predictions with score >= 0.5 are matched one-to-one to the
  ground truth of their query by the Hungarian algorithm on IoU; at each IoU threshold
  0.50:0.05:0.95 a match counts as TP if its IoU reaches the threshold. Each query is also
  an image-level (IL) sample: positive if it has ground truth, predicted positive if it
  has a prediction. ``IL_MCC`` is the Matthews correlation of those, ``positive micro-F1``
  is the F1 of TP/FP/FN summed over queries that are positive in both (the FNs of missed
  positive queries count too), with the official ``1e-4`` smoothing, and
  ``cgF1 = positive micro-F1 x IL_MCC``.
* **Phrase HOTA** (``all_phrase`` keys). HOTA (Luiten et al. 2021) on every query as a
  sequence of its own, predictions with score > 0.5, frames where a prediction is empty
  dropped; sequences are combined detection-weighted, then averaged over
  alpha = 0.05:0.05:0.95.
* **mAP** (YT-VIS / COCO style, per category, area "all", 100 detections) and **phrase
  AP** (the same with every query pooled as one category): greedy matching by score,
  101-point interpolated precision.
* **TETA** (``video_mask_teta`` and its parts, masks only): the class-aware tracking
  metric of the TAO toolkit with every ground-truth category a class, reported on the
  0-100 scale rounded to 5 significant digits as the official toolkit prints it.

Checked against the official toy result file (``assets/veval/toy_gt_and_pred`` of SAM 3):
every key the current evaluator writes agrees bit for bit. The file also holds keys of an
older evaluator version, which anyseg does not write: ``video_*_demo_{precision,recall,
f1,pmf1,cgf1}_{50_95,50,75}`` and ``*_w0dt_50_95`` (a macro-F1 based cgF1, replaced by the
``_micro`` keys).

Known differences from the official code, none of which changes a number on ordinary
files: spatio-temporal box IoUs for AP and cgF1 are float64 (the official ones are float32
torch sums, so a box IoU within ~1e-6 of a threshold could fall the other way); a pair of
box tracklets with an empty union has IoU 0 (the official code asserts); image
predictions belong to their ``image_id`` whatever their ``category_id``. The phrase-HOTA
box similarities are computed in float32 and compared with the thresholds in float32,
exactly as the official toolkit does under NumPy 1.x.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from anyseg.errors import InvalidInputError

#: IoU thresholds 0.50:0.05:0.95 (as pycocotools defines them).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
#: Recall points of the interpolated precision (0:0.01:1).
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)
#: HOTA localisation thresholds alpha = 0.05:0.05:0.95.
HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)
#: Score threshold of cgF1 (``>=``) and phrase HOTA (``>``).
SCORE_THRESHOLD = 0.5
#: Detections per query (or per video and category) kept for AP.
AP_MAX_DETS = 100
IOU_TYPES = ("bbox", "segm")
HOTA_FIELDS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "OWTA")

_I50 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0])
_I75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])
_EPS = np.finfo(float).eps

def _iou_name(iou_type: str) -> str:
    return "mask" if iou_type == "segm" else "bbox"


# --------------------------------------------------------------------------- masklets


@dataclass
class Masklet:
    """A ground-truth object or a prediction across the frames of one video (or image).

    ``masks[t]`` is a compressed RLE dict or ``None``; ``boxes[t]`` is ``[x, y, w, h]`` or
    ``None``. Per-frame mask areas are computed once, on first use; ``declared_areas`` are
    the ``areas`` a prediction file states (phrase HOTA drops frames whose area is 0).
    """

    uid: int
    media_id: int
    category_id: int
    masks: list
    boxes: list
    score: float = 1.0
    iscrowd: bool = False
    declared_areas: list | None = None
    _areas: np.ndarray | None = field(default=None, repr=False)

    @property
    def areas(self) -> np.ndarray:
        """Mask area per frame (0 where absent), int64."""
        if self._areas is None:
            present = [m for m in self.masks if m is not None]
            values = iter(mask_utils.area(present).tolist() if present else [])
            self._areas = np.array(
                [next(values) if m is not None else 0 for m in self.masks], dtype=np.int64
            )
        return self._areas

    def box_array(self) -> np.ndarray:
        """Boxes as a ``(T, 4)`` float64 array, zeros where absent."""
        return np.array([b if b is not None else (0, 0, 0, 0) for b in self.boxes], dtype=float)


def _to_rle(segm, height: int, width: int, where: str) -> dict | None:
    """A compressed RLE from a compressed/uncompressed RLE or a polygon list (``None``
    stays), checked to be ``height`` x ``width``."""
    if segm is None:
        return None
    if isinstance(segm, list):
        if not segm:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise InvalidInputError(f"{where}: a mask must be an RLE dict with 'size' and 'counts'")
    if list(segm["size"]) != [height, width]:
        raise InvalidInputError(f"{where}: mask size {segm['size']} (HxW) is not the media size {[height, width]}")
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def _load_json(path: str | Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} file {path} does not exist")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} file {path} is not valid JSON: {exc}") from exc


def _require(obj: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise InvalidInputError(f"{where} lacks {', '.join(missing)}")


# --------------------------------------------------------------------------- IoU


def mask_iou_matrix(dts: Sequence[Masklet], gts: Sequence[Masklet]) -> np.ndarray:
    """Spatio-temporal mask IoU ``(len(dts), len(gts))``: summed intersections over summed
    unions across frames; 1.0 where both masklets are empty on every frame."""
    inter = np.zeros((len(dts), len(gts)), dtype=np.int64)
    if not dts or not gts:
        return inter.astype(float)
    for t in range(len(gts[0].masks)):
        di = [i for i, d in enumerate(dts) if d.masks[t] is not None]
        gi = [j for j, g in enumerate(gts) if g.masks[t] is not None]
        if di and gi:
            inter[np.ix_(di, gi)] += _frame_intersections(
                [dts[i].masks[t] for i in di], [gts[j].masks[t] for j in gi]
            )
    dt_area = np.array([d.areas.sum() for d in dts], dtype=np.int64)
    gt_area = np.array([g.areas.sum() for g in gts], dtype=np.int64)
    union = dt_area[:, None] + gt_area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _frame_intersections(dt_rles: list, gt_rles: list) -> np.ndarray:
    """Exact pixel intersections of two lists of RLEs of one frame.

    pycocotools gives ``iou = i / (a + b - i)`` in float64; ``i = iou (a + b) / (1 + iou)``
    recovers the integer with an error far below 0.5.
    """
    iou = np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)), dtype=float)
    total = (
        np.asarray(mask_utils.area(dt_rles), dtype=float)[:, None]
        + np.asarray(mask_utils.area(gt_rles), dtype=float)[None, :]
    )
    return np.rint(iou * total / (1.0 + iou)).astype(np.int64)


def box_iou_matrix(dts: Sequence[Masklet], gts: Sequence[Masklet]) -> np.ndarray:
    """Spatio-temporal box IoU ``(len(dts), len(gts))`` of ``[x, y, w, h]`` boxes: summed
    intersection areas over summed union areas across frames (absent boxes have area 0;
    0.0 where the union is empty, a case the official code rejects)."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    d = np.stack([m.box_array() for m in dts])[:, None]  # (D, 1, T, 4)
    g = np.stack([m.box_array() for m in gts])[None, :]  # (1, G, T, 4)
    width = np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0])
    height = np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1])
    inter = (np.clip(width, 0, None) * np.clip(height, 0, None)).sum(-1)
    union = (d[..., 2] * d[..., 3] + g[..., 2] * g[..., 3]).sum(-1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_matrix(dts: Sequence[Masklet], gts: Sequence[Masklet], iou_type: str) -> np.ndarray:
    """Spatio-temporal IoU of ``iou_type`` ``"segm"`` or ``"bbox"``."""
    return mask_iou_matrix(dts, gts) if iou_type == "segm" else box_iou_matrix(dts, gts)


def _frame_box_ious(gt_boxes: list, dt_boxes: list) -> np.ndarray:
    """Per-frame box IoU ``(G, D)`` in float32, as the HOTA toolkit computes it."""
    a = np.array(gt_boxes, dtype=np.float32).reshape(-1, 4)
    b = np.array(dt_boxes, dtype=np.float32).reshape(-1, 4)
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.maximum(hi[..., 0] - lo[..., 0], 0) * np.maximum(hi[..., 1] - lo[..., 1], 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    inter[area_a <= _EPS, :] = 0
    inter[:, area_b <= _EPS] = 0
    inter[union <= _EPS] = 0
    union[union <= _EPS] = 1
    return inter / union


# --------------------------------------------------------------------------- cgF1


@dataclass
class QueryCounts:
    """cgF1 bookkeeping of one query: TP/FP/FN per IoU threshold and its IL outcome."""

    num_gt: int
    num_dt: int
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def f1(self) -> np.ndarray:
        """Per-threshold F1 = 2TP / (2TP + FP + FN), 1.0 for a query with nothing in it."""
        denom = 2 * self.tp + self.fp + self.fn
        return np.where(denom > 0, 2 * self.tp / np.maximum(denom, 1), 1.0)

    @property
    def local_f1(self) -> np.ndarray:
        """Per-threshold F1 with the official 1e-4 smoothing (for positive macro-F1)."""
        precision = self.tp / (self.tp + self.fp + 1e-4)
        recall = self.tp / (self.tp + self.fn + 1e-4)
        return 2 * precision * recall / (precision + recall + 1e-4)


def query_counts(ious: np.ndarray, num_dt: int, num_gt: int) -> QueryCounts:
    """Hungarian matching on ``ious`` (kept predictions x ground truth) of one query."""
    zeros = np.zeros(len(IOU_THRESHOLDS), dtype=np.int64)
    if num_dt == 0 or num_gt == 0:
        return QueryCounts(num_gt, num_dt, zeros, zeros + num_dt, zeros + num_gt)
    rows, cols = linear_sum_assignment(-ious)
    matched = ious[rows, cols]
    tp = (matched[None, :] >= IOU_THRESHOLDS[:, None]).sum(axis=1).astype(np.int64)
    return QueryCounts(num_gt, num_dt, tp, num_dt - tp, num_gt - tp)


def _summarize(values: np.ndarray) -> float:
    """Mean of the entries > -1 (-1 if none), as pycocotools' summaries do."""
    values = np.atleast_1d(values)
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else -1.0


def cgf1_metrics(queries: Iterable[QueryCounts]) -> dict[str, np.ndarray | float]:
    """Dataset-level cgF1 family from per-query counts (arrays are per IoU threshold)."""
    tp = np.zeros(len(IOU_THRESHOLDS), dtype=np.int64)
    fp, pm_fp, fn = tp.copy(), tp.copy(), tp.copy()
    local_f1 = np.zeros(len(IOU_THRESHOLDS))
    il_tp = il_fp = il_tn = il_fn = num_local = 0
    for q in queries:
        positive, predicted = q.num_gt > 0, q.num_dt > 0
        il_tp += positive and predicted
        il_fp += predicted and not positive
        il_tn += not (positive or predicted)
        il_fn += positive and not predicted
        tp += q.tp
        fp += q.fp
        fn += q.fn
        if positive and predicted:
            pm_fp += q.fp
            local_f1 += q.local_f1
            num_local += 1
    precision = tp / (tp + fp + 1e-4)
    pm_precision = tp / (tp + pm_fp + 1e-4)
    recall = tp / (tp + fn + 1e-4)
    pm_f1 = 2 * pm_precision * recall / (pm_precision + recall + 1e-4)
    il_precision = il_tp / (il_tp + il_fp + 1e-6)
    il_recall = il_tp / (il_tp + il_fn + 1e-6)
    il_mcc = float(il_tp * il_tn - il_fp * il_fn) / (
        (float(il_tp + il_fp) * float(il_tp + il_fn) * float(il_tn + il_fp) * float(il_tn + il_fn))
        ** 0.5
        + 1e-6
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        macro_f1 = local_f1 / num_local
    return {
        "cgF1": pm_f1 * il_mcc,
        "precision": precision,
        "recall": recall,
        "F1": 2 * precision * recall / (precision + recall + 1e-4),
        "positive_macro_F1": macro_f1,
        "positive_micro_F1": pm_f1,
        "positive_micro_precision": pm_precision,
        "IL_precision": il_precision,
        "IL_recall": il_recall,
        "IL_F1": 2 * il_precision * il_recall / (il_precision + il_recall + 1e-6),
        "IL_FPR": il_fp / (il_fp + il_tn + 1e-6),
        "IL_MCC": il_mcc,
    }


def _at(values: np.ndarray, index: int | None) -> float:
    """Summary of a per-threshold array: mean over thresholds, or the value at ``index``."""
    return _summarize(values if index is None else values[index])


# --------------------------------------------------------------------------- AP


def _greedy_matches(ious: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching of score-sorted predictions (rows) to ground truth (columns).

    Returns ``(matched, ignored)`` of shape ``(T, D)``: a prediction matched to a crowd
    ground truth is ignored (neither TP nor FP); crowd ground truth, sorted last, may
    absorb several predictions.
    """
    num_dt, num_gt = ious.shape
    matched = np.zeros((len(IOU_THRESHOLDS), num_dt), dtype=bool)
    ignored = np.zeros_like(matched)
    for ti, threshold in enumerate(IOU_THRESHOLDS):
        gt_taken = np.zeros(num_gt, dtype=bool)
        for d in range(num_dt):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(num_gt):
                if gt_taken[g] and not crowd[g]:
                    continue
                if m > -1 and not crowd[m] and crowd[g]:
                    break
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m > -1:
                matched[ti, d], ignored[ti, d] = True, crowd[m]
                gt_taken[m] = True
    return matched, ignored


@dataclass
class ApImage:
    """Scored predictions of one image (query, or video and category) for AP."""

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_gt: int


def ap_image(dts: list[Masklet], gts: list[Masklet], ious: np.ndarray) -> ApImage:
    """AP bookkeeping of one image: predictions sorted by score (stable) and cut to 100,
    crowd ground truth put last, greedy matching on ``ious`` (``dts`` x ``gts``)."""
    dt_order = np.argsort([-d.score for d in dts], kind="mergesort")[:AP_MAX_DETS]
    gt_order = np.argsort([g.iscrowd for g in gts], kind="mergesort")
    crowd = np.array([gts[i].iscrowd for i in gt_order], dtype=bool)
    if len(dt_order) and len(gt_order):
        matched, ignored = _greedy_matches(ious[np.ix_(dt_order, gt_order)], crowd)
    else:
        matched = ignored = np.zeros((len(IOU_THRESHOLDS), len(dt_order)), dtype=bool)
    scores = np.array([dts[i].score for i in dt_order], dtype=float)
    return ApImage(scores, matched, ignored, int((~crowd).sum()))


def precision_curve(images: list[ApImage]) -> np.ndarray | None:
    """Interpolated precision ``(T, R)`` of one category pooled over images (``None``
    without ground truth), as pycocotools' ``accumulate``."""
    num_gt = sum(im.num_gt for im in images)
    if num_gt == 0:
        return None
    scores = np.concatenate([im.scores for im in images])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([im.matched for im in images], axis=1)[:, order]
    ignored = np.concatenate([im.ignored for im in images], axis=1)[:, order]
    tps = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fps = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    out = np.zeros((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)))
    for t, (tp, fp) in enumerate(zip(tps, fps)):
        recall = tp / num_gt
        precision = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
        valid = idx < len(precision)
        out[t, valid] = precision[idx[valid]]
    return out


def mean_ap(curves: list[np.ndarray], iou_index: int | None = None) -> float:
    """COCO summary: mean precision over thresholds, recall points and categories."""
    if not curves:
        return -1.0
    stacked = np.stack(curves, axis=-1)  # (T, R, K)
    return _summarize(stacked if iou_index is None else stacked[iou_index])


# --------------------------------------------------------------------------- HOTA


def _hota_empty(num_gt_dets: int, num_dt_dets: int) -> dict[str, np.ndarray]:
    res = {k: np.zeros(len(HOTA_ALPHAS)) for k in HOTA_FIELDS + ("TP", "FN", "FP")}
    res["FN"] += num_gt_dets
    res["FP"] += num_dt_dets
    res["LocA"] += 1.0
    return res


def hota_sequence(
    gt_ids: list[np.ndarray], dt_ids: list[np.ndarray], similarity: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """HOTA of one sequence, per alpha.

    ``gt_ids[t]`` / ``dt_ids[t]`` are the contiguous track indices present on frame ``t``
    and ``similarity[t]`` their ``(G_t, D_t)`` IoU matrix. Returns per-alpha arrays of
    HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA, OWTA and the TP/FN/FP counts.
    """
    num_gt_dets = sum(len(g) for g in gt_ids)
    num_dt_dets = sum(len(d) for d in dt_ids)
    if num_gt_dets == 0 or num_dt_dets == 0:
        return _hota_empty(num_gt_dets, num_dt_dets)
    num_gt = max(int(g.max()) for g in gt_ids if len(g)) + 1
    num_dt = max(int(d.max()) for d in dt_ids if len(d)) + 1
    alignment, gt_count, dt_count = _global_alignment(gt_ids, dt_ids, similarity, num_gt, num_dt)
    res = {k: np.zeros(len(HOTA_ALPHAS)) for k in ("TP", "FN", "FP", "LocA", "AssA", "AssRe", "AssPr")}
    matches = [np.zeros((num_gt, num_dt)) for _ in HOTA_ALPHAS]
    for g, d, sim in zip(gt_ids, dt_ids, similarity):
        if len(g) == 0 or len(d) == 0:
            res["FP"] += len(d)
            res["FN"] += len(g)
            continue
        rows, cols = linear_sum_assignment(-(alignment[g[:, None], d[None, :]] * sim))
        matched_sim = sim[rows, cols]
        for a, alpha in enumerate(HOTA_ALPHAS):
            # compared in the similarity's dtype (float32 for boxes), as NumPy 1.x did
            ok = matched_sim >= np.asarray(alpha - _EPS, dtype=sim.dtype)
            r, c = rows[ok], cols[ok]
            res["TP"][a] += len(r)
            res["FN"][a] += len(g) - len(r)
            res["FP"][a] += len(d) - len(r)
            if len(r):
                res["LocA"][a] += sum(matched_sim[ok].tolist())
                matches[a][g[r], d[c]] += 1
    for a in range(len(HOTA_ALPHAS)):
        _association(res, a, matches[a], gt_count, dt_count)
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["TP"])
    return _hota_final(res)


def _global_alignment(
    gt_ids: list[np.ndarray], dt_ids: list[np.ndarray], similarity: list[np.ndarray], num_gt: int, num_dt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jaccard alignment between track pairs, from IoU-normalised per-frame similarities."""
    potential = np.zeros((num_gt, num_dt))
    gt_count = np.zeros((num_gt, 1))
    dt_count = np.zeros((1, num_dt))
    for g, d, sim in zip(gt_ids, dt_ids, similarity):
        denom = sim.sum(0)[np.newaxis, :] + sim.sum(1)[:, np.newaxis] - sim
        sim_iou = np.zeros_like(sim)
        mask = denom > 0 + _EPS
        sim_iou[mask] = sim[mask] / denom[mask]
        potential[g[:, None], d[None, :]] += sim_iou
        gt_count[g] += 1
        dt_count[0, d] += 1
    return potential / (gt_count + dt_count - potential), gt_count, dt_count


def _association(res: dict, a: int, matches: np.ndarray, gt_count, dt_count) -> None:
    """AssA, AssRe, AssPr at alpha index ``a``, averaged over the matched detections."""
    tp = np.maximum(1, res["TP"][a])
    res["AssA"][a] = np.sum(matches * (matches / np.maximum(1, gt_count + dt_count - matches))) / tp
    res["AssRe"][a] = np.sum(matches * (matches / np.maximum(1, gt_count))) / tp
    res["AssPr"][a] = np.sum(matches * (matches / np.maximum(1, dt_count))) / tp


def _hota_final(res: dict) -> dict:
    """Fields derived from the counts and AssA (shared by sequences and combinations)."""
    tp, fn, fp = res["TP"], res["FN"], res["FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    res["OWTA"] = np.sqrt(res["DetRe"] * res["AssA"])
    return res


def hota_combine(sequences: list[dict]) -> dict[str, np.ndarray]:
    """Detection-weighted combination of sequences (TrackEval's ``combine_sequences``)."""
    res = {k: sum(s[k] for s in sequences) for k in ("TP", "FN", "FP")}
    weight = np.maximum(1.0, res["TP"])
    for key in ("AssRe", "AssPr", "AssA"):
        res[key] = sum(s[key] * s["TP"] for s in sequences) / weight
    loc = sum(s["LocA"] * s["TP"] for s in sequences)
    res["LocA"] = np.maximum(1e-10, loc) / np.maximum(1e-10, res["TP"])
    return _hota_final(res)


def _hota_inputs(gts: list[Masklet], dts: list[Masklet], iou_type: str):
    """Per-frame contiguous track indices and similarity matrices of one sequence."""
    key = "masks" if iou_type == "segm" else "boxes"

    def present(m: Masklet, t: int) -> bool:
        return getattr(m, key)[t] is not None

    num_frames = len(getattr(gts[0] if gts else dts[0], key))
    gt_tracks = [i for i, g in enumerate(gts) if any(present(g, t) for t in range(num_frames))]
    dt_tracks = [i for i, d in enumerate(dts) if any(present(d, t) for t in range(num_frames))]
    gt_rank = {i: r for r, i in enumerate(sorted(gt_tracks, key=lambda i: gts[i].uid))}
    dt_rank = {i: r for r, i in enumerate(dt_tracks)}
    gt_ids, dt_ids, sims = [], [], []
    for t in range(num_frames):
        gi = [i for i in gt_tracks if present(gts[i], t)]
        di = [i for i in dt_tracks if present(dts[i], t)]
        gt_ids.append(np.array([gt_rank[i] for i in gi], dtype=int))
        dt_ids.append(np.array([dt_rank[i] for i in di], dtype=int))
        gt_dets = [getattr(gts[i], key)[t] for i in gi]
        dt_dets = [getattr(dts[i], key)[t] for i in di]
        sims.append(_frame_similarity(gt_dets, dt_dets, iou_type))
    return gt_ids, dt_ids, sims


def _frame_similarity(gt_dets: list, dt_dets: list, iou_type: str) -> np.ndarray:
    if iou_type == "bbox":
        return _frame_box_ious(gt_dets, dt_dets)
    if not gt_dets or not dt_dets:
        return np.zeros((len(gt_dets), len(dt_dets)))
    return np.asarray(mask_utils.iou(gt_dets, dt_dets, [0] * len(dt_dets)), dtype=float)


def _hota_prediction(d: Masklet) -> Masklet:
    """A prediction as phrase HOTA sees it: frames with an empty mask or box removed."""
    areas = d.declared_areas if d.declared_areas is not None else d.areas
    keep = [
        bool(a) and b is not None and any(x != 0 for x in b) for a, b in zip(areas, d.boxes)
    ]
    return Masklet(
        d.uid,
        d.media_id,
        d.category_id,
        [m if k else None for m, k in zip(d.masks, keep)],
        [b if k else None for b, k in zip(d.boxes, keep)],
        d.score,
    )


# --------------------------------------------------------------------------- video


@dataclass
class VideoDataset:
    """SA-Co/VEval ground truth (YT-VIS style).

    ``np_pairs`` lists every (video, category) query, negatives included (``None`` when
    the file has no ``video_np_pairs``: then IL_MCC and cgF1 are undefined);
    ``challenging`` holds the queries tagged ``tracking_challenging_pair`` (``None``
    unless every annotation has ``tags``).
    """

    sizes: dict[int, tuple[int, int]]
    num_frames: dict[int, int]
    annotations: list[Masklet]
    category_ids: list[int]
    np_pairs: list[tuple[int, int]] | None
    challenging: set[tuple[int, int]] | None


def load_video_gt(path: str | Path) -> VideoDataset:
    """Read a YT-VIS style ground-truth file (``videos``, ``annotations``, ``categories``,
    optional ``video_np_pairs``)."""
    data = _load_json(path, "ground-truth")
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: ground truth must be a JSON object")
    _require(data, ("videos", "annotations", "categories"), f"ground truth {path}")
    sizes, num_frames = {}, {}
    for v in data["videos"]:
        _require(v, ("id", "height", "width"), f"{path}: video entry")
        sizes[v["id"]] = (v["height"], v["width"])
        num_frames[v["id"]] = len(v.get("file_names", ())) or int(v.get("length", 0))
    anns = [_gt_masklet(a, sizes, num_frames, f"{path}: annotation {i}") for i, a in enumerate(data["annotations"])]
    pairs = None
    if "video_np_pairs" in data:
        pairs = [(p["video_id"], p["category_id"]) for p in data["video_np_pairs"]]
        unknown = [p for p in pairs if p[0] not in sizes]
        if unknown:
            raise InvalidInputError(f"{path}: video_np_pairs refer to unknown videos {unknown[:3]}")
    challenging = None
    if data["annotations"] and all("tags" in a for a in data["annotations"]):
        challenging = {
            (a["video_id"], a["category_id"])
            for a in data["annotations"]
            if "tracking_challenging_pair" in a["tags"]
        }
    category_ids = [c["id"] for c in data["categories"]]
    return VideoDataset(sizes, num_frames, anns, category_ids, pairs, challenging)


def _gt_masklet(ann: dict, sizes: dict, num_frames: dict, where: str) -> Masklet:
    _require(ann, ("id", "video_id", "category_id", "segmentations", "bboxes"), where)
    if ann["video_id"] not in sizes:
        raise InvalidInputError(f"{where} refers to unknown video {ann['video_id']}")
    _check_length(ann, num_frames[ann["video_id"]], where)
    h, w = ann.get("height", sizes[ann["video_id"]][0]), ann.get("width", sizes[ann["video_id"]][1])
    return Masklet(
        uid=ann["id"],
        media_id=ann["video_id"],
        category_id=ann["category_id"],
        masks=[_to_rle(s, h, w, where) for s in ann["segmentations"]],
        boxes=list(ann["bboxes"]),
        iscrowd=bool(ann.get("iscrowd", 0)),
    )


def _check_length(obj: dict, frames: int, where: str) -> None:
    for key in ("segmentations", "bboxes"):
        if len(obj[key]) != frames:
            raise InvalidInputError(f"{where}: {len(obj[key])} {key} for a {frames}-frame video")


def load_video_predictions(path: str | Path, gt: VideoDataset) -> list[Masklet]:
    """Read a YT-VIS style prediction list (``video_id``, ``category_id``, ``score``,
    per-frame ``segmentations`` and ``bboxes``), checked against the ground truth."""
    data = _load_json(path, "prediction")
    if not isinstance(data, list):
        raise InvalidInputError(f"{path}: predictions must be a JSON list")
    preds = []
    for i, p in enumerate(data):
        where = f"{path}: prediction {i}"
        _require(p, ("video_id", "category_id", "score", "segmentations", "bboxes"), where)
        if p["video_id"] not in gt.sizes:
            raise InvalidInputError(f"{where} refers to video {p['video_id']}, absent from the ground truth")
        _check_length(p, gt.num_frames[p["video_id"]], where)
        h, w = gt.sizes[p["video_id"]]
        preds.append(
            Masklet(
                uid=i + 1,
                media_id=p["video_id"],
                category_id=p["category_id"],
                masks=[_to_rle(s, h, w, where) for s in p["segmentations"]],
                boxes=list(p["bboxes"]),
                score=float(p["score"]),
                declared_areas=p.get("areas"),
            )
        )
    return preds


def _group(masklets: Iterable[Masklet]) -> dict[tuple[int, int], list[Masklet]]:
    """Masklets by query (media id, category id), in file order."""
    groups: dict[tuple[int, int], list[Masklet]] = defaultdict(list)
    for m in masklets:
        groups[(m.media_id, m.category_id)].append(m)
    return groups


@dataclass
class _QueryEval:
    """Everything one query contributes for one IoU type."""

    counts: QueryCounts
    ap: ApImage
    hota: dict | None


def _evaluate_query(gts: list[Masklet], dts: list[Masklet], iou_type: str) -> _QueryEval:
    ious = iou_matrix(dts, gts, iou_type)
    kept = [i for i, d in enumerate(dts) if d.score >= SCORE_THRESHOLD]
    positives = [j for j, g in enumerate(gts) if not g.iscrowd]
    counts = query_counts(ious[np.ix_(kept, positives)], len(kept), len(positives))
    hota_dts = [_hota_prediction(d) for d in dts if d.score > SCORE_THRESHOLD]
    hota = hota_sequence(*_hota_inputs(gts, hota_dts, iou_type)) if gts or hota_dts else None
    return _QueryEval(counts, ap_image(dts, gts, ious), hota)


@dataclass
class SacoVideoResult:
    """Dataset-level metrics (official key names) and per (video, category) metrics."""

    dataset: dict[str, float]
    per_query: dict[tuple[int, int], dict[str, float]]

    def to_json(self) -> dict:
        """The official result-file layout: ``dataset_results`` and ``video_np_results``."""
        return {
            "dataset_results": self.dataset,
            "video_np_results": [
                {"video_id": v, "category_id": c, **res} for (v, c), res in sorted(self.per_query.items())
            ],
        }


def evaluate_video(
    gt: VideoDataset,
    preds: list[Masklet],
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> SacoVideoResult:
    """All SA-Co video metrics, for boxes (``bbox``) and masks (``mask``; TETA masks only).

    ``progress`` wraps the iteration over (query, IoU type) jobs, e.g. in a tqdm bar, and
    receives their number.
    """
    gts_by_q, dts_by_q = _group(gt.annotations), _group(preds)
    queries = sorted(set(gts_by_q) | set(dts_by_q))
    negatives = sorted(set(gt.np_pairs or ()) - set(queries))
    jobs: Iterable = [(q, t) for t in IOU_TYPES for q in queries]
    if progress is not None:
        jobs = progress(jobs, len(IOU_TYPES) * len(queries))
    evals: dict[str, dict] = {t: {} for t in IOU_TYPES}
    for q, t in jobs:
        evals[t][q] = _evaluate_query(gts_by_q.get(q, []), dts_by_q.get(q, []), t)

    empty = query_counts(np.zeros((0, 0)), 0, 0)
    dataset: dict[str, float] = {}
    per_query: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for t in IOU_TYPES:
        dataset[f"video_{_iou_name(t)}_mAP_50_95"] = _class_map(evals[t], set(gt.category_ids))
    for t in IOU_TYPES:
        dataset.update(_phrase_ap_keys([e.ap for e in evals[t].values()], t))
    dataset.update(teta(gt, preds))
    for t in IOU_TYPES:
        sequences = {q: e.hota for q, e in evals[t].items() if e.hota is not None}
        dataset.update(_hota_keys(sequences, t, gt.challenging))
        for q, res in sequences.items():
            per_query[q].update({f"{_iou_name(t)}_{k}": float(np.mean(res[k])) for k in HOTA_FIELDS})
    for t in IOU_TYPES:
        counts = {q: e.counts for q, e in evals[t].items()} | {q: empty for q in negatives}
        if gt.np_pairs is not None:
            dataset.update(_cgf1_keys(list(counts.values()), t))
        for q, c in counts.items():
            per_query[q].update(_query_keys(c, _iou_name(t)))
    return SacoVideoResult(dataset, dict(per_query))


def _class_map(evals: dict, category_ids: set) -> float:
    """YT-VIS mAP@[.5:.95]: AP per ground-truth category (its videos pooled), averaged."""
    by_category: dict[int, list[ApImage]] = defaultdict(list)
    for (_, category), e in sorted(evals.items()):
        if category in category_ids:
            by_category[category].append(e.ap)
    curves = [precision_curve(by_category[c]) for c in sorted(by_category)]
    return mean_ap([c for c in curves if c is not None])


def _phrase_ap_keys(images: list[ApImage], iou_type: str) -> dict[str, float]:
    """Phrase AP: every query pooled as one category."""
    curve = precision_curve(images) if images else None
    curves = [curve] if curve is not None else []
    prefix = f"video_{_iou_name(iou_type)}_phrase_ap"
    return {
        f"{prefix}_50_95": mean_ap(curves),
        f"{prefix}_50": mean_ap(curves, _I50),
        f"{prefix}_75": mean_ap(curves, _I75),
    }


def _hota_keys(sequences: dict, iou_type: str, challenging: set | None) -> dict[str, float]:
    """Phrase HOTA over all queries (and over the challenging ones, when tagged)."""
    subsets = {"all": list(sequences)}
    if challenging is not None:
        subsets["challenging"] = [q for q in sequences if q in challenging]
    out = {}
    for subset, keys in subsets.items():
        if keys:
            combined = hota_combine([sequences[k] for k in keys])
            for metric in HOTA_FIELDS:
                key = f"video_{_iou_name(iou_type)}_{subset}_phrase_{metric}"
                out[key] = float(np.mean(combined[metric]))
    return out


def _cgf1_keys(counts: list[QueryCounts], iou_type: str) -> dict[str, float]:
    """The ``demo`` keys: cgF1 (micro), IL_MCC and positive micro-F1."""
    m = cgf1_metrics(counts)
    prefix = f"video_{_iou_name(iou_type)}_demo"
    out = {
        f"{prefix}_cgf1_micro_50_95": _at(m["cgF1"], None),
        f"{prefix}_ilmcc_50_95": float(m["IL_MCC"]),
        f"{prefix}_positive_micro_f1_50_95": _at(m["positive_micro_F1"], None),
    }
    for index, suffix in ((_I50, "50"), (_I75, "75")):
        cg, pm = _at(m["cgF1"], index), _at(m["positive_micro_F1"], index)
        out[f"{prefix}_cgf1_micro_{suffix}"] = cg
        # the official evaluator writes cgF1 / pmF1 here (IL_MCC up to rounding; NaN if pmF1 = 0)
        out[f"{prefix}_ilmcc_{suffix}"] = cg / pm if pm != 0 else float("nan")
        out[f"{prefix}_positive_micro_f1_{suffix}"] = pm
    return out


def _query_keys(c: QueryCounts, name: str) -> dict[str, float]:
    """Per-query TP, FP, FN and F1 (mean over thresholds, and at 0.5 and 0.75)."""
    f1 = c.f1
    out = {
        f"{name}_TP_50_95": float(c.tp.mean()),
        f"{name}_FP_50_95": float(c.fp.mean()),
        f"{name}_FN_50_95": float(c.fn.mean()),
        f"{name}_F1_50_95": float(f1.mean()),
    }
    for index, suffix in ((_I50, "50"), (_I75, "75")):
        out[f"{name}_TP_{suffix}"] = float(c.tp[index])
        out[f"{name}_FP_{suffix}"] = float(c.fp[index])
        out[f"{name}_FN_{suffix}"] = float(c.fn[index])
        out[f"{name}_F1_{suffix}"] = float(f1[index])
    return out


# --------------------------------------------------------------------------- TETA

#: TETA localisation thresholds 0:0.05:0.95; classification uses those >= 0.5.
TETA_ALPHAS = np.arange(0.0, 0.99, 0.05)
_TETA_CLS = int(np.flatnonzero(TETA_ALPHAS >= 0.5)[0])
#: Summary fields of TETA and the key suffixes the official evaluator writes for them.
TETA_FIELDS = {
    "TETA": "teta",
    "LocA": "loc_a",
    "AssocA": "assoc_a",
    "ClsA": "cls_a",
    "LocRe": "loc_re",
    "LocPr": "loc_pr",
    "AssocRe": "assoc_re",
    "AssocPr": "assoc_pr",
    "ClsRe": "cls_re",
    "ClsPr": "cls_pr",
}


@dataclass
class _TetaFrame:
    """All detections of one frame: track ids, classes and the mask IoU ``(G, D)``."""

    gt_ids: np.ndarray
    gt_cls: np.ndarray
    dt_ids: np.ndarray
    dt_cls: np.ndarray
    sim: np.ndarray


def _teta_frames(gts: list[Masklet], dts: list[Masklet], num_frames: int) -> list[_TetaFrame]:
    """Per-frame detections of one video, all classes: ground truth where its box exists,
    predictions (score >= 0.5) where their box is neither missing nor all zeros."""
    frames = []
    for t in range(num_frames):
        g = [m for m in gts if m.boxes[t] is not None]
        d = [m for m in dts if m.boxes[t] is not None and any(x != 0 for x in m.boxes[t])]
        sim = _frame_similarity([m.masks[t] for m in g], [m.masks[t] for m in d], "segm")
        frames.append(
            _TetaFrame(
                np.array([m.uid for m in g], dtype=int),
                np.array([m.category_id for m in g], dtype=int),
                np.array([m.uid for m in d], dtype=int),
                np.array([m.category_id for m in d], dtype=int),
                sim,
            )
        )
    return frames


@dataclass
class _TetaData:
    """One video seen for one class (or all classes): contiguous ids per frame."""

    gt_ids: list[np.ndarray]
    dt_ids: list[np.ndarray]
    dt_cls: list[np.ndarray]
    sim: list[np.ndarray]
    overlap_ids: list[np.ndarray]
    cls_eval_counts: list[int]
    gt_orig: np.ndarray
    dt_orig: np.ndarray

    @property
    def num_gt_dets(self) -> int:
        return sum(len(g) for g in self.gt_ids)

    @property
    def num_overlap_dets(self) -> int:
        return sum(len(o) for o in self.overlap_ids)


def _teta_select(frames: list[_TetaFrame], cls: int | None, assignment: list[dict] | None) -> _TetaData:
    """TETA's per-class view: ground truth of ``cls`` (all for ``None``) and the predicted
    tracks that overlap it (IoU >= 0.5) on some frame, minus those the global assignment
    gave to ground truth of another class on that frame."""
    masks, overlaps, exclusive = [], [], []
    for t, f in enumerate(frames):
        gmask = np.ones(len(f.gt_ids), bool) if cls is None else f.gt_cls == cls
        overlap = set(f.dt_ids[(f.sim[gmask] >= 0.5).any(axis=0)].tolist())
        if assignment is not None:
            taken = set(assignment[t]) - set(f.gt_ids[gmask].tolist())
            overlap -= {assignment[t][g] for g in taken}
        masks.append(gmask)
        overlaps.append(overlap)
        exclusive.append(set() if cls is None else set(f.dt_ids[f.dt_cls == cls].tolist()))
    kept_tracks = np.array(sorted(set().union(*overlaps)), dtype=int)
    gt_ids, dt_ids, dt_cls, sims = [], [], [], []
    for f, gmask in zip(frames, masks):
        tmask = np.isin(f.dt_ids, kept_tracks)
        gt_ids.append(f.gt_ids[gmask])
        dt_ids.append(f.dt_ids[tmask])
        dt_cls.append(f.dt_cls[tmask])
        sims.append(f.sim[gmask][:, tmask])
    gt_orig = np.unique(np.concatenate(gt_ids)) if gt_ids else np.zeros(0, int)
    dt_orig = np.unique(np.concatenate(dt_ids)) if dt_ids else np.zeros(0, int)
    return _TetaData(
        gt_ids=[_relabel(g, gt_orig) for g in gt_ids],
        dt_ids=[_relabel(d, dt_orig) for d in dt_ids],
        dt_cls=dt_cls,
        sim=sims,
        overlap_ids=[_relabel(np.array(sorted(o), dtype=int), dt_orig) for o in overlaps],
        cls_eval_counts=[len(o | e) for o, e in zip(overlaps, exclusive)],
        gt_orig=gt_orig,
        dt_orig=dt_orig,
    )


def _relabel(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Original track ids as contiguous indices into ``sorted_ids``."""
    return np.searchsorted(sorted_ids, ids).astype(int)


def _teta_matches(data: _TetaData, alignment: np.ndarray, t: int, alphas: np.ndarray):
    """Hungarian matching of frame ``t`` on alignment x IoU, kept per alpha where IoU >= alpha."""
    g, d, sim = data.gt_ids[t], data.dt_ids[t], data.sim[t]
    rows, cols = linear_sum_assignment(-(alignment[g[:, None], d[None, :]] * sim))
    return [(rows[ok], cols[ok]) for ok in (sim[rows, cols] >= a - _EPS for a in alphas)]


def _teta_assignment(data: _TetaData) -> list[dict]:
    """Class-agnostic matching at IoU 0.5: ``{ground-truth track: predicted track}`` per frame."""
    out: list[dict] = [{} for _ in data.gt_ids]
    if data.num_overlap_dets == 0 or data.num_gt_dets == 0:
        return out
    alignment, _, _ = _global_alignment(data.gt_ids, data.dt_ids, data.sim, len(data.gt_orig), len(data.dt_orig))
    for t in range(len(data.gt_ids)):
        ((r, c),) = _teta_matches(data, alignment, t, np.array([0.5]))
        out[t] = dict(zip(data.gt_orig[data.gt_ids[t][r]].tolist(), data.dt_orig[data.dt_ids[t][c]].tolist()))
    return out


def _teta_counts() -> dict[str, np.ndarray]:
    n, m = len(TETA_ALPHAS), len(TETA_ALPHAS) - _TETA_CLS
    res = {k: np.zeros(n) for k in ("Loc_TP", "Loc_FN", "Loc_FP", "AssocA", "AssocRe", "AssocPr")}
    res.update({k: np.zeros(m) for k in ("Cls_TP", "Cls_FN", "Cls_FP")})
    return res


def _teta_class(data: _TetaData, cls: int, cls_fp: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """TETA counts of one class on one video; classification false positives go to
    ``cls_fp`` (per class, including other classes' wrongly labelled matches)."""
    res = _teta_counts()
    if data.num_overlap_dets == 0 or data.num_gt_dets == 0:
        res["Loc_FN"] += data.num_gt_dets
        # "=", not "+=": the official code drops what other classes attributed to this one
        cls_fp[cls] = sum(data.cls_eval_counts) * np.ones(len(TETA_ALPHAS) - _TETA_CLS)
        return _teta_final(res)
    alignment, gt_count, dt_count = _global_alignment(
        data.gt_ids, data.dt_ids, data.sim, len(data.gt_orig), len(data.dt_orig)
    )
    matches = [np.zeros_like(alignment) for _ in TETA_ALPHAS]
    for t, (g, d) in enumerate(zip(data.gt_ids, data.dt_ids)):
        if len(g) == 0:
            cls_fp[cls] += data.cls_eval_counts[t]
            continue
        cls_fp[cls] += data.cls_eval_counts[t] - len(data.overlap_ids[t])
        overlap = set(data.dt_orig[data.overlap_ids[t]].tolist())
        for a, (r, c) in enumerate(_teta_matches(data, alignment, t, TETA_ALPHAS)):
            if a >= _TETA_CLS:
                labels = data.dt_cls[t][c]
                for wrong in labels[labels != cls].tolist():
                    if wrong in cls_fp:
                        cls_fp[wrong][a - _TETA_CLS] += 1
                res["Cls_TP"][a - _TETA_CLS] += np.sum(labels == cls)
                res["Cls_FN"][a - _TETA_CLS] += np.sum(labels != cls)
            res["Loc_TP"][a] += len(r)
            res["Loc_FN"][a] += len(g) - len(r)
            res["Loc_FP"][a] += len(overlap - set(data.dt_orig[d[c]].tolist()))
            if len(r):
                matches[a][g[r], d[c]] += 1
    for a in range(len(TETA_ALPHAS)):
        tp = np.maximum(1, res["Loc_TP"][a])
        m = matches[a]
        res["AssocA"][a] = np.sum(m * (m / np.maximum(1, gt_count + dt_count - m))) / tp
        res["AssocRe"][a] = np.sum(m * (m / np.maximum(1, gt_count))) / tp
        res["AssocPr"][a] = np.sum(m * (m / np.maximum(1, dt_count))) / tp
    return _teta_final(res)


def _teta_final(res: dict) -> dict:
    """Derived TETA fields; the classification ones are means over alpha >= 0.5."""
    tp, fn, fp = res["Loc_TP"], res["Loc_FN"], res["Loc_FP"]
    res["LocRe"] = tp / np.maximum(1, tp + fn)
    res["LocPr"] = tp / np.maximum(1, tp + fp)
    res["LocA"] = tp / np.maximum(1, tp + fn + fp)
    ctp, cfn, cfp = res["Cls_TP"], res["Cls_FN"], res["Cls_FP"]
    res["ClsRe"] = np.mean(ctp / np.maximum(1, ctp + cfn))
    res["ClsPr"] = np.mean(ctp / np.maximum(1, ctp + cfp))
    res["ClsA"] = np.mean(ctp / np.maximum(1, ctp + cfn + cfp))
    res["TETA"] = (res["LocA"] + res["AssocA"] + res["ClsA"]) / 3
    return res


def _teta_combine(sequences: list[dict]) -> dict:
    """Videos of one class: counts summed, association weighted by localisation TPs."""
    res = {k: sum(s[k] for s in sequences) for k in ("Loc_TP", "Loc_FN", "Loc_FP", "Cls_TP", "Cls_FN", "Cls_FP")}
    for key in ("AssocRe", "AssocPr", "AssocA"):
        res[key] = sum(s[key] * s["Loc_TP"] for s in sequences) / np.maximum(1.0, res["Loc_TP"])
    return _teta_final(res)


def teta(gt: VideoDataset, preds: list[Masklet]) -> dict[str, float]:
    """TETA on masks, as the official evaluator runs it (exhaustive labels, no NMS,
    predictions with score >= 0.5): class-aware, each ground-truth category a class,
    averaged over the classes with any localisation count; values on the 0-100 scale
    rounded to 5 significant digits as the official toolkit prints them."""
    with_gt = {a.category_id for a in gt.annotations if any(b is not None for b in a.boxes)}
    classes = list(dict.fromkeys(c for c in gt.category_ids if c in with_gt))
    kept = [d for d in preds if d.score >= SCORE_THRESHOLD]
    gts_by_video, dts_by_video = _group_by_media(gt.annotations), _group_by_media(kept)
    per_class: dict[int, list[dict]] = {c: [] for c in classes}
    for video in sorted(gt.num_frames):
        gts, dts = gts_by_video.get(video, []), dts_by_video.get(video, [])
        # a class with neither ground truth nor predictions in this video adds only zeros
        present = {m.category_id for m in gts + dts}
        video_classes = [c for c in classes if c in present]
        if not video_classes:
            continue
        frames = _teta_frames(gts, dts, gt.num_frames[video])
        assignment = _teta_assignment(_teta_select(frames, None, None))
        cls_fp = {c: np.zeros(len(TETA_ALPHAS) - _TETA_CLS) for c in video_classes}
        results = {c: _teta_class(_teta_select(frames, c, assignment), c, cls_fp) for c in video_classes}
        for c in video_classes:
            results[c]["Cls_FP"] = results[c]["Cls_FP"] + cls_fp[c]
            per_class[c].append(results[c])
    combined = [_teta_combine(seqs) for seqs in per_class.values() if seqs]
    combined = [r for r in combined if np.any(r["Loc_TP"] + r["Loc_FN"] + r["Loc_FP"] > _EPS)]
    if not combined:
        return {}
    return {
        f"video_mask_{key}": float(f"{100 * np.mean(np.mean([r[field] for r in combined], axis=0)):1.5g}")
        for field, key in TETA_FIELDS.items()
    }


# --------------------------------------------------------------------------- image

#: Metrics of the image evaluator, in its order: (name, per-IoU-threshold?, threshold).
_BOX_LEVEL = (
    "cgF1",
    "precision",
    "recall",
    "F1",
    "positive_macro_F1",
    "positive_micro_F1",
    "positive_micro_precision",
)
IMAGE_METRICS = (
    [(n, True, None) for n in _BOX_LEVEL]
    + [(n, False, None) for n in ("IL_precision", "IL_recall", "IL_F1", "IL_FPR", "IL_MCC")]
    + [(n, True, thr) for thr in (0.5, 0.75) for n in _BOX_LEVEL]
)


@dataclass
class ImageDataset:
    """SA-Co/Gold-style ground truth (COCO): one ``images`` entry per (image, noun phrase)
    query, with its ``is_instance_exhaustive`` flag, and single-frame masklets."""

    sizes: dict[int, tuple[int, int]]
    exhaustive: dict[int, bool]
    annotations: list[Masklet]


def load_image_gt(path: str | Path) -> ImageDataset:
    """Read a COCO ground-truth file; ``is_instance_exhaustive`` defaults to true."""
    data = _load_json(path, "ground-truth")
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: ground truth must be a JSON object")
    _require(data, ("images", "annotations"), f"ground truth {path}")
    sizes, exhaustive = {}, {}
    for img in data["images"]:
        _require(img, ("id", "height", "width"), f"{path}: image entry")
        sizes[img["id"]] = (img["height"], img["width"])
        exhaustive[img["id"]] = bool(img.get("is_instance_exhaustive", True))
    anns = []
    for i, a in enumerate(data["annotations"]):
        where = f"{path}: annotation {i}"
        _require(a, ("image_id",), where)
        if a["image_id"] not in sizes:
            raise InvalidInputError(f"{where} refers to unknown image {a['image_id']}")
        anns.append(_image_masklet(a, sizes[a["image_id"]], a.get("id", i), 1.0, where))
    return ImageDataset(sizes, exhaustive, anns)


def _image_masklet(ann: dict, size: tuple[int, int], uid: int, score: float, where: str) -> Masklet:
    if "segmentation" not in ann and "bbox" not in ann:
        raise InvalidInputError(f"{where} has neither 'segmentation' nor 'bbox'")
    mask = _to_rle(ann.get("segmentation"), size[0], size[1], where)
    box = ann.get("bbox")
    if box is None and mask is not None:
        box = mask_utils.toBbox(mask).tolist()
    return Masklet(uid, ann["image_id"], ann.get("category_id", 0), [mask], [box], score, bool(ann.get("iscrowd", 0)))


def load_image_predictions(path: str | Path, gt: ImageDataset) -> list[Masklet]:
    """Read a COCO result list (``image_id``, ``score``, ``segmentation`` and/or ``bbox``)."""
    data = _load_json(path, "prediction")
    if not isinstance(data, list):
        raise InvalidInputError(f"{path}: predictions must be a JSON list")
    preds = []
    for i, p in enumerate(data):
        where = f"{path}: prediction {i}"
        _require(p, ("image_id", "score"), where)
        if p["image_id"] not in gt.sizes:
            raise InvalidInputError(f"{where} refers to image {p['image_id']}, absent from the ground truth")
        preds.append(_image_masklet(p, gt.sizes[p["image_id"]], i + 1, float(p["score"]), where))
    return preds


def _image_ious(dts: list[Masklet], gts: list[Masklet], iou_type: str) -> np.ndarray:
    """Per-image IoU as pycocotools computes it (0 where the union is empty)."""
    key = "masks" if iou_type == "segm" else "boxes"
    d = [getattr(m, key)[0] for m in dts]
    g = [getattr(m, key)[0] for m in gts]
    if any(x is None for x in d + g):
        raise InvalidInputError(f"{iou_type} evaluation needs a {key[:-1]} on every annotation and prediction")
    if not d or not g:
        return np.zeros((len(d), len(g)))
    return np.asarray(mask_utils.iou(d, g, [0] * len(g)), dtype=float)


def _image_counts(gts: list[Masklet], dts: list[Masklet], iou_type: str) -> QueryCounts:
    kept = [d for d in dts if d.score >= SCORE_THRESHOLD]
    positives = [g for g in gts if not g.iscrowd]
    ious = _image_ious(kept, positives, iou_type) if kept and positives else np.zeros((0, 0))
    return query_counts(ious, len(kept), len(positives))


def _best_counts(candidates: list[QueryCounts]) -> QueryCounts:
    """Oracle over several ground truths: the highest mean local F1, and a query that is
    empty in both ground truth and prediction (a perfect true negative) wins outright."""
    best = candidates[0]
    for cur in candidates[1:]:
        cur_tn = cur.num_gt == 0 and cur.num_dt == 0
        best_tn = best.num_gt == 0 and best.num_dt == 0
        if not cur_tn and not best_tn:
            if cur.local_f1.mean() > best.local_f1.mean():
                best = cur
        elif cur_tn:
            best = cur
    return best


def evaluate_image(
    gts: Sequence[ImageDataset],
    preds: list[Masklet],
    iou_types: Sequence[str] = IOU_TYPES,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> dict[str, float]:
    """cgF1 family on images, keys ``cgF1_eval_{iou_type}_{metric}[@thr]``.

    Only queries that are instance-exhaustive in every ground truth are scored; with
    several ground truths (SA-Co/Gold's three annotations) each query is scored against
    the one that suits the prediction best.
    """
    first = gts[0]
    queries = [q for q in first.sizes if all(g.exhaustive.get(q, True) for g in gts) and first.exhaustive[q]]
    gts_by_q = [_group_by_media(g.annotations) for g in gts]
    dts_by_q = _group_by_media(preds)
    jobs: Iterable = [(q, t) for t in iou_types for q in queries]
    if progress is not None:
        jobs = progress(jobs, len(iou_types) * len(queries))
    counts: dict[str, list[QueryCounts]] = defaultdict(list)
    for q, t in jobs:
        counts[t].append(_best_counts([_image_counts(g.get(q, []), dts_by_q.get(q, []), t) for g in gts_by_q]))
    out = {}
    for t in iou_types:
        m = cgf1_metrics(counts[t])
        for name, per_threshold, thr in IMAGE_METRICS:
            key = f"cgF1_eval_{t}_{name}" + (f"@{thr}" if thr is not None else "")
            if not per_threshold:
                out[key] = float(m[name])
            else:
                out[key] = _at(m[name], None if thr is None else (_I50 if thr == 0.5 else _I75))
    return out


def _group_by_media(masklets: Iterable[Masklet]) -> dict[int, list[Masklet]]:
    groups: dict[int, list[Masklet]] = defaultdict(list)
    for m in masklets:
        groups[m.media_id].append(m)
    return groups
