"""Helpers for the studio's tests: a tiny random-weight SAM 2, small media files, a server
process, and a reader of Server-Sent Events.

Run as a script it serves the studio with the tiny model (``python tests/server_helpers.py
--port P --data-dir D``), for tests that need a real server process to kill.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from anyseg.io.export import write_video
from anyseg.models.hiera import HieraConfig
from anyseg.models.sam2 import Sam2Config, Sam2Model

REPO = Path(__file__).resolve().parents[1]


def tiny_model() -> Sam2Model:
    """A reduced SAM 2 (image size 128) with random weights: fast enough for every API test."""
    torch.manual_seed(0)
    trunk = HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(),
                        window_spec=(8, 4, 4, 2), window_pos_embed_bkg_spatial_size=(4, 4))
    return Sam2Model(Sam2Config(trunk=trunk, image_size=128)).eval().requires_grad_(False)


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_clip(path: Path, frames: int = 6, width: int = 64, height: int = 48, fps: float = 10.0) -> Path:
    """A short MP4 of a bright square moving over noise."""
    rng = np.random.default_rng(1)
    images = []
    for t in range(frames):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        frame[10:30, 8 + 3 * t:28 + 3 * t] = (230, 200, 40)
        images.append(frame)
    write_video(path, images, fps=fps)
    return path


def clip_from(source: Path, path: Path, frames: int, max_side: int = 320) -> Path:
    """The first ``frames`` frames of a real video, scaled down, re-encoded as MP4."""
    images = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            image = frame.to_image()
            image.thumbnail((max_side, max_side))
            images.append(np.asarray(image))
            if len(images) == frames:
                break
    write_video(path, images, fps=10.0)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers (the server has started), failing if the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_server(args: list[str], port: int, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start ``python ARGS`` (a server on ``port``) and wait until it answers."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, **(env or {})},
                               stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/status", process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def sse_events(text: str) -> list[tuple[str, dict]]:
    """``(event, data)`` pairs of a Server-Sent Events body."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def _serve_tiny() -> None:
    import uvicorn

    from anyseg.server import ServerSettings, create_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--samples", type=Path)
    args = parser.parse_args()
    settings = ServerSettings(model="tiny random SAM 2", data_dir=args.data_dir, samples_dir=args.samples)
    app = create_app(settings, model=tiny_model())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    _serve_tiny()
