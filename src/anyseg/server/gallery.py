"""Example media: the photos and clips of the SAM and SAM 2 examples, fetched on first use.

Each sample is downloaded from its public address into ``<data>/gallery/`` the first time it is
opened, then served from there. A local folder laid out like the samples' (``images/``,
``videos/``) can stand in for the network (``anyseg serve --samples DIR``). When a download fails
the gallery remembers that it looks offline, and says so (a 424: the download it depends on
failed); uploads work regardless.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from anyseg import hub
from anyseg.errors import WeightsUnavailableError
from anyseg.server.errors import ApiError, not_found
from anyseg.io.export import atomic_path
from anyseg.io.images import load_image
from anyseg.io.video import open_video
from anyseg.server.media import copy_into, jpeg
from anyseg.server.schemas import Gallery as GalleryInfo
from anyseg.server.schemas import GallerySample

_RAW = "https://raw.githubusercontent.com/facebookresearch"


@dataclass(frozen=True)
class Sample:
    id: str
    title: str
    kind: str
    relpath: str  # where it sits in a samples folder, and under <data>/gallery
    url: str


SAMPLES = (
    Sample("truck", "Truck", "image", "images/truck.jpg", f"{_RAW}/sam2/main/notebooks/images/truck.jpg"),
    Sample("groceries", "Groceries", "image", "images/groceries.jpg",
           f"{_RAW}/sam2/main/notebooks/images/groceries.jpg"),
    Sample("cars", "Cars", "image", "images/cars.jpg", f"{_RAW}/sam2/main/notebooks/images/cars.jpg"),
    Sample("dog", "Dog", "image", "images/dog.jpg", f"{_RAW}/segment-anything/main/notebooks/images/dog.jpg"),
    Sample("bedroom", "Bedroom", "video", "videos/bedroom.mp4",
           f"{_RAW}/sam2/main/notebooks/videos/bedroom.mp4"),
    Sample("dog-video", "Dog walk", "video", "videos/01_dog.mp4", f"{_RAW}/sam2/main/demo/data/gallery/01_dog.mp4"),
    Sample("coffee", "Coffee", "video", "videos/04_coffee.mp4",
           f"{_RAW}/sam2/main/demo/data/gallery/04_coffee.mp4"),
)


class Gallery:
    """The samples, where they are cached, and whether the last download failed."""

    def __init__(self, data_dir: Path, samples_dir: Path | None = None, samples: tuple[Sample, ...] = SAMPLES,
                 timeout: float = 30.0) -> None:
        self.cache_dir = data_dir / "gallery"
        self.samples_dir = samples_dir
        self.samples = {s.id: s for s in samples}
        self.timeout = timeout
        self._offline: str | None = None
        self._lock = threading.Lock()

    def cached_path(self, sample: Sample) -> Path:
        return self.cache_dir / sample.relpath

    def info(self) -> GalleryInfo:
        samples = [GallerySample(id=s.id, title=s.title, kind=s.kind, url=s.url,
                                 cached=self.cached_path(s).is_file()) for s in self.samples.values()]
        return GalleryInfo(samples=samples, offline=self._offline is not None, detail=self._offline)

    def sample(self, sample_id: str) -> Sample:
        try:
            return self.samples[sample_id]
        except KeyError:
            raise not_found("sample", f"no gallery sample {sample_id!r}") from None

    def thumbnail(self, sample: Sample) -> bytes:
        """A small JPEG of the sample's (first) image, if the sample is at hand without
        downloading it (cached, or in the samples folder)."""
        thumb = self.cache_dir / "thumbnails" / f"{sample.id}.jpg"
        if not thumb.is_file():
            local = self.samples_dir / sample.relpath if self.samples_dir is not None else None
            source = next((p for p in (self.cached_path(sample), local) if p is not None and p.is_file()), None)
            if source is None:
                raise not_found("thumbnail", f"{sample.title} is not downloaded yet")
            if sample.kind == "image":
                rgb = load_image(source)
            else:
                with open_video(str(source)) as video:
                    rgb = video.get(0)
            thumb.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(thumb) as tmp:
                Path(tmp).write_bytes(jpeg(rgb, max_side=240, quality=80))
        return thumb.read_bytes()

    def fetch(self, sample: Sample) -> Path:
        """The sample's cached file: copied from the samples folder or downloaded, once."""
        path = self.cached_path(sample)
        with self._lock:  # two requests for one sample download it once
            if path.is_file():
                return path
            path.parent.mkdir(parents=True, exist_ok=True)
            local = self.samples_dir / sample.relpath if self.samples_dir is not None else None
            if local is not None and local.is_file():
                copy_into(local, path)
                return path
            try:
                with warnings.catch_warnings():  # the samples have no published checksums
                    warnings.simplefilter("ignore")
                    hub.download(sample.url, path, sha256=None, progress=False, timeout=self.timeout)
            except WeightsUnavailableError as exc:
                self._offline = (f"the example {sample.title!r} could not be downloaded from {sample.url}; "
                                 "you seem to be offline. Upload your own image or video instead.")
                raise ApiError(424, "offline", self._offline) from exc
            self._offline = None
            return path
