"""Exports of a project's annotations, written with :mod:`anyseg.io.export` (as the CLI writes
them) from the stored masks: no model is needed.

Object ids are the label values of DAVIS PNGs and the category ids of COCO; in YOLO files the
class of object ``k`` is ``k - 1`` (``classes.txt`` lists the names in that order).
"""

from __future__ import annotations

import enum
import itertools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from anyseg import __version__
from anyseg.errors import InvalidInputError
from anyseg.io.export import (
    atomic_path,
    cutout,
    overlay,
    save_indexed_png,
    save_mask_png,
    save_rgb_png,
    save_rgba_png,
    write_gif,
    write_json_atomic,
    write_video,
    yolo_polygons,
)
from anyseg.io.masks import decode_rle, rle_to_bbox
from anyseg.io.video import open_video
from anyseg.server.media import MediaLibrary
from anyseg.server.store import Project, Store, StoredMask, StoredObject

# Pillow holds every frame of a GIF in memory while it writes it (a 1 GB upload can hold an
# hour of video); longer videos' GIFs take fewer frames (see Exporter._gif).
GIF_MAX_FRAMES = 300


class ExportFormat(str, enum.Enum):
    """What can be exported; the value is the file's suffix."""

    mask_png = "mask.png"  # one object's mask (or all objects' union) on a frame, black and white
    cutout_png = "cutout.png"  # the masked pixels on transparency, cropped to the mask
    overlay_png = "overlay.png"  # a frame with every mask drawn in colour, with outlines
    coco_json = "coco.json"  # every mask as COCO RLE, one COCO image per frame
    yolo_txt = "yolo.txt"  # YOLO-seg polygons of one frame
    yolo_zip = "yolo.zip"  # YOLO-seg polygons of every frame with masks, and classes.txt
    davis_zip = "davis.zip"  # one DAVIS-palette PNG per frame
    overlay_mp4 = "overlay.mp4"  # the video with the tracked masks drawn
    overlay_gif = "overlay.gif"  # the same as an animated GIF


MEDIA_TYPES = {
    ".png": "image/png", ".json": "application/json", ".txt": "text/plain", ".zip": "application/zip",
    ".mp4": "video/mp4", ".gif": "image/gif",
}


def download_name(project: Project, fmt: ExportFormat, obj_id: int | None, frame: int) -> str:
    """A file name for the export, from the project's name and what it holds."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(project.name).stem).strip("_.") or "anyseg"
    if fmt in (ExportFormat.mask_png, ExportFormat.cutout_png):
        stem += f"_obj{obj_id}" if obj_id is not None else "_all"
    if fmt in (ExportFormat.mask_png, ExportFormat.cutout_png, ExportFormat.overlay_png, ExportFormat.yolo_txt) \
            and project.media.kind == "video":
        stem += f"_frame{frame:05d}"
    return f"{stem}_{fmt.value}"


class Exporter:
    """Renders one project's exports into files."""

    def __init__(self, project: Project, store: Store, library: MediaLibrary) -> None:
        self.project = project
        self.media = project.media
        self.store = store
        self.library = library
        self.objects: dict[int, StoredObject] = {o.obj_id: o for o in store.objects(project.id)}

    def write(self, fmt: ExportFormat, path: Path, obj_id: int | None = None, frame: int = 0,
              max_side: int = 480) -> None:
        """Write ``fmt`` to ``path``; ``obj_id`` and ``frame`` select what the single-frame
        formats show, ``max_side`` scales the GIF."""
        if obj_id is not None and obj_id not in self.objects:
            raise InvalidInputError(f"the project has no object {obj_id}")
        if fmt in (ExportFormat.overlay_mp4, ExportFormat.overlay_gif) and self.media.kind != "video":
            raise InvalidInputError(f"{fmt.value} needs a video project; export overlay.png for an image")
        if not 0 <= frame < self.media.num_frames:
            raise InvalidInputError(f"frame {frame} is past the end: the {self.media.kind} has "
                                    f"{self.media.num_frames} frame(s)")
        fps = self.media.fps or 24.0
        {
            ExportFormat.mask_png: lambda: save_mask_png(path, self._selected(frame, obj_id)),
            ExportFormat.cutout_png: lambda: save_rgba_png(path, cutout(self._frame(frame),
                                                                        self._selected(frame, obj_id))),
            ExportFormat.overlay_png: lambda: self._overlay_png(path, frame),
            ExportFormat.coco_json: lambda: write_json_atomic(path, self._coco()),
            ExportFormat.yolo_txt: lambda: self._yolo_txt(path, frame),
            ExportFormat.yolo_zip: lambda: self._yolo_zip(path),
            ExportFormat.davis_zip: lambda: self._davis_zip(path),
            ExportFormat.overlay_mp4: lambda: write_video(path, self._overlays(), fps=fps),
            ExportFormat.overlay_gif: lambda: self._gif(path, fps, max_side),
        }[fmt]()

    # ------------------------------------------------------------------ helpers
    def _frame(self, frame: int) -> np.ndarray:
        return self.library.frame(self.media, frame)

    def _masks(self, stored: list[StoredMask]) -> tuple[list[int], np.ndarray]:
        """Object ids and ``N×H×W`` masks of stored masks (only objects that still exist)."""
        kept = [m for m in stored if m.obj_id in self.objects]
        masks = np.zeros((len(kept), self.media.height, self.media.width), bool)
        for i, m in enumerate(kept):
            masks[i] = decode_rle(m.rle)
        return [m.obj_id for m in kept], masks

    def _selected(self, frame: int, obj_id: int | None) -> np.ndarray:
        """One object's mask on ``frame``, or the union of all."""
        obj_ids, masks = self._masks(self.store.masks(self.project.id, frame))
        if obj_id is not None:
            if obj_id not in obj_ids:
                raise InvalidInputError(f"object {obj_id} has no mask on frame {frame}")
            return masks[obj_ids.index(obj_id)]
        if not obj_ids:
            raise InvalidInputError(f"no object has a mask on frame {frame}")
        return masks.any(axis=0)

    def _by_frame(self) -> Iterator[tuple[int, list[StoredMask]]]:
        """Stored masks grouped by frame, in frame order."""
        for frame, group in itertools.groupby(self.store.all_masks(self.project.id), key=lambda m: m.frame):
            yield frame, list(group)

    def _label_map(self, stored: list[StoredMask]) -> np.ndarray:
        """Object ids painted in id order (a higher id covers a lower one); 0 is background."""
        labels = np.zeros((self.media.height, self.media.width), np.uint8)
        obj_ids, masks = self._masks(stored)
        for obj_id, mask in zip(obj_ids, masks):
            labels[mask] = obj_id
        return labels

    def _overlay_png(self, path: Path, frame: int) -> None:
        obj_ids, masks = self._masks(self.store.masks(self.project.id, frame))
        save_rgb_png(path, overlay(self._frame(frame), masks, obj_ids))

    def _coco(self) -> dict:
        images, annotations = [], []
        name = self.media.filename
        for frame, stored in self._by_frame():
            kept = [m for m in stored if m.obj_id in self.objects and m.area > 0]
            if not kept:
                continue
            images.append({"id": frame + 1, "file_name": name if self.media.kind == "image" else f"{name}#{frame}",
                           "frame_index": frame, "width": self.media.width, "height": self.media.height})
            for m in kept:
                annotations.append({"id": len(annotations) + 1, "image_id": frame + 1, "category_id": m.obj_id,
                                    "segmentation": m.rle, "area": m.area, "bbox": rle_to_bbox(m.rle),
                                    "iscrowd": 0, "score": m.score})
        return {
            "info": {"description": f"anyseg studio export of {self.project.name}", "version": __version__},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": o.obj_id, "name": o.name} for o in self.objects.values()],
        }

    def _yolo_lines(self, stored: list[StoredMask]) -> str:
        obj_ids, masks = self._masks(stored)
        return yolo_polygons(masks, [o - 1 for o in obj_ids], hw=(self.media.height, self.media.width))

    def _yolo_txt(self, path: Path, frame: int) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(self._yolo_lines(self.store.masks(self.project.id, frame)))

    def _classes(self) -> str:
        """``classes.txt``: line ``k`` names class ``k`` (object ``k + 1``)."""
        top = max(self.objects, default=0)
        return "".join(f"{self.objects[k].name if k in self.objects else ''}\n" for k in range(1, top + 1))

    def _yolo_zip(self, path: Path) -> None:
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("classes.txt", self._classes())
            for frame, stored in self._by_frame():
                zf.writestr(f"labels/{frame:05d}.txt", self._yolo_lines(stored))

    def _davis_zip(self, path: Path) -> None:
        frames = dict(self._by_frame())
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            png = Path(tmp).with_suffix(".frame.png")
            try:
                for frame in range(self.media.num_frames):
                    save_indexed_png(png, self._label_map(frames.get(frame, [])))
                    zf.write(png, f"{frame:05d}.png")
            finally:
                png.unlink(missing_ok=True)

    def _gif(self, path: Path, fps: float, max_side: int) -> None:
        """The overlay GIF: of a video longer than GIF_MAX_FRAMES frames, every k-th frame
        (the fewest k that fit) at 1/k of the rate, so that it lasts as long."""
        every = -(-self.media.num_frames // GIF_MAX_FRAMES)
        write_gif(path, self._overlays(max_side, every), fps=min(fps / every, 25.0))

    def _overlays(self, max_side: int | None = None, every: int = 1) -> Iterator[np.ndarray]:
        """Every frame (``every``: every ``every``-th from the first) of the video with its masks
        drawn (labels on), optionally scaled down."""
        masks = self._by_frame()
        pending = next(masks, None)
        with open_video(str(self.library.path(self.media))) as video:
            for index, rgb in video:
                stored: list[StoredMask] = []
                if pending is not None and pending[0] == index:
                    stored, pending = pending[1], next(masks, None)
                if index % every:
                    continue
                obj_ids, frame_masks = self._masks(stored)
                drawn = overlay(rgb, frame_masks, obj_ids, labels=True)
                if max_side is not None and max(drawn.shape[:2]) > max_side:
                    image = Image.fromarray(drawn)
                    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
                    drawn = np.asarray(image)
                yield drawn
