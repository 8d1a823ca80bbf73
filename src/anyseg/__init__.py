"""anyseg: segment anything in images and videos.

>>> import anyseg
>>> model = anyseg.load_model("sam2.1-tiny")
>>> pred = anyseg.ImagePredictor(model)
>>> pred.set_image(rgb)
>>> out = pred.predict(points=[[x, y]], labels=[1])
"""

from anyseg import _process

# before torch is imported: see anyseg/_process.py
_process.huge_page_buffers()
_process.keep_freed_memory()
_process.fit_threads_to_quota()

from anyseg.errors import (  # noqa: E402
    AnysegError,
    CheckpointError,
    InvalidInputError,
    MediaError,
    UnknownModelError,
    WeightsUnavailableError,
)
from anyseg.loading import load_model
from anyseg.predictors.everything import MaskGenerator
from anyseg.predictors.image import ImagePredictor, Prediction
from anyseg.predictors.video import FrameResult, VideoPredictor, VideoSession

__version__ = "0.1.0"

__all__ = [
    "AnysegError",
    "CheckpointError",
    "FrameResult",
    "ImagePredictor",
    "InvalidInputError",
    "MaskGenerator",
    "MediaError",
    "Prediction",
    "UnknownModelError",
    "VideoPredictor",
    "VideoSession",
    "WeightsUnavailableError",
    "load_model",
]
