"""Video object segmentation metrics: J (region IoU), F (boundary F-measure) and J&F.

The conventions are those of the official SA-V evaluator (``sav_dataset/sav_evaluator.py``
of SAM 2, itself derived from the DAVIS 2017 and vos-benchmark code), so that the numbers
are equal to the official ones:

* Two folder layouts, detected per video. *DAVIS*: ``ROOT/<video>/<frame>.png``, one
  indexed PNG per frame whose pixel values are object labels (0 is background). *SA-V*:
  ``ROOT/<video>/<object>/<frame>.png``, one binary PNG per object and frame (any value
  > 0 is foreground).
* The frames scored are the **ground-truth** file names, sorted; by default the first and
  the last are skipped (per object in the SA-V layout, per video in the DAVIS layout).
  Prediction files for other frames are ignored; a missing one is an error.
* An object counts on a frame only from its first appearance (in the ground truth *or* in
  the prediction) on a scored frame; afterwards every frame counts, and a frame where
  both masks are empty scores J = F = 1.
* J = |P & G| / |P | G|. F compares one-pixel boundaries (``boundary_map``) within a disk
  of radius ``ceil(0.008 * hypot(H, W))`` pixels; an empty boundary against a non-empty
  one scores 0.
* Per object, J and F are 100 x the mean over its counted frames and J&F = (J + F) / 2.
  Only objects present in the ground truth on a scored frame are reported (in the DAVIS
  layout, labels found only in the prediction are ignored).
* Global J (F) is the mean over **all objects of all videos**, not a mean of per-video
  means; global J&F = (J + F) / 2. The per-video means reported here are a convenience of
  anyseg (the official evaluator prints none).

Two cases crash the official evaluator in the SA-V layout: an object whose ground truth is
empty on every scored frame, and an object with fewer than three frames when the first
and last are skipped. anyseg leaves such objects out and lists them in
:attr:`VosResult.unscored`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.spatial import cKDTree

from anyseg.errors import InvalidInputError, MediaError

#: Boundary tolerance as a fraction of the image diagonal (hard-coded in the official code).
BOUNDARY_THRESHOLD = 0.008

DAVIS_LAYOUT = "davis"
SAV_LAYOUT = "sav"


# --------------------------------------------------------------------------- per frame


def region_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """J of one frame: ``|pred & gt| / |pred | gt|``, and 1.0 when both masks are empty."""
    inter = int(np.count_nonzero(pred & gt))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0
    return inter / (total - inter)


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, as DAVIS' ``_seg2bmap`` draws it.

    A pixel is on the boundary when it differs from its east, south or south-east
    neighbour; on the last row only the east neighbour counts, on the last column only
    the south one, and the bottom-right pixel is never a boundary.
    """
    seg = seg.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """Boolean disk ``x**2 + y**2 <= radius**2`` of shape ``(2r+1, 2r+1)`` (skimage's ``disk``)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx * xx + yy * yy <= radius * radius


def boundary_radius(height: int, width: int) -> int:
    """Boundary tolerance in pixels: ``ceil(0.008 * hypot(H, W))`` (8 px at 848x480)."""
    return int(np.ceil(BOUNDARY_THRESHOLD * np.linalg.norm((height, width))))


def _crop(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of ``pred | gt`` grown by one pixel (``None`` if both are empty).

    Boundary pixels lie within this box, and ``boundary_map`` of the crop equals the crop of
    ``boundary_map``: the extra row/column is background, so the last-row/column special
    cases agree with the full image.
    """
    union = pred | gt
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    return (
        slice(max(rows[0] - 1, 0), rows[-1] + 2),
        slice(max(cols[0] - 1, 0), cols[-1] + 2),
    )


def _count_within(source: np.ndarray, target: np.ndarray, radius: int) -> int:
    """Number of ``target`` points at Euclidean distance <= ``radius`` from a ``source`` point.

    This is the count of ``target`` pixels inside the dilation of ``source`` by
    ``disk(radius)`` (what ``cv2.dilate`` or ``scipy.ndimage.binary_dilation`` would give),
    computed from the sparse boundary points instead of whole images. Distances between
    integer points are square roots of integers, so ``d <= radius`` is exact.
    """
    dist, _ = cKDTree(source).query(target, k=1, distance_upper_bound=radius + 0.5)
    return int(np.count_nonzero(dist <= radius))


def boundary_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """F of one frame: F-measure of boundary precision and recall at ``radius`` pixels.

    Precision is the share of predicted boundary pixels within ``radius`` of a ground-truth
    boundary pixel, recall the converse. Both boundaries empty scores 1, exactly one empty
    scores 0.
    """
    box = _crop(pred, gt)
    if box is None or np.array_equal(pred[box], gt[box]):
        return 1.0
    points_pred = np.argwhere(boundary_map(pred[box]))
    points_gt = np.argwhere(boundary_map(gt[box]))
    n_pred, n_gt = len(points_pred), len(points_gt)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = _count_within(points_gt, points_pred, radius) / float(n_pred)
    recall = _count_within(points_pred, points_gt, radius) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- per video


def _labels(array: np.ndarray) -> set:
    """Object labels present in a label (or boolean) image: its distinct non-zero values."""
    if array.dtype == bool:
        return {True} if array.any() else set()
    return set(np.unique(array[array != 0]).tolist())


@dataclass
class _ObjectTracker:
    """Per-frame J and F of the objects of one evaluation unit, with the official rule
    that an object counts only from its first appearance in the ground truth or the
    prediction (and is reported only if it appeared in the ground truth)."""

    seen: set = field(default_factory=set)
    seen_in_gt: set = field(default_factory=set)
    j: dict = field(default_factory=dict)
    f: dict = field(default_factory=dict)

    def feed(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Score one frame of label (or boolean) images ``pred`` and ``gt``."""
        gt_labels, pred_labels = _labels(gt), _labels(pred)
        self.seen_in_gt |= gt_labels
        self.seen |= gt_labels | pred_labels
        radius = boundary_radius(*gt.shape)
        for label in self.seen:
            obj_pred, obj_gt = pred == label, gt == label
            self.j.setdefault(label, []).append(region_iou(obj_pred, obj_gt))
            self.f.setdefault(label, []).append(boundary_f(obj_pred, obj_gt, radius))

    def scores(self) -> dict:
        """``{label: (J, F, frames counted)}`` on the 0-100 scale, ground-truth objects only,
        in the iteration order of the set of labels, which is built with the same set
        operations as the official code (so the CSV lists objects in the same order)."""
        return {
            label: (
                float(np.mean(self.j[label]) * 100),
                float(np.mean(self.f[label]) * 100),
                len(self.j[label]),
            )
            for label in self.seen_in_gt
        }


@dataclass(frozen=True)
class ObjectScore:
    """J, F and J&F (0-100) of one object, and the number of frames that counted."""

    video: str
    obj: str
    j: float
    f: float
    frames: int

    @property
    def jf(self) -> float:
        """J&F = (J + F) / 2."""
        return (self.j + self.f) / 2


@dataclass(frozen=True)
class VideoScores:
    """What one video yields: its layout, scored objects and objects left out (with why)."""

    video: str
    layout: str
    objects: list[ObjectScore]
    unscored: list[str]


def _read_labels(path: Path) -> np.ndarray:
    """Pixel values of a PNG mask (palette indices, not colours) as a 2-D array."""
    try:
        with Image.open(path) as img:
            array = np.array(img)
    except (OSError, UnidentifiedImageError) as exc:
        raise MediaError(f"cannot read mask {path}: {exc}") from exc
    if array.ndim != 2:
        raise MediaError(
            f"{path} is a {img.mode} image; masks must be single-channel "
            "(indexed/palettised or grayscale PNG)"
        )
    return array


def _frame_pair(gt_dir: Path, pred_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and prediction of frame file ``name``, checked for presence and size."""
    pred_path = pred_dir / name
    if not pred_path.is_file():
        raise InvalidInputError(f"missing prediction {pred_path} (ground truth has {gt_dir / name})")
    gt, pred = _read_labels(gt_dir / name), _read_labels(pred_path)
    if gt.shape != pred.shape:
        raise InvalidInputError(
            f"size mismatch: {gt_dir / name} is {gt.shape[1]}x{gt.shape[0]} (WxH), "
            f"{pred_path} is {pred.shape[1]}x{pred.shape[0]}"
        )
    return gt, pred


def _binary(mask: np.ndarray, path: Path) -> np.ndarray:
    """SA-V layout: one object per file, foreground is any value > 0."""
    if len(_labels(mask)) > 1:
        raise InvalidInputError(
            f"{path} holds several non-zero values; the SA-V layout has one binary mask per file"
        )
    return mask > 0


def _scored_frames(names: list[str], skip_first_last: bool) -> list[str]:
    """The ground-truth frame files that are scored."""
    return names[1:-1] if skip_first_last else names


def _png_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))


def _is_davis_video(gt_video: Path) -> bool:
    """A video folder holding only PNG files is in the DAVIS layout, otherwise SA-V."""
    return all(name.endswith(".png") for name in os.listdir(gt_video))


def _evaluate_davis_video(gt_video: Path, pred_video: Path, skip: bool) -> VideoScores:
    tracker = _ObjectTracker()
    for name in _scored_frames(_png_names(gt_video), skip):
        gt, pred = _frame_pair(gt_video, pred_video, name)
        tracker.feed(pred, gt)
    objects = [
        ObjectScore(gt_video.name, f"{label:03d}", j, f, n)
        for label, (j, f, n) in tracker.scores().items()
    ]
    return VideoScores(gt_video.name, DAVIS_LAYOUT, objects, [])


def _evaluate_sav_video(gt_video: Path, pred_video: Path, skip: bool) -> VideoScores:
    objects, unscored = [], []
    for obj_dir in sorted(p.name for p in gt_video.iterdir() if p.is_dir()):
        gt_obj, pred_obj = gt_video / obj_dir, pred_video / obj_dir
        tracker = _ObjectTracker()
        for name in _scored_frames(_png_names(gt_obj), skip):
            gt, pred = _frame_pair(gt_obj, pred_obj, name)
            tracker.feed(_binary(pred, pred_obj / name), _binary(gt, gt_obj / name))
        scores = tracker.scores()
        if scores:
            j, f, n = scores[True]
            objects.append(ObjectScore(gt_video.name, obj_dir, j, f, n))
        else:
            unscored.append(f"{gt_video.name}/{obj_dir}: no ground-truth mask on any scored frame")
    return VideoScores(gt_video.name, SAV_LAYOUT, objects, unscored)


def evaluate_video(gt_video: Path, pred_video: Path, skip_first_last: bool = True) -> VideoScores:
    """Score one video folder (layout detected from the ground-truth folder)."""
    gt_video, pred_video = Path(gt_video), Path(pred_video)
    if _is_davis_video(gt_video):
        return _evaluate_davis_video(gt_video, pred_video, skip_first_last)
    return _evaluate_sav_video(gt_video, pred_video, skip_first_last)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class VosResult:
    """Scores of a prediction set against a ground-truth set (J, F, J&F on 0-100)."""

    layout: str
    skip_first_last: bool
    objects: list[ObjectScore]
    unscored: list[str]
    videos_without_prediction: list[str]

    @property
    def j(self) -> float:
        """Global J: mean over all objects of all videos."""
        return float(np.array([o.j for o in self.objects]).mean())

    @property
    def f(self) -> float:
        """Global F: mean over all objects of all videos."""
        return float(np.array([o.f for o in self.objects]).mean())

    @property
    def jf(self) -> float:
        """Global J&F = (J + F) / 2."""
        return (self.j + self.f) / 2

    def per_video(self) -> dict[str, dict[str, float]]:
        """Mean J, F over each video's objects, J&F = (J + F) / 2 (anyseg's, not official)."""
        out: dict[str, dict[str, float]] = {}
        for video in dict.fromkeys(o.video for o in self.objects):
            objs = [o for o in self.objects if o.video == video]
            j = float(np.mean([o.j for o in objs]))
            f = float(np.mean([o.f for o in objs]))
            out[video] = {"J": j, "F": f, "J&F": (j + f) / 2, "objects": len(objs)}
        return out

    def to_json(self) -> dict:
        """Everything as plain JSON types: global, per video (derived), per object."""
        per_object: dict[str, dict] = {}
        for o in self.objects:
            per_object.setdefault(o.video, {})[o.obj] = {
                "J": o.j, "F": o.f, "J&F": o.jf, "frames": o.frames
            }
        return {
            "layout": self.layout,
            "skip_first_last": self.skip_first_last,
            "global": {"J": self.j, "F": self.f, "J&F": self.jf},
            "per_video_mean_of_objects": self.per_video(),
            "per_object": per_object,
            "unscored_objects": self.unscored,
            "videos_without_prediction": self.videos_without_prediction,
            "note": (
                "global J/F = mean over all objects of all videos (official); "
                "per_video_mean_of_objects is anyseg's convenience mean, not an official figure"
            ),
        }

    def official_csv(self) -> str:
        """The ``results.csv`` text the official SA-V evaluator writes (1-decimal values)."""
        names = list(dict.fromkeys(o.video for o in self.objects))
        ml = max(*[len(n) for n in names], len("Global score"))
        lines = [
            f'{"sequence":<{ml}},{"obj":>3}, {"J&F":>4}, {"J":>4}, {"F":>4}',
            f'{"Global score":<{ml}},{"":>3}, {self.jf:.1f}, {self.j:.1f}, {self.f:.1f}',
        ]
        for o in self.objects:
            lines.append(f"{o.video:<{ml}},{o.obj:03}, {o.jf:>4.1f}, {o.j:>4.1f}, {o.f:>4.1f}")
        return "\n".join(lines) + "\n"


def _video_folders(root: Path, what: str) -> list[str]:
    if not root.is_dir():
        raise InvalidInputError(f"{what} folder {root} does not exist")
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def evaluate(
    gt_root: str | Path,
    pred_root: str | Path,
    skip_first_last: bool = True,
    *,
    strict: bool = False,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> VosResult:
    """Score every video of ``gt_root`` that ``pred_root`` has a folder for.

    Videos without a prediction folder are left out and listed, as the official evaluator
    does by default; with ``strict=True`` they are an error. ``progress`` wraps the
    iteration over videos (e.g. in a tqdm bar) and receives their number.
    """
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    gt_videos = _video_folders(gt_root, "ground-truth")
    pred_videos = set(_video_folders(pred_root, "prediction"))
    if not gt_videos:
        raise InvalidInputError(f"ground-truth folder {gt_root} has no video folders")
    missing = [v for v in gt_videos if v not in pred_videos]
    if strict and missing:
        raise InvalidInputError(f"no prediction folder in {pred_root} for: {', '.join(missing)}")
    videos = [v for v in gt_videos if v in pred_videos]
    if not videos:
        raise InvalidInputError(f"{pred_root} has no folder for any video of {gt_root}")
    names: Iterable[str] = videos if progress is None else progress(videos, len(videos))
    per_video = [evaluate_video(gt_root / v, pred_root / v, skip_first_last) for v in names]
    objects = [o for v in per_video for o in v.objects]
    if not objects:
        raise InvalidInputError("no object appears in the ground truth on any scored frame")
    layouts = sorted({v.layout for v in per_video})
    return VosResult(
        layout="+".join(layouts),
        skip_first_last=skip_first_last,
        objects=objects,
        unscored=[u for v in per_video for u in v.unscored],
        videos_without_prediction=missing,
    )


__all__ = [
    "BOUNDARY_THRESHOLD",
    "ObjectScore",
    "VideoScores",
    "VosResult",
    "boundary_f",
    "boundary_map",
    "boundary_radius",
    "disk",
    "evaluate",
    "evaluate_video",
    "region_iou",
]
