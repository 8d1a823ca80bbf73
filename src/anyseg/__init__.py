"""anyseg: segment anything in images and videos.

>>> import anyseg
>>> model = anyseg.load_model("sam2.1-tiny")
>>> pred = anyseg.ImagePredictor(model)
>>> pred.set_image(rgb)
>>> out = pred.predict(points=[[x, y]], labels=[1])
"""

import os as _os
import sys as _sys

# torch's CPU allocator puts buffers of 2 MB and more on transparent huge pages when this is
# set before its first allocation (it is read once): far fewer TLB misses when a click's
# buffers come back cold from idle, 3-5% of a click (benchmarks/README.md). Imported after
# torch, anyseg cannot set it; THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
if "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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
