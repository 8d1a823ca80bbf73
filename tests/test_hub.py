"""Downloading, caching and reading checkpoints, against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from anyseg import hub
from anyseg.errors import (
    CheckpointError,
    InvalidInputError,
    UnknownModelError,
    WeightsUnavailableError,
)
from anyseg.models.registry import ModelSpec, get_spec

PAYLOAD = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``PAYLOAD`` in the ways real servers (mis)behave, chosen by path prefix.

    ``/ok/…`` honours Range (206), ``/norange/…`` ignores it (200), ``/wrong/…`` sends
    other bytes, ``/truncated/…`` closes the connection half-way, ``/status/N`` answers
    HTTP N, ``/slow/…`` waits before answering. Each request is logged to ``log``.
    """

    log: list[dict]

    def do_GET(self) -> None:
        kind = self.path.split("/")[1]
        entry = {"path": self.path, "range": self.headers.get("Range"), "status": 200}
        self.log.append(entry)
        if kind == "status":
            entry["status"] = int(self.path.split("/")[2])
            self.send_error(entry["status"])
            return
        if kind == "slow":
            time.sleep(0.5)
        body = PAYLOAD[::-1] if kind == "wrong" else PAYLOAD
        start = 0
        if kind == "ok" and entry["range"]:
            start = int(entry["range"].removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                entry["status"] = 416
                self.send_error(416)
                return
            entry["status"] = 206
        self.send_response(entry["status"])
        self.send_header("Content-Length", str(len(body) - start))
        if entry["status"] == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if kind == "truncated":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up (timeout test) is not a test failure


@pytest.fixture
def server():
    """A loopback HTTP server; yields ``(base_url, request_log)``."""
    log: list[dict] = []
    handler = type("Handler", (_Handler,), {"log": log})
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.pt"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(hub, "_UNVERIFIED_WARNED", set())


def _spec(url: str, sha256: str | None = SHA) -> ModelSpec:
    return ModelSpec("test-model", "sam", "sam_vit_b", url, sha256, "file.pt", "test weights")


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _assert_by_hand_advice(message: str, url: str, dest: Path) -> None:
    assert url in message
    assert str(dest) in message
    assert "checkpoint=PATH" in message and "--checkpoint PATH" in message


# --- download ---------------------------------------------------------------------


def test_download_verifies_renames_and_shows_progress(server, tmp_path, capsys):
    base, _ = server
    dest = tmp_path / "sub" / "file.pt"
    assert hub.download(f"{base}/ok/file.pt", dest, SHA) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    err = capsys.readouterr().err
    assert "file.pt" in err and "100%" in err and "293k" in err  # 300,000 B in KiB
    assert (tmp_path / "sub" / "file.pt.sha256").read_text().split()[0] == SHA


def test_download_without_progress_prints_nothing(server, tmp_path, capsys):
    base, _ = server
    hub.download(f"{base}/ok/file.pt", tmp_path / "file.pt", SHA, progress=False)
    assert capsys.readouterr().err == ""


def test_resume_from_part_file(server, tmp_path):
    base, log = server
    dest = tmp_path / "file.pt"
    _part(dest).write_bytes(PAYLOAD[:100_000])
    hub.download(f"{base}/ok/file.pt", dest, SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert log == [{"path": "/ok/file.pt", "range": "bytes=100000-", "status": 206}]


def test_restart_from_zero_when_range_is_ignored(server, tmp_path):
    base, log = server
    dest = tmp_path / "file.pt"
    _part(dest).write_bytes(b"stale bytes from another attempt")
    hub.download(f"{base}/norange/file.pt", dest, SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert log[0]["range"] == "bytes=32-" and log[0]["status"] == 200


def test_part_longer_than_the_file_restarts(server, tmp_path):
    base, log = server
    dest = tmp_path / "file.pt"
    _part(dest).write_bytes(PAYLOAD + b"extra")
    hub.download(f"{base}/ok/file.pt", dest, SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [e["status"] for e in log] == [416, 200]


def test_checksum_mismatch_discards_everything(server, tmp_path):
    base, _ = server
    url, dest = f"{base}/wrong/file.pt", tmp_path / "file.pt"
    with pytest.raises(WeightsUnavailableError) as info:
        hub.download(url, dest, SHA, progress=False)
    message = str(info.value)
    _assert_by_hand_advice(message, url, dest)
    assert SHA in message
    assert hashlib.sha256(PAYLOAD[::-1]).hexdigest() in message
    assert not dest.exists() and not _part(dest).exists()


def test_dropped_connection_keeps_part_and_a_retry_resumes(server, tmp_path):
    base, log = server
    dest = tmp_path / "file.pt"
    with pytest.raises(WeightsUnavailableError) as info:
        hub.download(f"{base}/truncated/file.pt", dest, SHA, progress=False)
    _assert_by_hand_advice(str(info.value), f"{base}/truncated/file.pt", dest)
    assert "150000 of 300000 bytes" in str(info.value)
    assert not dest.exists()  # the final path never holds a partial file
    assert _part(dest).stat().st_size == 150_000

    hub.download(f"{base}/ok/file.pt", dest, SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert log[-1]["range"] == "bytes=150000-"


@pytest.mark.parametrize("code", [404, 500])
def test_http_error_status(server, tmp_path, code):
    base, _ = server
    url, dest = f"{base}/status/{code}", tmp_path / "file.pt"
    with pytest.raises(WeightsUnavailableError) as info:
        hub.download(url, dest, SHA, progress=False)
    assert f"HTTP {code}" in str(info.value)
    _assert_by_hand_advice(str(info.value), url, dest)
    assert not dest.exists()


def test_connection_refused(refused_url, tmp_path):
    dest = tmp_path / "file.pt"
    with pytest.raises(WeightsUnavailableError) as info:
        hub.download(refused_url, dest, SHA, progress=False)
    _assert_by_hand_advice(str(info.value), refused_url, dest)
    assert not dest.exists() and not _part(dest).exists()


def test_cache_folder_that_cannot_be_written(refused_url, tmp_path):
    """A weights cache the user cannot write (here: beneath a file) is a clear error naming
    the way out, before any download."""
    (tmp_path / "home").write_text("a file, not a folder")
    with pytest.raises(WeightsUnavailableError) as info:
        hub.download(refused_url, tmp_path / "home" / "checkpoints" / "file.pt", SHA, progress=False)
    assert "ANYSEG_HOME" in str(info.value) and refused_url in str(info.value) and "--checkpoint" in str(info.value)


@pytest.mark.skipif(os.name != "posix", reason="turns are taken with POSIX file locks")
def test_a_second_download_of_the_same_file_waits_for_the_first(refused_url, tmp_path, capsys):
    """Two processes fetching the same weights (two workers started at once) take turns: the
    one that waited finds the file in place and never writes the .part (here it could not
    even connect)."""
    import fcntl

    dest = tmp_path / "file.pt"
    with open(tmp_path / "file.pt.lock", "a") as first:  # the first process, mid-download
        fcntl.flock(first, fcntl.LOCK_EX)
        result = {}
        second = threading.Thread(target=lambda: result.update(path=hub.download(refused_url, dest, SHA, False)))
        second.start()
        time.sleep(0.3)
        assert second.is_alive()
        dest.write_bytes(PAYLOAD)  # what the first one's download renames into place
        fcntl.flock(first, fcntl.LOCK_UN)
    second.join(10)
    assert result == {"path": dest} and not _part(dest).exists()
    assert "waiting for another process to finish downloading file.pt" in capsys.readouterr().err


def test_timeout(server, tmp_path):
    base, _ = server
    dest = tmp_path / "file.pt"
    with pytest.raises(WeightsUnavailableError, match="could not download"):
        hub.download(f"{base}/slow/file.pt", dest, SHA, progress=False, timeout=0.1)
    assert not dest.exists()


def test_unknown_checksum_is_accepted_with_a_warning(server, tmp_path):
    base, _ = server
    dest = tmp_path / "file.pt"
    with pytest.warns(UserWarning, match="without verifying"):
        hub.download(f"{base}/ok/file.pt", dest, None, progress=False)
    assert dest.read_bytes() == PAYLOAD


# --- the cache ----------------------------------------------------------------------


def test_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ANYSEG_HOME", str(tmp_path / "h"))
    assert hub.home() == tmp_path / "h"
    monkeypatch.delenv("ANYSEG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.home() == tmp_path / ".cache" / "anyseg"


def test_resolve_downloads_once_then_reuses_without_network(server, refused_url):
    base, log = server
    path = hub.resolve_checkpoint(_spec(f"{base}/ok/file.pt"), progress=False)
    assert path == hub.home() / "checkpoints" / "file.pt"
    assert path.read_bytes() == PAYLOAD
    assert hub.resolve_checkpoint(_spec(refused_url)) == path
    assert len(log) == 1


def test_cached_file_is_hashed_once(monkeypatch, refused_url):
    calls = []
    real = hub.sha256_of
    monkeypatch.setattr(hub, "sha256_of", lambda p: calls.append(p) or real(p))
    spec = _spec(refused_url)
    path = hub.checkpoint_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)  # placed by hand

    assert hub.resolve_checkpoint(spec) == path
    assert hub.resolve_checkpoint(spec) == path
    assert len(calls) == 1
    digest, size, _ = path.with_name("file.pt.sha256").read_text().split()
    assert (digest, int(size)) == (SHA, len(PAYLOAD))

    path.write_bytes(PAYLOAD[::-1])  # same size, new mtime: hashed again
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(WeightsUnavailableError, match="not the official test-model") as info:
        hub.resolve_checkpoint(spec)
    assert str(path) in str(info.value)
    assert len(calls) == 2
    assert path.exists()  # a user's file is never deleted


def test_resolve_without_download_names_url_and_path(refused_url):
    spec = _spec(refused_url)
    with pytest.raises(WeightsUnavailableError, match="not downloaded") as info:
        hub.resolve_checkpoint(spec, download=False)
    _assert_by_hand_advice(str(info.value), refused_url, hub.checkpoint_path(spec))


def test_resolve_unverifiable_cached_file_warns_once(refused_url):
    spec = _spec(refused_url, sha256=None)
    path = hub.checkpoint_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hub.resolve_checkpoint(spec) == path
        assert hub.resolve_checkpoint(spec) == path
    assert len(caught) == 1 and "without verifying" in str(caught[0].message)


def test_cached_models():
    assert set(hub.cached_models().values()) == {None}
    spec = get_spec("sam-vit-b")
    path = hub.checkpoint_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    cached = hub.cached_models()
    assert cached["sam-vit-b"] == path
    assert cached["sam-vit-h"] is None


def test_checkpoint_for(tmp_path, refused_url):
    local = tmp_path / "mine.pt"
    local.write_bytes(b"x")
    assert hub.checkpoint_for(None, local) == (None, local)
    assert hub.checkpoint_for("sam-vit-b", str(local)) == (get_spec("sam-vit-b"), local)
    with pytest.raises(CheckpointError, match="not found"):
        hub.checkpoint_for(None, tmp_path / "missing.pt")
    with pytest.raises(InvalidInputError):
        hub.checkpoint_for(None, None)
    with pytest.raises(UnknownModelError):
        hub.checkpoint_for("sam-vit-x", None)
    with pytest.raises(WeightsUnavailableError, match="not downloaded"):
        hub.checkpoint_for("sam-vit-b", None, download=False)


@pytest.mark.parametrize(("device", "message"), [
    ("gpu7", "unknown device 'gpu7'"),
    pytest.param("cuda", "sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
])
def test_load_model_on_a_device_it_cannot_reach(device, message):
    """An unusable device is a clear error, before any weights are looked for (sam-vit-b is
    not downloaded here: that would be a WeightsUnavailableError)."""
    from anyseg.loading import load_model

    with pytest.raises(InvalidInputError, match=message):
        load_model("sam-vit-b", device=device, download=False)


# --- load_state_dict ----------------------------------------------------------------


class Custom:
    """Something that needs code to unpickle."""


def _state_dict() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.randn(3, 4), "a.bias": torch.zeros(3, dtype=torch.float16)}


def test_load_sam2_container(tmp_path):
    sd = _state_dict()
    torch.save({"model": sd}, tmp_path / "w.pt")
    loaded = hub.load_state_dict(tmp_path / "w.pt")
    assert loaded.keys() == sd.keys()
    assert torch.equal(loaded["a.weight"], sd["a.weight"])
    assert loaded["a.bias"].dtype == torch.float16  # dtypes are left as stored


def test_load_bare_state_dict(tmp_path):
    sd = _state_dict()
    torch.save(sd, tmp_path / "w.pth")
    loaded = hub.load_state_dict(str(tmp_path / "w.pth"))
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def test_load_truncated_file(tmp_path):
    torch.save(_state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        hub.load_state_dict(tmp_path / "w.pt")


@pytest.mark.parametrize("content", [b"hello, I am text\n", b""])
def test_load_non_checkpoint(tmp_path, content):
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        hub.load_state_dict(tmp_path / "w.pt")


def test_load_refuses_pickled_code(tmp_path):
    torch.save({"a.weight": torch.zeros(2), "extra": Custom()}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="not a plain weights file") as info:
        hub.load_state_dict(tmp_path / "w.pt")
    assert "Custom" in str(info.value)


def test_load_without_tensors(tmp_path):
    torch.save({"model": {"epoch": 3}}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="no tensors"):
        hub.load_state_dict(tmp_path / "w.pt")
    torch.save([torch.zeros(1)], tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        hub.load_state_dict(tmp_path / "l.pt")


def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        hub.load_state_dict(tmp_path / "absent.pt")
