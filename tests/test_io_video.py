"""Lazy video decoding (anyseg.io.video) on real samples and generated files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from anyseg.errors import InvalidInputError, MediaError
from anyseg.io.images import load_image
from anyseg.io.video import FileVideo, open_video

NUM_FRAMES = 30


def _pattern(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame ``i``: brightness 8*i, so a decoded frame tells its index despite compression."""
    frame = np.full((height, width, 3), 8 * i, dtype=np.uint8)
    frame[:8, :8] = (255, 0, 0)  # a marker in the top-left corner
    return frame


def _write(path: Path, codec: str, count: int = NUM_FRAMES, rotation: int = 0, **options) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(count):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_pattern(i), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _brightness(frame: np.ndarray) -> float:
    return float(frame[16:, 16:].mean())


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory) -> Path:
    """H.264 with a keyframe every 6 frames and B-frames: seeks and reordering are exercised."""
    path = tmp_path_factory.mktemp("video") / "gop.mp4"
    return _write(path, "libx264", g="6", keyint_min="6", bf="2", sc_threshold="0")


# --- files -----------------------------------------------------------------------------------


def test_generated_video_random_access_matches_sequential(gop_video):
    with open_video(gop_video, cache_size=3) as video:
        assert isinstance(video, FileVideo)
        assert (video.num_frames, video.height, video.width, video.fps) == (NUM_FRAMES, 48, 64, 25)
        frames = dict(video)
        assert sorted(frames) == list(range(NUM_FRAMES))
        for i, frame in frames.items():
            assert abs(_brightness(frame) - 8 * i) < 3, i
        order = [17, 3, 29, 0, 12, 13, 11, 25, 6, 5, 29, 28]
        for i in order + list(reversed(range(NUM_FRAMES))):
            np.testing.assert_array_equal(video.get(i), frames[i])
        assert len(video._cache) <= 3
        video.get(4)[:] = 0  # callers get copies
        np.testing.assert_array_equal(video.get(4), frames[4])


def test_concurrent_get_and_close(gop_video):
    video = open_video(gop_video, cache_size=2)
    expected = {i: video.get(i) for i in range(NUM_FRAMES)}
    order = np.random.default_rng(0).integers(0, NUM_FRAMES, size=60).tolist()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(video.get, order))
    for i, frame in zip(order, results):
        np.testing.assert_array_equal(frame, expected[i])
    video.close()
    with pytest.raises(MediaError, match="closed"):
        video.get(0)


def test_webm_without_frame_count_is_counted(tmp_path):
    path = _write(tmp_path / "clip.webm", "libvpx-vp9", count=7)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # WebM headers carry no count
    with open_video(path) as video:
        assert video.num_frames == 7
        assert [i for i, _ in video] == list(range(7))
        assert abs(_brightness(video.get(6)) - 48) < 3


def test_rotation_metadata_is_applied(tmp_path):
    path = _write(tmp_path / "rotated.mp4", "libx264", count=3, rotation=90)
    with open_video(path) as video:
        assert (video.height, video.width) == (64, 48)
        frame = video.get(2)
        assert frame.shape == (64, 48, 3)
        assert frame[-4, 4, 0] > 200  # top-left marker turned 90° counter-clockwise
        assert next(iter(video))[1].shape == (64, 48, 3)


@pytest.mark.parametrize(
    ("name", "count", "size"),
    [
        ("bedroom.mp4", 200, (540, 960)),
        ("01_dog.mp4", 289, (720, 1280)),
        ("04_coffee.mp4", 287, (720, 1280)),
    ],
)
def test_sample_frame_counts_match_a_full_decode(samples_dir, name, count, size):
    path = samples_dir / "videos" / name
    with av.open(str(path)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    with open_video(path) as video:
        assert video.num_frames == decoded == count
        assert (video.height, video.width) == size
        assert video.fps == pytest.approx(30 if name == "bedroom.mp4" else 30000 / 1001)


def test_sample_random_access(samples_dir):
    path = samples_dir / "videos" / "01_dog.mp4"  # two keyframes: seeks past the first GOP
    wanted = [255, 249, 0, 256, 250, 1]  # the second keyframe is frame 250
    with av.open(str(path)) as container:
        reference = {}
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                assert frame.key_frame == (i in (0, 250))
                reference[i] = frame.to_ndarray(format="rgb24")
            if i == max(wanted):
                break
    with open_video(path) as video:
        for i in wanted:
            np.testing.assert_array_equal(video.get(i), reference[i])
        with pytest.raises(MediaError, match="frame 289 is past the end: the video has 289 frames"):
            video.get(289)


def test_past_the_end_message(samples_dir):
    with open_video(samples_dir / "videos" / "bedroom.mp4") as video:
        with pytest.raises(MediaError) as info:
            video.get(250)
        assert str(info.value) == "frame 250 is past the end: the video has 200 frames"
        with pytest.raises(InvalidInputError):
            video.get(-1)


@pytest.mark.parametrize(
    ("name", "fraction"), [("01_dog.mp4", 0.45), ("bedroom.mp4", 0.45), ("01_dog.mp4", 0.003)]
)
def test_truncated_files_are_refused(samples_dir, tmp_path, name, fraction):
    data = (samples_dir / "videos" / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(MediaError, match="truncated|not a readable video|corrupt"):
        open_video(path)


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MediaError):
        open_video(garbage)
    with pytest.raises(MediaError, match="no such file"):
        open_video(tmp_path / "missing.mp4")


# --- folders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "bmp"])
def test_a_still_image_is_not_a_video(tmp_path, ext):
    path = tmp_path / f"photo.{ext}"
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(path)
    with pytest.raises(MediaError, match="is a still image, not a video"):
        open_video(path)


def test_fixture_frame_folder(fixtures_dir):
    folder = fixtures_dir / "video_frames"
    files = sorted(folder.glob("*.jpg"))
    with open_video(folder) as video:
        assert video.num_frames == len(files) == 12 and video.fps is None
        first = load_image(files[0], exif_transpose=False)
        assert (video.height, video.width) == first.shape[:2]
        items = list(video)
        assert [i for i, _ in items] == list(range(12))
        np.testing.assert_array_equal(items[0][1], first)
        np.testing.assert_array_equal(video.get(11), load_image(files[11]))
    assert open_video(folder, fps=24).fps == 24


def _save_frames(folder: Path, names: list[str], size=(8, 6)) -> None:
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((size[1], size[0], 3), i, np.uint8)).save(folder / name)


def test_folder_order(tmp_path):
    numeric = tmp_path / "numeric"
    _save_frames(numeric, ["10.png", "2.png", "1.png"])  # saved with values 0, 1, 2
    (numeric / "notes.txt").write_text("ignored")
    (numeric / ".hidden.png").write_bytes(b"ignored")
    with open_video(numeric) as video:
        assert [int(f[0, 0, 0]) for _, f in video] == [2, 1, 0]  # 1, 2, 10

    named = tmp_path / "named"
    _save_frames(named, ["b.PNG", "a10.jpg", "a2.jpeg"])
    with open_video(named) as video:
        assert [Path(p).name for p in video.files] == ["a10.jpg", "a2.jpeg", "b.PNG"]


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no JPEG or PNG frames"):
        open_video(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    _save_frames(mixed, ["0.png", "1.png"])
    _save_frames(mixed, ["2.png"], size=(9, 6))
    with pytest.raises(MediaError, match="mixed frame sizes: 2.png is 9×6"):
        open_video(mixed)


# --- in-memory and live sources --------------------------------------------------------------


def test_list_and_array_sources():
    frames = [_pattern(i) for i in range(5)]
    for source in (frames, tuple(frames), np.stack(frames)):
        with open_video(source) as video:
            assert (video.num_frames, video.height, video.width, video.fps) == (5, 48, 64, None)
            np.testing.assert_array_equal(video.get(3), frames[3])
            assert [i for i, _ in video] == list(range(5))
    with pytest.raises(MediaError, match="zero frames"):
        open_video([])
    with pytest.raises(MediaError, match="same size"):
        open_video([_pattern(0), _pattern(1, height=40)])
    with pytest.raises(InvalidInputError, match="frame 1"):
        open_video([_pattern(0), _pattern(1).astype(np.float32)])
    with pytest.raises(InvalidInputError, match="T×H×W×3"):
        open_video(_pattern(0))


def test_live_source_buffer():
    produced = []

    def camera():
        for i in range(10):
            produced.append(i)
            yield _pattern(i)

    video = open_video(camera(), buffer_size=4)
    assert video.num_frames is None and (video.height, video.width) == (48, 64)
    assert produced == [0]  # only the first frame is read at open
    np.testing.assert_array_equal(video.get(0), _pattern(0))
    with pytest.raises(MediaError, match="has not arrived yet"):
        video.get(1)
    seen = []
    for i, frame in video:
        seen.append(i)
        np.testing.assert_array_equal(frame, _pattern(i))
        if i == 5:
            break
    np.testing.assert_array_equal(video.get(5), _pattern(5))
    with pytest.raises(MediaError, match="no longer buffered"):
        video.get(0)
    seen += [i for i, _ in video]  # a second loop continues where the first stopped
    assert seen == list(range(10)) and video.num_frames == 10
    with pytest.raises(MediaError, match="past the end"):
        video.get(10)


def test_live_source_errors():
    with pytest.raises(MediaError, match="zero frames"):
        open_video(iter([]))
    video = open_video(iter([_pattern(0), _pattern(1, width=32)]))
    with pytest.raises(MediaError, match="frame 1 is 32×48"):
        list(video)
    with pytest.raises(InvalidInputError):
        open_video(42)


def test_source_passes_through(gop_video):
    with open_video(gop_video) as video:
        assert open_video(video) is video
