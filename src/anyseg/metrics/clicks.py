"""Interactive image segmentation by simulated clicks: mIoU@k and NoC@IoU.

The protocol is the one of RITM (``isegm/inference/clicker.py`` and ``evaluation.py``),
which SimpleClick, FocalClick and the SAM papers' point-prompt evaluations follow:

* The error regions of a prediction are the false negatives (object pixels the prediction
  misses) and the false positives (background pixels it covers); before the first click
  the prediction is empty, so the first click lands inside the object.
* Each region gets a Euclidean distance transform in which **the image border counts as
  boundary** (the mask is padded with one row/column of background on every side, as
  RITM's ``padding=True``). Pixels that were already clicked score 0.
* The next click goes to the pixel with the largest distance, i.e. the centre of the
  error region with the largest inscribed disc ("largest" is measured by that depth, not by
  area). It is positive if that pixel is a false negative, negative if a false positive;
  on a tie the click is negative (RITM's ``fn_max_dist > fp_max_dist``), and among equally
  deep pixels the first in row-major order wins. The click is passed to the model at the
  pixel's integer (x, y) = (column, row) coordinates.
* Every prediction receives all clicks so far and, from the second click on, the previous
  step's low-res logits as ``mask_input``. The first click asks for three masks and keeps
  the one with the highest predicted IoU; later clicks ask for a single mask.
* IoU = |P & G| / |P | G| at the image's resolution. All ``max_clicks`` clicks are made
  (no early stop at a target IoU, so that mIoU@k is defined for every k); if the
  prediction becomes perfect, no further click can be placed and the last IoU stands for
  the remaining clicks.
* NoC@t is the first click count whose IoU is >= t, or ``max_clicks`` when the IoU is
  never reached (RITM). NoF@t counts the objects that never reach t within ``max_clicks``
  clicks (RITM counts NoC == ``max_clicks``, which also includes objects that reach t at
  exactly the last click).
* Every non-crowd COCO annotation with a non-empty mask is one object; crowd annotations
  and empty masks are left out and listed. Means are over all objects of all images.

The model side is any predictor with ``set_image(rgb)`` and ``predict(points=, labels=,
mask_input=, multimask=)`` returning ``masks``, ``logits`` and ``best`` (e.g.
:class:`anyseg.ImagePredictor`); this module itself is plain NumPy.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

from anyseg.errors import InvalidInputError
from anyseg.io.images import load_image, open_pil

DEFAULT_MAX_CLICKS = 20
IOU_THRESHOLDS = (0.85, 0.90)
MIOU_CLICKS = (1, 3, 5)


# --------------------------------------------------------------------------- clicks


@dataclass(frozen=True)
class Click:
    """A simulated click at pixel column ``x``, row ``y``; ``positive``: on the object."""

    x: int
    y: int
    positive: bool


def region_depth(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel of ``region`` to the nearest pixel outside it,
    the image border counting as outside (0 outside the region).

    Only the bounding box of the region (plus a one-pixel ring of background) is
    transformed: the nearest outside pixel of any region pixel always lies in that box.
    """
    depth = np.zeros(region.shape, dtype=np.float64)
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return depth
    cols = np.flatnonzero(region.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    depth[box] = ndimage.distance_transform_edt(np.pad(region[box], 1))[1:-1, 1:-1]
    return depth


def next_click(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray) -> Click | None:
    """The next click on the deepest error pixel not yet ``clicked`` (``None`` if there is
    none: the prediction is perfect, or only clicked pixels are wrong)."""
    fn_depth = region_depth(gt & ~pred)
    fp_depth = region_depth(pred & ~gt)
    fn_depth[clicked] = 0
    fp_depth[clicked] = 0
    fn_max, fp_max = fn_depth.max(), fp_depth.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    y, x = np.unravel_index(np.argmax(fn_depth if positive else fp_depth), gt.shape)
    return Click(int(x), int(y), positive)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """``|pred & gt| / |pred | gt|`` (1.0 when both are empty)."""
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def number_of_clicks(ious: Iterable[float], threshold: float, max_clicks: int) -> int:
    """NoC: the first click count whose IoU is >= ``threshold``, else ``max_clicks``."""
    reached = np.flatnonzero(np.asarray(list(ious)[:max_clicks]) >= threshold)
    return int(reached[0]) + 1 if reached.size else max_clicks


class ClickPredictor(Protocol):
    """What the simulation needs from a predictor (:class:`anyseg.ImagePredictor` fits)."""

    def predict(self, points, labels, mask_input=None, multimask: bool = True): ...


def simulate(predictor: ClickPredictor, gt: np.ndarray, max_clicks: int) -> tuple[list[float], list[Click]]:
    """Click ``max_clicks`` times on the embedded image; return the IoU after each click
    (always ``max_clicks`` values) and the clicks made."""
    gt = gt.astype(bool)
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    clicks: list[Click] = []
    ious: list[float] = []
    logits = None
    while len(clicks) < max_clicks:
        click = next_click(gt, pred, clicked)
        if click is None:
            break
        clicks.append(click)
        clicked[click.y, click.x] = True
        out = predictor.predict(
            points=np.array([[c.x, c.y] for c in clicks], dtype=np.float32),
            labels=np.array([int(c.positive) for c in clicks], dtype=np.int64),
            mask_input=logits,
            multimask=len(clicks) == 1,
        )
        best = out.best
        pred = np.asarray(out.masks[best], dtype=bool)
        logits = out.logits[best][None]
        ious.append(mask_iou(pred, gt))
    ious += ious[-1:] * (max_clicks - len(ious))
    return ious, clicks


# --------------------------------------------------------------------------- COCO input


@dataclass(frozen=True)
class ImageTargets:
    """One image of the COCO file and its annotations to simulate (non-crowd, non-empty)."""

    image_id: int
    file_name: str
    path: Path
    height: int
    width: int
    annotations: list[dict]


def _read_coco(path: Path) -> dict:
    if not path.is_file():
        raise InvalidInputError(f"COCO file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path} is not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise InvalidInputError(f"{path} is not a COCO file: it needs 'images' and 'annotations' lists")
    return data


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The ``(height, width)`` bool mask of a COCO annotation (polygons, RLE or
    uncompressed RLE), decoded by pycocotools."""
    seg = ann.get("segmentation")
    where = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
    if isinstance(seg, dict):
        size = [int(s) for s in seg.get("size", ())]
        if size != [height, width]:
            raise InvalidInputError(f"{where}: its RLE is {size} (H, W) but the image is {[height, width]}")
        if isinstance(seg.get("counts"), list):
            rle = coco_mask.frPyObjects(seg, height, width)
        else:
            counts = seg.get("counts")
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    elif isinstance(seg, list) and seg:
        rle = coco_mask.merge(coco_mask.frPyObjects(seg, height, width))
    else:
        raise InvalidInputError(f"{where} has no polygon or RLE segmentation")
    try:
        with warnings.catch_warnings():  # pycocotools' __array__ predates NumPy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            return coco_mask.decode(rle).astype(bool)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where}: cannot decode its segmentation ({exc})") from None


def _image_entry(entry: dict, images_dir: Path) -> tuple[int, str, Path, int, int]:
    try:
        image_id, name = int(entry["id"]), str(entry["file_name"])
        height, width = int(entry["height"]), int(entry["width"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"COCO image entry {entry!r} lacks id, file_name, height or width") from None
    return image_id, name, images_dir / name, height, width


def _check_image_file(path: Path, height: int, width: int) -> None:
    """The file exists and its stored size (no EXIF rotation) is the COCO file's."""
    with open_pil(path) as (image, _):
        if (image.height, image.width) != (height, width):
            raise InvalidInputError(
                f"{path} is {image.width}x{image.height} (WxH) but the COCO file says {width}x{height}"
            )


def load_targets(images_dir: str | Path, gt_path: str | Path) -> tuple[list[ImageTargets], list[str]]:
    """The images to evaluate (those with annotations) and the annotations left out (with why).

    Raises :class:`InvalidInputError` for a missing folder or file, an annotation whose image
    the file does not list, an image file missing from ``images_dir`` or of another size than
    the COCO file states, and when nothing is left to evaluate.
    """
    images_dir, gt_path = Path(images_dir), Path(gt_path)
    if not images_dir.is_dir():
        raise InvalidInputError(f"image folder {images_dir} does not exist")
    data = _read_coco(gt_path)
    images = {e[0]: e for e in (_image_entry(entry, images_dir) for entry in data["images"])}
    per_image: dict[int, list[dict]] = {}
    skipped: list[str] = []
    for ann in data["annotations"]:
        image_id = ann.get("image_id")
        if image_id not in images:
            raise InvalidInputError(
                f"annotation {ann.get('id')} refers to image_id {image_id!r}, which {gt_path} does not list in 'images'"
            )
        if ann.get("iscrowd", 0):
            skipped.append(f"annotation {ann.get('id')} (image {image_id}): crowd region")
        else:
            per_image.setdefault(image_id, []).append(ann)
    missing = [str(images[i][2]) for i in per_image if not images[i][2].is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InvalidInputError(f"{len(missing)} image file(s) of {gt_path} are not in {images_dir}: {shown}")
    targets = []
    for image_id, anns in per_image.items():
        _, name, path, height, width = images[image_id]
        _check_image_file(path, height, width)
        targets.append(ImageTargets(image_id, name, path, height, width, anns))
    if not targets:
        raise InvalidInputError(f"{gt_path} has no non-crowd annotation to evaluate")
    return targets, skipped


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ObjectClicks:
    """The simulation of one object: IoU after each click and the clicks made."""

    file_name: str
    image_id: int
    annotation_id: int
    category_id: int | None
    ious: list[float]
    clicks: list[Click]

    def iou_at(self, k: int) -> float:
        """IoU after ``k`` clicks."""
        return self.ious[k - 1]

    def noc(self, threshold: float) -> int:
        """Clicks needed to reach ``threshold`` (the cap when never reached)."""
        return number_of_clicks(self.ious, threshold, len(self.ious))

    def reached(self, threshold: float) -> bool:
        return max(self.ious) >= threshold


def _summary(objects: list[ObjectClicks]) -> dict[str, float]:
    """mIoU@k, mean NoC@t and NoF@t of a list of objects."""
    out: dict[str, float] = {"objects": len(objects)}
    for k in MIOU_CLICKS:
        out[f"mIoU@{k}"] = float(np.mean([o.iou_at(k) for o in objects]))
    for t in IOU_THRESHOLDS:
        out[f"NoC@{round(t * 100)}"] = float(np.mean([o.noc(t) for o in objects]))
    for t in IOU_THRESHOLDS:
        out[f"NoF@{round(t * 100)}"] = sum(not o.reached(t) for o in objects)
    return out


@dataclass(frozen=True)
class ClickResult:
    """Per-object simulations and the summaries over them."""

    max_clicks: int
    objects: list[ObjectClicks]
    skipped: list[str]

    def overall(self) -> dict[str, float]:
        """Means over all objects of all images."""
        return _summary(self.objects)

    def per_image(self) -> dict[str, dict[str, float]]:
        """Means over each image's objects."""
        names = dict.fromkeys(o.file_name for o in self.objects)
        return {n: _summary([o for o in self.objects if o.file_name == n]) for n in names}

    def to_json(self) -> dict:
        """Everything as plain JSON types."""
        return {
            "max_clicks": self.max_clicks,
            "overall": self.overall(),
            "per_image": self.per_image(),
            "per_object": [
                {
                    "file_name": o.file_name,
                    "image_id": o.image_id,
                    "annotation_id": o.annotation_id,
                    "category_id": o.category_id,
                    **{f"NoC@{round(t * 100)}": o.noc(t) for t in IOU_THRESHOLDS},
                    "ious": o.ious,
                    "clicks": [[c.x, c.y, int(c.positive)] for c in o.clicks],
                }
                for o in self.objects
            ],
            "skipped": self.skipped,
            "note": "clicks are [x, y, positive]; ious[k-1] is the IoU after k clicks",
        }

    def csv_rows(self) -> tuple[list[str], list[list]]:
        """Header and one row per object: ids, NoC@85, NoC@90, IoU after each click."""
        nocs = [f"NoC@{round(t * 100)}" for t in IOU_THRESHOLDS]
        headers = ["file_name", "image_id", "annotation_id", "category_id", *nocs]
        headers += [f"IoU@{k}" for k in range(1, self.max_clicks + 1)]
        rows = [
            [o.file_name, o.image_id, o.annotation_id, o.category_id, *(o.noc(t) for t in IOU_THRESHOLDS), *o.ious]
            for o in self.objects
        ]
        return headers, rows


# --------------------------------------------------------------------------- driver


def _object_masks(item: ImageTargets, skipped: list[str]) -> list[tuple[dict, np.ndarray]]:
    """The non-empty masks of an image's annotations; empty ones are noted in ``skipped``."""
    masks = []
    for ann in item.annotations:
        mask = annotation_mask(ann, item.height, item.width)
        if mask.any():
            masks.append((ann, mask))
        else:
            skipped.append(f"annotation {ann.get('id')} ({item.file_name}): empty mask")
    return masks


def evaluate(
    predictor,
    targets: list[ImageTargets],
    max_clicks: int = DEFAULT_MAX_CLICKS,
    skipped: list[str] | None = None,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> ClickResult:
    """Simulate clicks on every object of ``targets``; each image is embedded once with
    ``predictor.set_image``. Empty masks are left out and added to ``skipped``."""
    if max_clicks < max(MIOU_CLICKS):
        raise InvalidInputError(f"max_clicks must be at least {max(MIOU_CLICKS)} (mIoU@{max(MIOU_CLICKS)} is reported)")
    skipped = list(skipped or [])
    objects: list[ObjectClicks] = []
    items: Iterable[ImageTargets] = targets if progress is None else progress(targets, len(targets))
    for item in items:
        masks = _object_masks(item, skipped)
        if not masks:
            continue
        predictor.set_image(load_image(item.path, exif_transpose=False))
        for ann, gt in masks:
            ious, clicks = simulate(predictor, gt, max_clicks)
            objects.append(ObjectClicks(item.file_name, item.image_id, ann.get("id"), ann.get("category_id"), ious, clicks))
    if not objects:
        raise InvalidInputError("no annotation has a non-empty mask")
    return ClickResult(max_clicks, objects, skipped)


__all__ = [
    "Click",
    "ClickResult",
    "DEFAULT_MAX_CLICKS",
    "ImageTargets",
    "ObjectClicks",
    "annotation_mask",
    "evaluate",
    "load_targets",
    "mask_iou",
    "next_click",
    "number_of_clicks",
    "region_depth",
    "simulate",
]
