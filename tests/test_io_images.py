"""Image decoding (anyseg.io.images): every input kind, every mode, every failure."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InvalidInputError, MediaError
from anyseg.io import images
from anyseg.io.images import as_rgb_array, load_image, load_label_map


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_every_source_kind_gives_the_same_rgb(tmp_path, rgb):
    data = _encode(Image.fromarray(rgb))
    path = tmp_path / "x.png"
    path.write_bytes(data)
    sources = [path, str(path), data, bytearray(data), io.BytesIO(data), Image.fromarray(rgb), rgb]
    for src in sources:
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == (20, 30, 3), type(src)
        np.testing.assert_array_equal(out, rgb)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:5, :5] = (255, 0, 0)  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90° clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)

    upright = load_image(path)
    assert upright.shape == (40, 20, 3)
    assert upright[2, -3, 0] > 200 and upright[2, 2, 0] < 50  # red moved to the top-right
    assert load_image(Image.open(path)).shape == (40, 20, 3)
    assert load_image(path, exif_transpose=False).shape == (20, 40, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK"])
def test_modes_convert_to_rgb(mode, rgb):
    image = Image.fromarray(rgb).convert(mode)
    out = load_image(_encode(image, "TIFF" if mode == "CMYK" else "PNG"))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(image.convert("RGB")))


def test_rgba_drops_alpha_without_compositing(rgb):
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], dtype=np.uint8)])
    np.testing.assert_array_equal(load_image(_encode(Image.fromarray(rgba))), rgb)


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits():
    values = np.array([[0, 257 * 100, 65535, 128]], dtype=np.uint16)
    out = load_image(_encode(Image.fromarray(values)))
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 0])
    assert (out[..., 0] == out[..., 2]).all()


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(MediaError, match="folder"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(path)
    with pytest.raises(MediaError):
        load_image(b"")


def test_truncated_image(rgb):
    data = _encode(Image.fromarray(np.tile(rgb, (10, 10, 1))), "JPEG")
    with pytest.raises(MediaError, match="truncated"):
        load_image(data[: len(data) // 2])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and has no pixel data (enough to trip size checks)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 30_000])  # over our limit; also over PIL's own
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(MediaError, match="at most 100,000,000 pixels"):
        load_image(_png_header_only(side, side))


def test_pixel_limit_is_a_module_constant(monkeypatch, rgb):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(MediaError, match="too large"):
        load_image(_encode(Image.fromarray(rgb)))


def test_zero_size_image():
    with pytest.raises(MediaError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))


def test_as_rgb_array_accepts_grey_alpha_and_single_channel(rgb):
    grey = rgb[..., 0]
    np.testing.assert_array_equal(as_rgb_array(grey), np.dstack([grey] * 3))
    np.testing.assert_array_equal(as_rgb_array(grey[..., None]), np.dstack([grey] * 3))
    rgba = np.dstack([rgb, np.full(grey.shape, 7, np.uint8)])
    out = as_rgb_array(rgba)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous
    assert as_rgb_array(rgb) is rgb  # valid input passes through without a copy
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(rgb)), rgb)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((4, 5, 3), np.float32), "dtype float32"),
        (np.zeros((3, 4, 5), np.uint8), r"shape \(3, 4, 5\)"),
        (np.zeros((2, 4, 5, 3), np.uint8), r"shape \(2, 4, 5, 3\)"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros(5, np.uint8), r"shape \(5, 1\)|shape \(5,\)"),
        ("image.png", r"got the path image.png: read it with anyseg.io.images.load_image"),
        (5, "got int"),
    ],
)
def test_as_rgb_array_rejects(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        as_rgb_array(bad)


def test_load_label_map_reads_palette_indices():
    labels = np.array([[0, 1, 2], [3, 255, 0]], dtype=np.uint8)
    image = Image.fromarray(labels, mode="L").convert("P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    np.testing.assert_array_equal(load_label_map(_encode(image)), labels)
    with pytest.raises(MediaError, match="not a label map"):
        load_label_map(_encode(Image.new("RGB", (3, 2))))
