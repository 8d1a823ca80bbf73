"""Image decoding and validation.

:func:`load_image` decodes user media (paths, bytes, file objects, PIL images, arrays) into an
``H×W×3`` uint8 RGB array, applying the EXIF orientation. :func:`as_rgb_array` validates an image
that is already in memory; predictors call it on whatever the user hands them.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from anyseg.errors import InvalidInputError, MediaError

MAX_PIXELS = 100_000_000
"""Largest image (width × height) anyseg decodes; bigger ones are refused before decoding."""

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")

ImageSource = (
    str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray
)


def load_image(src: ImageSource, exif_transpose: bool = True) -> np.ndarray:
    """Decode ``src`` into an ``H×W×3`` uint8 RGB array.

    ``src`` is a path, the encoded bytes, a binary file object, a PIL image or an array (validated
    by :func:`as_rgb_array`). The EXIF orientation is applied unless ``exif_transpose`` is false
    (video frames: the official loaders ignore it); greyscale, RGBA, palette and 16-bit images are
    converted to RGB (alpha is dropped). Raises :class:`MediaError` when the file is missing, is
    not an image, is truncated, is empty or has more than :data:`MAX_PIXELS` pixels.
    """
    if isinstance(src, np.ndarray):
        return as_rgb_array(src)
    if isinstance(src, Image.Image):
        _check_size(src, "the image")
        return _pil_to_rgb(_orient(_decode(src, "the image"), "the image", exif_transpose))
    with open_pil(src) as (image, name):
        return _pil_to_rgb(_orient(_decode(image, name), name, exif_transpose))


def load_label_map(src: ImageSource) -> np.ndarray:
    """Read a label image (an indexed or greyscale PNG) as an ``H×W`` uint8 array of its values.

    For palette (mode ``P``) images the values are the palette indices, not the colours, as
    DAVIS-style annotations are read. No EXIF orientation is applied.
    """
    with open_pil(src) as (image, name):
        image = _decode(image, name)
        if image.mode in ("P", "L", "1"):
            return np.array(image, dtype=np.uint8)
        raise MediaError(f"{name} is a {image.mode} image, not a label map (expected mode P or L)")


def as_rgb_array(image: Any) -> np.ndarray:
    """Validate an in-memory image and return it as a C-contiguous ``H×W×3`` uint8 RGB array.

    Accepts a PIL image (converted to RGB, no EXIF handling) or anything array-like of dtype uint8
    shaped ``H×W`` (greyscale, stacked to three channels), ``H×W×1``, ``H×W×3`` or ``H×W×4`` (alpha
    dropped). Raises :class:`InvalidInputError` naming the received type, shape or dtype otherwise.
    """
    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise InvalidInputError(f"the image is empty ({image.width}×{image.height} pixels)")
        return _pil_to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        raise InvalidInputError(f"expected an H×W×3 uint8 array or a PIL image, got the path {image}: read it "
                                "with anyseg.io.images.load_image(path) (which applies its EXIF orientation)")
    if not isinstance(image, np.ndarray) and not hasattr(image, "__array__"):
        raise InvalidInputError(
            f"expected an H×W×3 uint8 array or a PIL image, got {type(image).__name__}"
        )
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InvalidInputError(
            f"expected a uint8 image, got dtype {array.dtype} (shape {array.shape}); "
            "convert with (x * 255).round().astype(np.uint8) if it is a float image in [0, 1]"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidInputError(f"expected an H×W×3 image, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"the image is empty (shape {array.shape})")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


@contextmanager
def open_pil(src: ImageSource) -> Iterator[tuple[Image.Image, str]]:
    """Open ``src`` lazily with PIL (header only) and yield ``(image, name)``.

    ``name`` describes the source for error messages. Refuses missing files, non-images and images
    over :data:`MAX_PIXELS` with :class:`MediaError`; the file is closed on exit.
    """
    name, stream = _as_stream(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(stream)
            except Image.DecompressionBombError:
                raise MediaError(
                    f"{name} is too large: anyseg decodes at most {MAX_PIXELS:,} pixels"
                ) from None
            except (OSError, SyntaxError, ValueError) as e:
                raise MediaError(f"{name} is not a readable image ({e})") from e
        with image:
            _check_size(image, name)
            yield image, name
    finally:
        if stream is not src:
            stream.close()


def _as_stream(src: ImageSource) -> tuple[str, IO[bytes]]:
    """Return ``(name, binary stream)`` for a path, bytes or file object."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "the image data", io.BytesIO(bytes(src))
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise MediaError(f"{path}: no such file")
        if os.path.isdir(path):
            raise MediaError(f"{path} is a folder, not an image file")
        try:
            return path, open(path, "rb")
        except OSError as e:
            raise MediaError(f"{path} cannot be read ({e.strerror})") from e
    if hasattr(src, "read"):
        return getattr(src, "name", "the image stream"), src
    raise InvalidInputError(
        "expected an image path, bytes, a file object, a PIL image or an array, "
        f"got {type(src).__name__}"
    )


def _check_size(image: Image.Image, name: str) -> None:
    width, height = image.size
    if width == 0 or height == 0:
        raise MediaError(f"{name} is empty ({width}×{height} pixels)")
    if width * height > MAX_PIXELS:
        raise MediaError(
            f"{name} is too large ({width}×{height} = {width * height:,} pixels): "
            f"anyseg decodes at most {MAX_PIXELS:,} pixels"
        )


def _decode(image: Image.Image, name: str) -> Image.Image:
    """Fully decode a lazily opened image, turning PIL's errors into :class:`MediaError`."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e) else "corrupt"
        raise MediaError(f"{name} is {reason} and cannot be decoded ({e})") from e
    return image


def _orient(image: Image.Image, name: str, exif_transpose: bool) -> Image.Image:
    """Apply the EXIF orientation when asked to."""
    if not exif_transpose:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{name} cannot be decoded ({e})") from e


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to an ``H×W×3`` uint8 RGB array."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except (OSError, ValueError) as e:
            raise MediaError(f"cannot convert a {image.mode} image to RGB ({e})") from e
    return np.array(image, dtype=np.uint8)
