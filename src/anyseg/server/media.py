"""Media files of the studio: checking what was uploaded, storing it, and reading frames back.

Uploads are identified by their content, not their name: an image is whatever PIL recognises, a
video whatever FFmpeg (PyAV) decodes. Files are stored once per content (``media/<sha256>.<ext>``)
so a re-upload costs no space and finds its cached embedding.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from PIL import Image

from anyseg.errors import MediaError
from anyseg.io.images import load_image, open_pil
from anyseg.io.video import VideoSource, open_video
from anyseg.server.errors import ApiError
from anyseg.server.store import Media, new_id

# Leading bytes of the video containers whose damage deserves "truncated or damaged" rather than
# "not a video": ISO BMFF (mp4, mov), Matroska/WebM, AVI.
_VIDEO_MAGIC = (re.compile(rb"^.{4}(ftyp|moov|mdat|wide|free)", re.S), re.compile(rb"^\x1a\x45\xdf\xa3"),
                re.compile(rb"^RIFF.{4}AVI ", re.S))


class _Probe(NamedTuple):
    kind: str
    ext: str  # the file name extension to store it under
    width: int
    height: int
    num_frames: int
    fps: float | None


@dataclass(frozen=True)
class Limits:
    """What the studio accepts."""

    max_upload_bytes: int
    max_pixels: int
    max_video_frames: int


def safe_filename(name: str | None) -> str:
    """The base name of an uploaded file, without path parts or control characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return base[:200] or "upload"


class MediaLibrary:
    """The media folder: ingests uploads and gallery files, opens them for reading frames."""

    def __init__(self, data_dir: Path, limits: Limits) -> None:
        self.data_dir = data_dir
        self.limits = limits
        (data_dir / "media").mkdir(parents=True, exist_ok=True)
        self._sources: OrderedDict[str, VideoSource] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, media: Media) -> Path:
        return self.data_dir / media.path

    # -------------------------------------------------------------------- ingest
    def ingest(self, stream: IO[bytes], filename: str) -> Media:
        """Copy an uploaded file into the library (refusing it past the size limit), check it is
        an image or a video anyseg can read, and describe it. Nothing is kept on failure."""
        tmp = self.data_dir / "media" / f".upload-{new_id()}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > self.limits.max_upload_bytes:
                        raise ApiError(413, "too_large", self.too_large_message())
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise ApiError(422, "bad_media", f"{filename} is empty")
            return self._adopt(tmp, filename, digest.hexdigest(), move=True)
        finally:
            tmp.unlink(missing_ok=True)

    def ingest_file(self, path: Path, filename: str) -> Media:
        """Add a file already on disk (a gallery sample) without moving it."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return self._adopt(path, filename, digest.hexdigest(), move=False)

    def too_large_message(self) -> str:
        return f"the upload is larger than the limit of {self.limits.max_upload_bytes / 2**20:.4g} MiB"

    def _adopt(self, path: Path, filename: str, sha256: str, move: bool) -> Media:
        probe = self._probe(path, filename)
        if move:
            final = self.data_dir / "media" / f"{sha256}{probe.ext}"
            os.replace(path, final)
            path = final
        rel = path.relative_to(self.data_dir).as_posix()
        return Media(new_id(), probe.kind, filename, rel, sha256, probe.width, probe.height, probe.num_frames,
                     probe.fps)

    def _probe(self, path: Path, filename: str) -> _Probe:
        """What the file is, or a clear error."""
        try:
            with open_pil(path) as (image, _):
                width, height, fmt = image.width, image.height, (image.format or "png").lower()
        except MediaError as exc:
            if "too large" in str(exc):  # a decompression bomb, refused before decoding
                raise _renamed(exc, path, filename) from None
            return self._probe_video(path, filename)
        self._check_pixels(filename, width, height)
        try:
            rgb = load_image(path)  # decodes fully (truncated or corrupt images fail) and turns it upright
        except MediaError as exc:
            raise _renamed(exc, path, filename) from None
        ext = "." + {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)
        return _Probe("image", ext, rgb.shape[1], rgb.shape[0], 1, None)

    def _probe_video(self, path: Path, filename: str) -> _Probe:
        try:
            video = open_video(str(path), cache_size=1)
        except MediaError as exc:
            with open(path, "rb") as f:
                head = f.read(16)
            if any(m.match(head) for m in _VIDEO_MAGIC):
                raise MediaError(f"{filename} is a video that cannot be read: it is truncated or damaged "
                                 f"({_renamed(exc, path, filename)})") from None
            raise ApiError(415, "unsupported_media",
                           f"{filename} is neither an image nor a video anyseg can read") from None
        with video:
            self._check_pixels(filename, video.width, video.height)
            if video.num_frames > self.limits.max_video_frames:
                raise MediaError(f"{filename} has {video.num_frames} frames; the studio takes at most "
                                 f"{self.limits.max_video_frames}")
            ext = os.path.splitext(filename)[1].lower()
            ext = ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else ".mp4"
            return _Probe("video", ext, video.width, video.height, video.num_frames, video.fps)

    def _check_pixels(self, filename: str, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise MediaError(f"{filename} is too large ({width}×{height} = {width * height:,} pixels): "
                             f"the studio takes at most {self.limits.max_pixels:,} pixels")

    # -------------------------------------------------------------------- frames
    def frame(self, media: Media, index: int) -> np.ndarray:
        """Frame ``index`` of a video (0 of an image) as ``H×W×3`` uint8."""
        if not 0 <= index < media.num_frames:
            raise ApiError(404, "unknown_frame", f"frame {index} does not exist: the media has {media.num_frames}")
        if media.kind == "image":
            return load_image(self.path(media))
        return self._source(media).get(index)

    def _source(self, media: Media) -> VideoSource:
        """An open decoder for a video (a few kept open, least recently used closed)."""
        with self._lock:
            source = self._sources.pop(media.id, None) or open_video(str(self.path(media)))
            self._sources[media.id] = source
            while len(self._sources) > 4:
                self._sources.popitem(last=False)[1].close()
            return source

    def embedding_path(self, media: Media) -> Path:
        """Where the image embedding of ``media`` is cached."""
        return self.data_dir / "embeddings" / f"{media.sha256}.pt"

    def forget(self, media: Media, delete: bool) -> None:
        """Close a video's decoder; with ``delete``, also delete the uploaded file (gallery
        files stay) and the cached embedding."""
        with self._lock:
            source = self._sources.pop(media.id, None)
        if source is not None:
            source.close()
        if delete:
            path = self.path(media)
            if path.parent == self.data_dir / "media":
                path.unlink(missing_ok=True)
            self.embedding_path(media).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()


def jpeg(frame: np.ndarray, max_side: int | None = None, quality: int = 90) -> bytes:
    """A frame as JPEG bytes, scaled down so its longer side is at most ``max_side``."""
    image = Image.fromarray(frame)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def copy_into(src: Path, dest: Path) -> None:
    """Copy a file atomically (a partial copy never has the final name)."""
    tmp = dest.with_name(f".{dest.name}.{new_id()}.part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _renamed(exc: MediaError, path: Path, filename: str) -> MediaError:
    """``exc`` with the stored file's path replaced by the name the user gave."""
    return MediaError(str(exc).replace(str(path), filename))
