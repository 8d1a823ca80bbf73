"""Lazy video decoding: video files, folders of frames, lists of arrays and live iterators.

:func:`open_video` returns a :class:`VideoSource` that decodes frames on demand and never holds
the whole video: files are indexed once (packets demuxed, nothing decoded) and decoded from the
nearest keyframe; a small LRU cache keeps the most recently decoded frames. Frames are ``H×W×3``
uint8 RGB arrays in display orientation (a file's rotation metadata is applied).
"""

from __future__ import annotations

import bisect
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from anyseg.errors import InvalidInputError, MediaError
from anyseg.io.images import as_rgb_array, load_image, open_pil

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
"""File extensions (any case) read as frames from a folder."""


class VideoSource:
    """A video's frames, decoded lazily.

    ``height`` and ``width`` are the frame size, ``fps`` the frame rate (``None`` if unknown) and
    ``num_frames`` the frame count (``None`` for a live source until it ends). Iterating yields
    ``(index, frame)`` in order; :meth:`get` gives random access and is thread-safe. Use as a
    context manager or call :meth:`close`.
    """

    height: int
    width: int
    fps: float | None
    num_frames: int | None

    def __init__(self, cache_size: int) -> None:
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._closed = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` (from 0) as a new ``H×W×3`` uint8 array; :class:`MediaError` past the
        end."""
        index = self._check_index(index)
        with self._lock:
            if self._closed:
                raise MediaError("the video is closed")
            frame = self._cache.get(index)
            if frame is None:
                frame = self._check_size(index, self._read(index))
                self._remember(index, frame)
            else:
                self._cache.move_to_end(index)
            return frame.copy()

    def close(self) -> None:
        """Release the decoder and the cached frames."""
        self._closed = True
        self._cache.clear()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        frames = "?" if self.num_frames is None else self.num_frames
        return f"{type(self).__name__}({frames} frames, {self.width}×{self.height}, fps={self.fps})"

    def _read(self, index: int) -> np.ndarray:
        """Decode frame ``index``, already known to exist and not cached."""
        raise NotImplementedError

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise InvalidInputError(f"a frame index is an int, got {type(index).__name__}")
        if index < 0:
            raise InvalidInputError(f"frame indices start at 0, got {index}")
        if self.num_frames is not None and index >= self.num_frames:
            raise MediaError(
                f"frame {index} is past the end: the video has {self.num_frames} frames"
            )
        return int(index)

    def _check_size(self, index: int, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] != (self.height, self.width):
            raise MediaError(
                f"frame {index} is {frame.shape[1]}×{frame.shape[0]} but the video is "
                f"{self.width}×{self.height}: all frames must have the same size"
            )
        return frame


def open_video(
    source: Any,
    fps: float | None = None,
    cache_size: int = 8,
    buffer_size: int = 64,
) -> VideoSource:
    """Open a video for lazy decoding.

    ``source`` is a video file path (anything FFmpeg reads: mp4, mov, webm, ...), a folder of
    JPEG/PNG frames (ordered by the integer file stems when all are integers, else by name), a
    list/tuple of ``H×W×3`` uint8 frames (or a ``T×H×W×3`` array), an iterator of frames (a live
    source: length unknown; :meth:`VideoSource.get` reaches only the last ``buffer_size`` frames
    already iterated) or a :class:`VideoSource` (returned as is). ``fps`` overrides or supplies
    the frame rate; ``cache_size`` bounds the decoded frames kept for random access. Raises
    :class:`MediaError` for unreadable, truncated or empty videos and mixed frame sizes.
    """
    if isinstance(source, VideoSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            video: VideoSource = FolderVideo(path, cache_size)
        elif os.path.isfile(path):
            video = FileVideo(path, cache_size)
        else:
            raise MediaError(f"{path}: no such file or folder")
    elif isinstance(source, (list, tuple, np.ndarray)):
        if isinstance(source, np.ndarray) and source.ndim != 4:
            raise InvalidInputError(f"an array of frames is T×H×W×3, got shape {source.shape}")
        video = ArrayVideo(source)
    elif isinstance(source, Iterable):
        video = LiveVideo(iter(source), buffer_size)
    else:
        raise InvalidInputError(
            "expected a video path, a frame folder, a list of frames or an iterator of frames, "
            f"got {type(source).__name__}"
        )
    if fps is not None:
        video.fps = float(fps)
    return video


@dataclass(frozen=True)
class _PacketIndex:
    """Where a file's frames are: presentation timestamps and keyframe seek points."""

    frame_of_pts: dict[int, int] | None  # None when the file has no usable timestamps
    keyframes: list[int]  # frame indices of keyframes, ascending (always starts with 0)
    seek_ts: list[int]  # for each keyframe, the timestamp to seek to (stream time base)
    num_frames: int


class FileVideo(VideoSource):
    """A video file decoded with PyAV: indexed once at open, decoded from the nearest keyframe."""

    def __init__(self, path: str, cache_size: int = 8) -> None:
        super().__init__(cache_size)
        self.path = path
        self._index = _index_packets(path)
        self.num_frames = self._index.num_frames
        self._container, self._stream = _open_stream(path)
        self.fps = _stream_fps(self._stream)
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._position = -1  # index of the last frame the decoder produced
        try:
            first = self._read(0)
        except MediaError:
            self._container.close()
            raise
        self.height, self.width = first.shape[:2]
        self._remember(0, first)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        container, stream = _open_stream(self.path)
        with container:
            count = 0
            for frame in _decode(container, stream, self.path):
                index = self._frame_index(frame, count)
                count = index + 1
                if index >= 0:
                    yield index, self._check_size(index, _to_rgb(frame))

    def close(self) -> None:
        with self._lock:
            super().close()
            self._decoder = None
            self._container.close()

    def _read(self, index: int) -> np.ndarray:
        key = bisect.bisect_right(self._index.keyframes, index) - 1
        keyframe = self._index.keyframes[key]
        if self._decoder is None or not keyframe <= self._position < index:
            self._seek(key)
        cache_from = max(keyframe, index - self._cache_size + 1)
        for frame in self._decoder:
            self._position = self._frame_index(frame, self._position + 1)
            if self._position == index:
                return _to_rgb(frame)
            if self._position > index:
                break
            if self._position >= cache_from:
                self._remember(self._position, _to_rgb(frame))
        self._decoder = None
        raise MediaError(f"frame {index} of {self.path} cannot be decoded: the file is corrupt")

    def _seek(self, key: int) -> None:
        if self._index.frame_of_pts is None:  # no timestamps to seek by: decode from the start
            self._container.close()
            self._container, self._stream = _open_stream(self.path)
        else:
            self._container.seek(
                self._index.seek_ts[key], stream=self._stream, backward=True, any_frame=False
            )
        self._decoder = _decode(self._container, self._stream, self.path)
        self._position = self._index.keyframes[key] - 1

    def _frame_index(self, frame: av.VideoFrame, fallback: int) -> int:
        """The frame's index from its timestamp (``fallback``, the count so far, without one);
        -1 for a frame the index does not know."""
        if self._index.frame_of_pts is None or frame.pts is None:
            return fallback
        return self._index.frame_of_pts.get(frame.pts, -1)


class FolderVideo(VideoSource):
    """A folder of JPEG/PNG frames, one file per frame."""

    def __init__(self, path: str, cache_size: int = 8) -> None:
        super().__init__(cache_size)
        self.path = path
        self.files = _frame_files(path)
        self.num_frames = len(self.files)
        self.fps = None
        self.width, self.height = _common_size(self.files)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for index in range(len(self.files)):
            yield index, self.get(index)

    def _read(self, index: int) -> np.ndarray:
        return load_image(self.files[index], exif_transpose=False)


class ArrayVideo(VideoSource):
    """Frames already in memory (a list of arrays or a ``T×H×W×3`` array); nothing is copied."""

    def __init__(self, frames: Sequence[Any]) -> None:
        super().__init__(cache_size=0)
        if len(frames) == 0:
            raise MediaError("the video has zero frames")
        self._frames = [_as_frame(frame, i) for i, frame in enumerate(frames)]
        self.height, self.width = self._frames[0].shape[:2]
        for i, frame in enumerate(self._frames):
            self._check_size(i, frame)
        self.num_frames = len(self._frames)
        self.fps = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        yield from enumerate(self._frames)

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` itself (not a copy)."""
        return self._frames[self._check_index(index)]


class LiveVideo(VideoSource):
    """Frames arriving from an iterator (a camera, a stream): read once, in order.

    Iterating consumes the source (a second loop continues where the first stopped); the last
    ``buffer_size`` frames received stay reachable with :meth:`get`. ``num_frames`` is ``None``
    until the iterator ends.
    """

    def __init__(self, frames: Iterator[Any], buffer_size: int = 64) -> None:
        super().__init__(cache_size=max(1, buffer_size))
        self._frames = frames
        self.num_frames = None
        self.fps = None
        self._received = 0
        self._yielded = 0
        first = self._pull()
        if first is None:
            raise MediaError("the video has zero frames")
        self.height, self.width = first.shape[:2]
        self._remember(0, first)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            if self._yielded < self._received:
                frame = self._cache.get(self._yielded)
                if frame is None:
                    raise MediaError(f"frame {self._yielded} has left the live buffer")
            else:
                frame = self._pull()
                if frame is None:
                    return
                frame = self._check_size(self._yielded, frame)
                self._remember(self._yielded, frame)
            self._yielded += 1
            yield self._yielded - 1, frame

    def _pull(self) -> np.ndarray | None:
        """The next frame from the iterator, or ``None`` (and ``num_frames`` set) at its end."""
        try:
            frame = next(self._frames)
        except StopIteration:
            self.num_frames = self._received
            return None
        frame = _as_frame(frame, self._received)
        self._received += 1
        return frame

    def _read(self, index: int) -> np.ndarray:
        if index >= self._received:
            raise MediaError(
                f"frame {index} has not arrived yet: the live source has sent {self._received}"
            )
        raise MediaError(
            f"frame {index} is no longer buffered: a live source keeps its last "
            f"{self._cache_size} frames"
        )


def _open_stream(path: str) -> tuple[Any, Any]:
    """Open ``path`` and return ``(container, first video stream)``."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise MediaError(f"{path} is not a readable video ({_reason(e)})") from e
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path} has no video stream")
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):  # FFmpeg's still-image readers
        container.close()
        raise MediaError(f"{path} is a still image, not a video (a folder of frames is one; images are segmented "
                         "with ImagePredictor / anyseg segment)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _index_packets(path: str) -> _PacketIndex:
    """Demux (without decoding) every packet of the video stream once."""
    container, stream = _open_stream(path)
    pts: list[int | None] = []
    keys: list[tuple[int | None, int | None]] = []
    with container:
        try:
            for packet in container.demux(stream):
                if packet.size:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append((packet.pts, packet.dts))
        except av.FFmpegError as e:
            raise MediaError(f"{path} is corrupt ({_reason(e)})") from e
        expected = stream.frames
    if not pts:
        raise MediaError(f"{path} has zero frames (the file may be truncated)")
    if expected and len(pts) < expected:
        raise MediaError(
            f"{path} is truncated: its header lists {expected} frames "
            f"but only {len(pts)} are present"
        )
    if None in pts or len(set(pts)) < len(pts):
        return _PacketIndex(None, [0], [0], len(pts))
    frame_of_pts = {p: i for i, p in enumerate(sorted(pts))}
    seek = {frame_of_pts[p]: (p if d is None else d) for p, d in keys}
    seek.setdefault(0, min(pts))  # a first frame that is no keyframe: seek to the very start
    keyframes = sorted(seek)
    return _PacketIndex(frame_of_pts, keyframes, [seek[k] for k in keyframes], len(pts))


def _decode(container: Any, stream: Any, path: str) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` from the container's current position; failures as :class:`MediaError`."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as e:
        raise MediaError(f"{path} cannot be decoded: the file is corrupt ({_reason(e)})") from e


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """An ``H×W×3`` uint8 RGB array of a decoded frame, turned upright by its display matrix."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _stream_fps(stream: Any) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _frame_files(folder: str) -> list[str]:
    """The frame files of ``folder``, in frame order."""
    names = [
        name
        for name in os.listdir(folder)
        if not name.startswith(".") and os.path.splitext(name)[1].lower() in FRAME_EXTENSIONS
    ]
    if not names:
        raise MediaError(f"{folder} has no JPEG or PNG frames")
    stems = [os.path.splitext(name)[0] for name in names]
    if all(re.fullmatch(r"\d+", stem) for stem in stems):
        names.sort(key=lambda name: (int(os.path.splitext(name)[0]), name))
    else:
        names.sort()
    return [os.path.join(folder, name) for name in names]


def _common_size(files: list[str]) -> tuple[int, int]:
    """The ``(width, height)`` every frame file has (read from the headers only)."""
    size = None
    for path in files:
        with open_pil(path) as (image, _):
            if size is None:
                size, first = image.size, path
            elif image.size != size:
                raise MediaError(
                    f"mixed frame sizes: {os.path.basename(path)} is {image.width}×{image.height} "
                    f"but {os.path.basename(first)} is {size[0]}×{size[1]}"
                )
    return size


def _as_frame(frame: Any, index: int) -> np.ndarray:
    try:
        return as_rgb_array(frame)
    except InvalidInputError as e:
        raise InvalidInputError(f"frame {index}: {e}") from e
