"""Semi-supervised video object segmentation: track from ground-truth masks, write the
predictions in the ground truth's layout, score them with :mod:`anyseg.metrics.vos`.

The protocol is the one of SAM 2's ``tools/vos_inference.py`` (with
``--track_object_appearing_later_in_video``):

* Frames are ``VIDEO_DIR/<video>/<frame>.jpg`` (or PNG); ground truth is the DAVIS layout
  (``GT/<video>/<frame>.png``, indexed, value = object id) or the SA-V layout
  (``GT/<video>/<object>/<frame>.png``, binary), detected per video as the evaluator does.
  A ground-truth file ``<frame>.png`` belongs to the video frame of the same stem.
* Every object is prompted with its mask on the first ground-truth frame where the mask is
  non-empty, and tracked forward from there to the end of the video; it has no mask on the
  frames before. Objects are independent in SAM 2, so tracking all objects in one session
  whose propagation pauses to add the objects that appear later is the official
  per-object inference, with each frame encoded once.
* Predictions are written for every video frame, in the ground truth's layout: DAVIS
  indexed PNGs (where masks overlap, the smaller object id wins, as the official script's
  ``put_per_obj_mask`` paints them), SA-V binary PNGs per object (values 0/1).

The tracker is any object with ``open(video) -> session`` as
:class:`anyseg.predictors.video.VideoPredictor`; this module itself imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from anyseg.errors import InvalidInputError, MediaError
from anyseg.io.export import save_indexed_png
from anyseg.io.images import load_label_map
from anyseg.io.video import FolderVideo, open_video
from anyseg.metrics.vos import DAVIS_LAYOUT, SAV_LAYOUT

Progress = Callable[[Iterable, int], Iterable]


@dataclass(frozen=True)
class TrackedObject:
    """An object to track: its session id, its name in the output, where its prompt is
    (``frame`` index and ground-truth file, ``None`` when its mask is empty everywhere),
    and its pixel value there (``None``: a binary SA-V mask, any value > 0)."""

    obj_id: int
    name: str
    frame: int | None
    source: Path | None
    value: int | None = None

    def prompt_mask(self) -> np.ndarray:
        """The first non-empty ground-truth mask of the object."""
        labels = load_label_map(self.source)
        return labels > 0 if self.value is None else labels == self.value


@dataclass(frozen=True)
class VideoPlan:
    """One video to track: its frames, the ground-truth layout and the objects."""

    name: str
    video: FolderVideo
    layout: str
    objects: list[TrackedObject]

    @property
    def stems(self) -> list[str]:
        """The frame names without extension, in frame order."""
        return [Path(f).stem for f in self.video.files]


def _layout(gt_video: Path) -> str:
    """DAVIS when the folder holds only PNG files, otherwise SA-V (as the evaluator decides)."""
    return DAVIS_LAYOUT if all(n.endswith(".png") for n in os.listdir(gt_video)) else SAV_LAYOUT


def _frame_files(folder: Path, index_of: dict[str, int]) -> list[tuple[int, Path]]:
    """The ground-truth PNGs of ``folder`` as ``(frame index, path)``, in frame order."""
    files = []
    for path in folder.iterdir():
        if path.suffix != ".png":
            continue
        if path.stem not in index_of:
            raise InvalidInputError(f"ground truth {path} has no video frame named {path.stem}.*")
        files.append((index_of[path.stem], path))
    return sorted(files)


def _labels(path: Path, size: tuple[int, int]) -> np.ndarray:
    labels = load_label_map(path)
    if labels.shape != size:
        raise InvalidInputError(
            f"size mismatch: {path} is {labels.shape[1]}x{labels.shape[0]} (WxH), "
            f"the video frames are {size[1]}x{size[0]}"
        )
    return labels


def _davis_objects(gt_video: Path, index_of: dict[str, int], size: tuple[int, int]) -> list[TrackedObject]:
    first: dict[int, tuple[int, Path]] = {}
    for frame, path in _frame_files(gt_video, index_of):
        for label in np.unique(_labels(path, size)).tolist():
            if label != 0 and label not in first:
                first[label] = (frame, path)
    return [TrackedObject(label, str(label), *first[label], value=label) for label in sorted(first)]


def _sav_objects(gt_video: Path, index_of: dict[str, int], size: tuple[int, int]) -> list[TrackedObject]:
    objects = []
    for obj_id, name in enumerate(sorted(p.name for p in gt_video.iterdir() if p.is_dir()), start=1):
        prompt = next(
            ((f, p) for f, p in _frame_files(gt_video / name, index_of) if _labels(p, size).any()),
            (None, None),
        )
        objects.append(TrackedObject(obj_id, name, *prompt))
    return objects


def plan_video(frames_dir: Path, gt_video: Path) -> VideoPlan:
    """Read a video's frame list and its ground truth's first masks (without decoding frames)."""
    if not frames_dir.is_dir():
        raise InvalidInputError(f"no frame folder {frames_dir} for ground-truth video {gt_video.name}")
    try:
        video = open_video(frames_dir)
    except MediaError as exc:
        raise InvalidInputError(f"video {gt_video.name}: {exc}") from None
    index_of = {Path(f).stem: i for i, f in enumerate(video.files)}
    size = (video.height, video.width)
    layout = _layout(gt_video)
    find = _davis_objects if layout == DAVIS_LAYOUT else _sav_objects
    return VideoPlan(gt_video.name, video, layout, find(gt_video, index_of, size))


def plan_videos(video_dir: str | Path, gt_dir: str | Path) -> list[VideoPlan]:
    """A plan for every video folder of ``gt_dir``; each needs a frame folder in ``video_dir``."""
    video_dir, gt_dir = Path(video_dir), Path(gt_dir)
    for folder, what in ((video_dir, "video"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise InvalidInputError(f"{what} folder {folder} does not exist")
    names = sorted(p.name for p in gt_dir.iterdir() if p.is_dir())
    if not names:
        raise InvalidInputError(f"ground-truth folder {gt_dir} has no video folders")
    return [plan_video(video_dir / name, gt_dir / name) for name in names]


def track(session, objects: list[TrackedObject]) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """``(frame, {obj_id: mask})`` for every frame of the session's video, in order.

    Objects are added on their first ground-truth frame; propagation runs up to the frame
    before the next object's prompt, pauses for the new prompts and goes on from there.
    """
    prompted = [o for o in objects if o.frame is not None]
    starts = sorted({o.frame for o in prompted})
    last = session.num_frames - 1
    for frame in range(starts[0] if starts else last + 1):
        yield frame, {}
    for i, start in enumerate(starts):
        for obj in (o for o in prompted if o.frame == start):
            session.add_prompt(start, obj.obj_id, mask=obj.prompt_mask())
        stop = starts[i + 1] - 1 if i + 1 < len(starts) else last
        for result in session.propagate(start=start, max_frames=stop - start):
            yield result.frame, dict(zip(result.obj_ids, result.masks))


def _write_frame(plan: VideoPlan, out_video: Path, stem: str, masks: dict[int, np.ndarray]) -> None:
    size = (plan.video.height, plan.video.width)
    if plan.layout == DAVIS_LAYOUT:
        labels = np.zeros(size, dtype=np.uint8)
        for obj_id in sorted(masks, reverse=True):  # the smaller id is painted last and wins
            labels[masks[obj_id]] = obj_id
        save_indexed_png(out_video / f"{stem}.png", labels)
        return
    empty = np.zeros(size, dtype=bool)
    for obj in plan.objects:
        save_indexed_png(out_video / obj.name / f"{stem}.png", masks.get(obj.obj_id, empty).astype(np.uint8))


def track_video(predictor, plan: VideoPlan, out_video: Path, progress: Progress | None = None) -> None:
    """Track ``plan``'s objects and write a prediction for every frame under ``out_video``."""
    stems = plan.stems
    with predictor.open(plan.video) as session:
        frames: Iterable = track(session, plan.objects)
        if progress is not None:
            frames = progress(frames, len(stems))
        for frame, masks in frames:
            _write_frame(plan, out_video, stems[frame], masks)


__all__ = ["TrackedObject", "VideoPlan", "plan_video", "plan_videos", "track", "track_video"]
