"""The studio's REST API end to end: every endpoint, with its bad inputs.

Most tests serve a tiny random-weight SAM 2 (fast on a CPU); a few serve the official-format
fixture checkpoint through ``load_model(checkpoint=...)``, as ``anyseg serve --checkpoint`` does.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import logging
import os
import signal
import socket
import sqlite3
import struct
import threading
import time
import urllib.request
import warnings
import weakref
import zipfile
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from anyseg import InvalidInputError, load_model
from anyseg.io.masks import decode_rle
from anyseg.server import ServerSettings, create_app
from anyseg.server.gallery import Gallery, Sample
from anyseg.server.sessions import ImageSession
from anyseg.server.worker import InferenceWorker
from server_helpers import free_port, png_bytes, sse_events, start_server, tiny_model, write_clip

with warnings.catch_warnings():  # starlette prefers httpx2; the test extra installs httpx
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def make_client(model, data_dir: Path, **settings) -> TestClient:
    app = create_app(ServerSettings(model="tiny", data_dir=data_dir, **settings), model=model)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture()
def client(model, tmp_path):
    with make_client(model, tmp_path / "studio", max_upload_bytes=300_000) as c:
        yield c


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=4).read_bytes()


def upload(client, name: str, data: bytes, expect: int = 201) -> dict:
    r = client.post("/api/sessions", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == expect, r.text
    return r.json()


def new_object(client, sid: str, name: str | None = None) -> dict:
    r = client.post(f"/api/sessions/{sid}/objects", json={} if name is None else {"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def prompt(client, sid: str, obj: int, expect: int = 200, **body) -> dict:
    body.setdefault("type", "point")
    r = client.post(f"/api/sessions/{sid}/objects/{obj}/prompts", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def mask_of(result: dict, obj_id: int) -> np.ndarray:
    record = next(m for m in result["masks"] if m["obj_id"] == obj_id)
    mask = decode_rle(record["rle"])
    assert mask.sum() == record["area"]
    return mask


def assert_error(r, status: int, code: str | None = None, match: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and "Traceback" not in r.text
    if code is not None:
        assert body["error"] == code
    if match is not None:
        assert match in body["detail"], body["detail"]
    return body


def bomb_png(width: int, height: int) -> bytes:
    """A few hundred bytes claiming a huge 1-bit image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- status, page, spec
def test_status_page_and_spec(client):
    status = client.get("/api/status").json()
    assert status["model"] == {"state": "ready", "name": "tiny", "precision": "fp32", "family": "sam2",
                               "detail": None, "download_url": None, "save_as": None}
    assert status["video"] and not status["concepts"]["available"] and "SAM 3" in status["concepts"]["reason"]
    assert status["limits"]["max_upload_bytes"] == 300_000 and status["sessions"] == 0
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "cdn" not in page.text.lower()
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/sessions", "/api/sessions/{session_id}/propagate", "/api/projects/{project_id}/export/{fmt}",
            "/api/gallery/{sample_id}/sessions"} <= set(paths)


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/api/nothing"), 404, "not_found")
    r = client.put("/api/status")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"
    r = client.put("/api/projects/abc")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, PATCH"


# --------------------------------------------------------------------------- images
def test_image_clicks_boxes_candidates_undo_clear(client):
    info = upload(client, "photo.png", png_bytes(64, 48))
    sid, pid = info["session_id"], info["project"]["id"]
    assert info["project"]["media"] == {"kind": "image", "filename": "photo.png", "width": 64, "height": 48,
                                        "num_frames": 1, "fps": None}
    assert len(sid) >= 32 and len(pid) >= 20 and sid != pid

    obj = new_object(client, sid, "cat")
    assert obj == {"obj_id": 1, "name": "cat", "color": "#800000", "prompts": [], "choice": None, "candidates": []}
    r = prompt(client, sid, 1, x=20, y=20)
    assert r["frame"] == 0 and len(r["object"]["candidates"]) == 3
    best = max(r["object"]["candidates"], key=lambda c: c["score"])["index"]
    assert r["object"]["choice"] == best
    first = mask_of(r, 1)

    other = next(i for i in range(3) if i != best)
    r = client.patch(f"/api/sessions/{sid}/objects/1", json={"choice": other}).json()
    assert r["object"]["choice"] == other
    assert r["masks"][0]["score"] == pytest.approx(r["object"]["candidates"][other]["score"])

    r = prompt(client, sid, 1, x=40, y=30, positive=False)
    assert r["object"]["candidates"] == [] and [p["positive"] for p in r["object"]["prompts"]] == [True, False]
    r = prompt(client, sid, 1, type="box", box=[2, 2, 50, 40])
    assert r["object"]["prompts"][-1] == {"type": "box", "frame": 0, "box": [2.0, 2.0, 50.0, 40.0]}

    r = client.post(f"/api/sessions/{sid}/objects/1/undo", json={}).json()
    r = client.post(f"/api/sessions/{sid}/objects/1/undo", json={"frame": 0}).json()
    assert len(r["object"]["prompts"]) == 1 and len(r["object"]["candidates"]) == 3
    assert (mask_of(r, 1) == first).all()  # back to the single click, its best candidate

    second = new_object(client, sid)
    assert second["obj_id"] == 2 and second["color"] == "#008000" and second["name"] == "object 2"
    r = prompt(client, sid, 2, type="box", box=[0, 0, 64, 48])
    assert [m["obj_id"] for m in r["masks"]] == [1, 2]

    r = client.post(f"/api/sessions/{sid}/objects/1/clear", json={}).json()
    assert r["object"]["prompts"] == [] and [m["obj_id"] for m in r["masks"]] == [2]
    r = client.post(f"/api/sessions/{sid}/objects/1/undo", json={}).json()  # nothing left to undo
    assert r["object"]["prompts"] == []
    r = client.patch(f"/api/sessions/{sid}/objects/2", json={"name": "table"}).json()
    assert r["object"]["name"] == "table"
    assert client.delete(f"/api/sessions/{sid}/objects/2").status_code == 204
    session = client.get(f"/api/sessions/{sid}").json()
    assert [o["obj_id"] for o in session["objects"]] == [1] and session["tracks"] == []
    assert client.get(f"/api/projects/{pid}/masks/0").json() == {"frame": 0, "masks": []}


def test_image_bad_prompts(client):
    sid = upload(client, "photo.png", png_bytes(64, 48))["session_id"]
    new_object(client, sid)
    url = f"/api/sessions/{sid}/objects/1"
    assert_error(client.post(f"{url}/prompts", json={"type": "point", "x": 65, "y": 3}), 422, "invalid_input", "outside")
    assert_error(client.post(f"{url}/prompts", json={"type": "point", "x": -1, "y": 3}), 422, "invalid_input")
    assert_error(client.post(f"{url}/prompts", json={"type": "box", "box": [0, 0, 10, 90]}), 422, "invalid_input")
    assert_error(client.post(f"{url}/prompts", json={"type": "box", "box": [30, 0, 10, 9]}), 422, "invalid_input")
    assert_error(client.post(f"{url}/prompts", json={"type": "point", "frame": 1, "x": 1, "y": 1}), 422, "invalid_input",
                 "past the end")
    assert_error(client.post(f"{url}/prompts", json={"type": "point", "x": "nan", "y": 1}), 422, "invalid_request",
                 "finite")
    assert_error(client.post(f"{url}/prompts", json={"type": "box", "box": [1, 2]}), 422, "invalid_request")
    assert_error(client.post(f"{url}/prompts", json={"type": "circle", "x": 1, "y": 1}), 422, "invalid_request")
    assert_error(client.post(f"{url}/prompts", json={"type": "point", "x": 1, "y": 1, "z": 2}), 422, "invalid_request")
    assert_error(client.post(f"{url}/prompts", content=b"{", headers={"content-type": "application/json"}), 422,
                 "invalid_request", "not valid JSON")
    assert_error(client.post(f"/api/sessions/{sid}/objects/7/prompts", json={"type": "point", "x": 1, "y": 1}), 404,
                 "unknown_object")
    for bad in (0, 256, "x"):
        assert_error(client.post(f"/api/sessions/{sid}/objects/{bad}/prompts", json={"type": "point", "x": 1, "y": 1}),
                     422, "invalid_request")
    assert_error(client.patch(url, json={"choice": 1}), 422, "invalid_input", "click on it first")
    prompt(client, sid, 1, type="box", box=[1, 1, 30, 30])
    assert_error(client.patch(url, json={"choice": 2}), 422, "invalid_input", "candidate")
    assert_error(client.patch(url, json={"choice": 3}), 422, "invalid_request")
    assert_error(client.patch(url, json={"name": ""}), 422, "invalid_request")
    assert_error(client.patch(url, json={"name": "x" * 81}), 422, "invalid_request")
    assert_error(client.post(f"/api/sessions/{sid}/propagate", json={}), 422, "invalid_input", "only videos")
    # nothing bad was saved
    session = client.get(f"/api/sessions/{sid}").json()
    assert [p["type"] for p in session["objects"][0]["prompts"]] == ["box"]


def test_preview_is_the_click_to_come_and_stores_nothing(client, monkeypatch):
    sid = upload(client, "photo.png", png_bytes(64, 48))["session_id"]
    predictor = client.app.state.studio.sessions.get(sid).predictor
    calls = []
    monkeypatch.setattr(predictor, "predict", lambda predict=predictor.predict, **kw: calls.append(kw) or predict(**kw))
    url = f"/api/sessions/{sid}/preview"
    alone = client.post(url, json={"x": 20, "y": 20}).json()  # no object yet: the click alone
    assert alone["obj_id"] is None and decode_rle(alone["rle"]).sum() == alone["area"]
    new_object(client, sid)
    first = prompt(client, sid, 1, x=20, y=20)
    assert alone["rle"] == first["masks"][0]["rle"] and alone["score"] == pytest.approx(first["masks"][0]["score"])

    assert len(calls) == 1 and first["masks"][0]["obj_id"] == 1  # the click took the preview's masks
    ahead = client.post(url, json={"obj_id": 1, "x": 40, "y": 30, "positive": False}).json()
    session = client.get(f"/api/sessions/{sid}").json()
    assert len(session["objects"][0]["prompts"]) == 1 and len(session["objects"][0]["candidates"]) == 3
    assert client.get(f"/api/projects/{session['project']['id']}/masks/0").json()["masks"] == first["masks"]
    second = prompt(client, sid, 1, x=40, y=30, positive=False)
    assert len(calls) == 2
    client.post(f"/api/sessions/{sid}/objects/1/undo", json={})  # taken masks are not kept: predicted again
    assert len(calls) == 3
    assert ahead == {"obj_id": 1, "rle": second["masks"][0]["rle"], "area": second["masks"][0]["area"],
                     "score": pytest.approx(second["masks"][0]["score"])}

    assert_error(client.post(url, json={"x": 65, "y": 3}), 422, "invalid_input", "outside")
    assert_error(client.post(url, json={"frame": 1, "x": 1, "y": 1}), 422, "invalid_input", "past the end")
    assert_error(client.post(url, json={"obj_id": 7, "x": 1, "y": 1}), 404, "unknown_object")
    assert_error(client.post(url, json={"obj_id": 0, "x": 1, "y": 1}), 422, "invalid_request")
    assert_error(client.post(url, json={"x": 1, "y": "inf"}), 422, "invalid_request")
    assert_error(client.post(url, json={"type": "box", "x": 1, "y": 1}), 422, "invalid_request")
    assert_error(client.post("/api/sessions/nope/preview", json={"x": 1, "y": 1}), 404, "unknown_session")


def test_unknown_ids(client):
    assert_error(client.get("/api/sessions/nope"), 404, "unknown_session", "open its project again")
    for method, path in [("post", "/objects"), ("post", "/objects/1/prompts"), ("post", "/objects/1/undo"),
                         ("post", "/objects/1/clear"), ("patch", "/objects/1"), ("delete", "/objects/1"),
                         ("post", "/propagate"), ("post", "/propagate/cancel"), ("delete", "")]:
        body = {"type": "point", "x": 1, "y": 1} if path.endswith("prompts") else {}
        kwargs = {} if method == "delete" else {"json": body}
        assert_error(getattr(client, method)(f"/api/sessions/nope{path}", **kwargs), 404, "unknown_session")
    for method, path in [("get", ""), ("patch", ""), ("delete", ""), ("get", "/frames/0"), ("get", "/masks/0"),
                         ("get", "/export/coco.json"), ("post", "/sessions")]:
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        assert_error(getattr(client, method)(f"/api/projects/nope{path}", **kwargs), 404, "unknown_project")
    assert_error(client.get("/api/sessions/" + "x" * 65), 422, "invalid_request")
    assert_error(client.post("/api/gallery/nope/sessions"), 404, "unknown_sample")
    assert_error(client.get("/api/gallery/nope/thumbnail"), 404, "unknown_sample")


# --------------------------------------------------------------------------- uploads
def test_bad_uploads(client, clip):
    assert_error(client.post("/api/sessions", files={"file": ("big.png", b"x" * 300_001, "image/png")}), 413,
                 "too_large", "limit")
    too_big = (b"x" * 100_000 for _ in range(4))  # chunked: no Content-Length
    r = client.post("/api/sessions", content=too_big, headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "too_large")
    assert_error(client.post("/api/sessions", files={"file": ("notes.txt", b"hello, world\n" * 50, "text/plain")}),
                 415, "unsupported_media", "neither an image nor a video")
    assert_error(client.post("/api/sessions", files={"file": ("bomb.png", bomb_png(30_000, 30_000), "image/png")}),
                 422, "bad_media", "too large")
    assert_error(client.post("/api/sessions", files={"file": ("big.png", bomb_png(10_000, 6_000), "image/png")}),
                 422, "bad_media", "at most 50,000,000 pixels")
    assert_error(client.post("/api/sessions", files={"file": ("cut.png", png_bytes(64, 48)[:200], "image/png")}),
                 422, "bad_media", "truncated")
    assert_error(client.post("/api/sessions", files={"file": ("cut.mp4", clip[: len(clip) * 2 // 3], "video/mp4")}),
                 422, "bad_media", "truncated")
    assert_error(client.post("/api/sessions", files={"file": ("head.mp4", clip[:300], "video/mp4")}),
                 422, "bad_media", "truncated or damaged")
    assert_error(client.post("/api/sessions", files={"file": ("empty.jpg", b"", "image/jpeg")}), 422, "bad_media",
                 "empty")
    assert_error(client.post("/api/sessions", data={"x": "1"}), 422, "invalid_request", "file")
    assert_error(client.post("/api/sessions", content=b"garbage",
                             headers={"content-type": "multipart/form-data; boundary=b"}), 400, "bad_request")
    assert_error(client.post("/api/sessions/x/objects", content=b" " * (1 << 20 + 1),
                             headers={"content-type": "application/json"}), 413, "too_large")
    assert client.get("/api/projects").json() == []  # nothing half-made was kept
    media = client.app.state.studio.data_dir / "media"
    assert list(media.iterdir()) == []


@pytest.mark.parametrize("error, status", [
    (OSError(errno.ENOSPC, "No space left on device"), 507),
    (sqlite3.OperationalError("database or disk is full"), 507),
    (OSError(errno.EIO, "Input/output error"), 500),
    (sqlite3.OperationalError("disk I/O error"), 500),
])
def test_a_full_disk_is_507_and_keeps_nothing(client, monkeypatch, error, status):
    from anyseg.server import media

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(media.MediaLibrary, "_adopt", failing)
    r = client.post("/api/sessions", files={"file": ("a.png", png_bytes(64, 48), "image/png")})
    assert_error(r, status, "insufficient_storage" if status == 507 else "internal")
    assert not list((client.app.state.studio.data_dir / "media").iterdir())


def test_exif_orientation_is_applied(client):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: the 64×48 pixels display as 48×64
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(buf, format="JPEG", exif=exif)
    info = upload(client, "phone.jpg", buf.getvalue())
    media = info["project"]["media"]
    assert (media["width"], media["height"]) == (48, 64)
    new_object(client, info["session_id"])
    assert mask_of(prompt(client, info["session_id"], 1, x=40, y=60), 1).shape == (64, 48)
    frame = client.get(f"/api/projects/{info['project']['id']}/frames/0")
    assert Image.open(io.BytesIO(frame.content)).size == (48, 64)


def test_same_file_twice_is_stored_once(client):
    a = upload(client, "a.png", png_bytes(64, 48))
    b = upload(client, "b.png", png_bytes(64, 48))
    assert a["project"]["id"] != b["project"]["id"]
    media = client.app.state.studio.data_dir / "media"
    assert len(list(media.iterdir())) == 1
    assert client.delete(f"/api/projects/{a['project']['id']}").status_code == 204
    assert len(list(media.iterdir())) == 1  # b still uses it
    assert client.delete(f"/api/projects/{b['project']['id']}").status_code == 204
    assert list(media.iterdir()) == []
    assert list((media.parent / "embeddings").iterdir()) == []  # the cached embedding went too
    assert_error(client.get(f"/api/sessions/{b['session_id']}"), 404, "unknown_session")


# --------------------------------------------------------------------------- projects
def test_projects_frames_and_sessions(client, clip):
    image = upload(client, "photo.png", png_bytes(64, 48))
    video = upload(client, "clip.mp4", clip)
    projects = client.get("/api/projects").json()
    assert [p["id"] for p in projects] == [video["project"]["id"], image["project"]["id"]]  # newest first
    pid = video["project"]["id"]
    assert video["project"]["media"]["num_frames"] == 4 and video["project"]["media"]["fps"] == pytest.approx(10)

    r = client.patch(f"/api/projects/{pid}", json={"name": "My clip"})
    assert r.json()["name"] == "My clip" and client.get(f"/api/projects/{pid}").json()["name"] == "My clip"
    assert_error(client.patch(f"/api/projects/{pid}", json={"name": ""}), 422, "invalid_request")

    frame = client.get(f"/api/projects/{pid}/frames/3")
    assert frame.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frame.content)).size == (64, 48)
    thumb = client.get(f"/api/projects/{pid}/frames/0", params={"max_side": 32})
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 24)
    assert_error(client.get(f"/api/projects/{pid}/frames/4"), 404, "unknown_frame")
    assert_error(client.get(f"/api/projects/{pid}/masks/4"), 404, "unknown_frame")
    assert_error(client.get(f"/api/projects/{pid}/frames/0", params={"max_side": 8}), 422, "invalid_request")
    assert_error(client.get(f"/api/projects/{pid}/frames/-1"), 422, "invalid_request")

    again = client.post(f"/api/projects/{pid}/sessions").json()
    assert again["session_id"] == video["session_id"]  # one live session per project
    assert client.delete(f"/api/sessions/{video['session_id']}").status_code == 204
    assert_error(client.get(f"/api/sessions/{video['session_id']}"), 404, "unknown_session")
    reopened = client.post(f"/api/projects/{pid}/sessions").json()
    assert reopened["session_id"] != video["session_id"] and reopened["project"]["name"] == "My clip"


# --------------------------------------------------------------------------- videos
def test_video_prompt_track_correct_retrack(client, clip):
    info = upload(client, "clip.mp4", clip)
    sid, pid = info["session_id"], info["project"]["id"]
    new_object(client, sid, "square")
    r = prompt(client, sid, 1, frame=1, x=20, y=20)
    assert r["frame"] == 1 and r["object"]["candidates"] == []
    assert_error(client.post(f"/api/sessions/{sid}/objects/1/prompts",
                             json={"type": "point", "frame": 4, "x": 1, "y": 1}), 422, "invalid_input", "past the end")
    assert_error(client.post(f"/api/sessions/{sid}/objects/1/prompts",
                             json={"type": "point", "frame": 0, "x": 80, "y": 1}), 422, "invalid_input", "outside")
    assert_error(client.patch(f"/api/sessions/{sid}/objects/1", json={"choice": 0}), 422, "invalid_input")
    assert_error(client.post(f"/api/sessions/{sid}/preview", json={"obj_id": 1, "frame": 1, "x": 20, "y": 20}), 422,
                 "invalid_input", "previewed on images")
    new_object(client, sid)  # an object without prompts is not tracked
    prompt(client, sid, 1, frame=1, type="box", box=[5, 5, 40, 35])

    r = client.post(f"/api/sessions/{sid}/propagate", json={"direction": "both"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[0] == ("start", {"direction": "both", "total": 5})
    frames = [(e["pass"], e["frame"]) for name, e in events if name == "frame"]
    assert frames == [("forward", 1), ("forward", 2), ("forward", 3), ("backward", 1), ("backward", 0)]
    assert events[-1][0] == "done" and events[-1][1]["done"] == 5 and not events[-1][1]["cancelled"]
    streamed = {e["frame"]: e["masks"] for name, e in events if name == "frame"}
    for frame in range(4):
        saved = client.get(f"/api/projects/{pid}/masks/{frame}").json()["masks"]
        assert saved == streamed[frame] and [m["obj_id"] for m in saved] == [1]

    # a correction on a tracked frame, then tracking again from it
    r = prompt(client, sid, 1, frame=3, x=10, y=40, positive=False)
    assert [p["frame"] for p in r["object"]["prompts"]] == [1, 1, 3]
    events = sse_events(client.post(f"/api/sessions/{sid}/propagate",
                                    json={"direction": "forward", "start_frame": 3}).text)
    assert [e["frame"] for name, e in events if name == "frame"] == [3]
    events = sse_events(client.post(f"/api/sessions/{sid}/propagate", json={"direction": "backward"}).text)
    assert [e["frame"] for name, e in events if name == "frame"] == [3, 2, 1, 0]
    assert_error(client.post(f"/api/sessions/{sid}/propagate", json={"direction": "sideways"}), 422, "invalid_request")
    assert_error(client.post(f"/api/sessions/{sid}/propagate", json={"start_frame": 9}), 422, "invalid_input")

    session = client.get(f"/api/sessions/{sid}").json()
    assert session["propagating"] is False
    tracked = {t["obj_id"]: t["ranges"] for t in session["tracks"]}
    assert set(tracked) <= {1}

    # undo the correction: back to frame 1's prompts; clearing stops tracking the object
    r = client.post(f"/api/sessions/{sid}/objects/1/undo", json={"frame": 3}).json()
    assert [p["frame"] for p in r["object"]["prompts"]] == [1, 1]
    r = client.post(f"/api/sessions/{sid}/objects/1/clear", json={"frame": 2}).json()
    assert r["object"]["prompts"] == [] and r["masks"] == []
    assert client.get(f"/api/sessions/{sid}").json()["tracks"] == []
    assert_error(client.post(f"/api/sessions/{sid}/propagate", json={}), 422, "invalid_input", "no object has a prompt")


def test_video_undo_last_prompt_removes_the_track(client, clip):
    sid = upload(client, "clip.mp4", clip)["session_id"]
    new_object(client, sid)
    prompt(client, sid, 1, frame=0, x=20, y=20)
    client.post(f"/api/sessions/{sid}/propagate", json={"direction": "forward"})
    prompt(client, sid, 1, frame=2, x=30, y=20)
    r = client.post(f"/api/sessions/{sid}/objects/1/undo", json={"frame": 2}).json()
    assert r["frame"] == 2 and [p["frame"] for p in r["object"]["prompts"]] == [0]
    assert [m["obj_id"] for m in r["masks"]] == [1]  # frame 2 keeps its tracked mask
    r = client.post(f"/api/sessions/{sid}/objects/1/undo", json={"frame": 0}).json()
    assert r["object"]["prompts"] == [] and r["masks"] == []
    assert client.get(f"/api/sessions/{sid}").json()["tracks"] == []


def test_cancel_and_busy_while_tracking(model, tmp_path, clip):
    with make_client(model, tmp_path) as client:
        sid = upload(client, "clip.mp4", clip)["session_id"]
        new_object(client, sid)
        prompt(client, sid, 1, frame=0, x=20, y=20)
        other = upload(client, "photo.png", png_bytes(64, 48))["session_id"]
        new_object(client, other)
        events = []
        with client.stream("POST", f"/api/sessions/{sid}/propagate", json={"direction": "forward"}) as stream:
            lines = stream.iter_lines()
            seen = []
            for line in lines:
                seen.append(line)
                if seen[-2:-1] == ["event: frame"]:  # the first frame's masks have arrived
                    break
            assert client.get(f"/api/sessions/{sid}").json()["propagating"] is True
            assert_error(client.post(f"/api/sessions/{sid}/objects/1/prompts", json={"type": "point", "x": 1, "y": 1}),
                         409, "busy")
            assert_error(client.post(f"/api/sessions/{sid}/propagate", json={}), 409, "busy")
            assert_error(client.delete(f"/api/sessions/{sid}"), 409, "busy")
            prompt(client, other, 1, x=10, y=10)  # another session is served meanwhile
            assert client.post(f"/api/sessions/{sid}/propagate/cancel").status_code == 204
            events = sse_events("\n".join(seen + list(lines)))
        done = events[-1]
        assert done[0] == "done" and done[1]["cancelled"] and done[1]["done"] < 4
        assert client.get(f"/api/sessions/{sid}").json()["propagating"] is False
        prompt(client, sid, 1, frame=0, x=25, y=20)  # editable again


# --------------------------------------------------------------------------- exports
def _zip(content: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(content))


def test_image_exports(client):
    info = upload(client, "photo.png", png_bytes(64, 48))
    sid, pid = info["session_id"], info["project"]["id"]
    new_object(client, sid, "cat")
    mask = mask_of(prompt(client, sid, 1, type="box", box=[4, 4, 40, 30]), 1)
    url = f"/api/projects/{pid}/export"

    r = client.get(f"{url}/mask.png", params={"obj_id": 1})
    assert r.headers["content-type"] == "image/png" and 'filename="photo_obj1_mask.png"' in r.headers["content-disposition"]
    png = Image.open(io.BytesIO(r.content))
    assert png.mode == "L" and (np.asarray(png) > 0).tolist() == mask.tolist()
    cut = Image.open(io.BytesIO(client.get(f"{url}/cutout.png").content))
    assert cut.mode == "RGBA" and np.asarray(cut)[..., 3].max() == 255
    assert Image.open(io.BytesIO(client.get(f"{url}/overlay.png").content)).size == (64, 48)

    coco = client.get(f"{url}/coco.json").json()
    assert coco["categories"] == [{"id": 1, "name": "cat"}] and len(coco["images"]) == 1
    assert (decode_rle(coco["annotations"][0]["segmentation"]) == mask).all()
    lines = client.get(f"{url}/yolo.txt").text.splitlines()
    assert lines and all(line.startswith("0 ") for line in lines)
    with _zip(client.get(f"{url}/yolo.zip").content) as z:
        assert z.read("classes.txt") == b"cat\n" and "labels/00000.txt" in z.namelist()
    with _zip(client.get(f"{url}/davis.zip").content) as z:
        assert z.namelist() == ["00000.png"]
        label = Image.open(io.BytesIO(z.read("00000.png")))
        assert label.mode == "P" and (np.asarray(label) == 1).tolist() == mask.tolist()

    assert_error(client.get(f"{url}/overlay.mp4"), 422, "invalid_input", "needs a video")
    assert_error(client.get(f"{url}/overlay.gif"), 422, "invalid_input", "needs a video")
    assert_error(client.get(f"{url}/mask.png", params={"obj_id": 2}), 422, "invalid_input", "no object 2")
    new_object(client, sid)
    assert_error(client.get(f"{url}/cutout.png", params={"obj_id": 2}), 422, "invalid_input", "no mask")
    assert_error(client.get(f"{url}/mask.png", params={"frame": 1}), 422, "invalid_input", "past the end")
    assert_error(client.get(f"{url}/mask.png", params={"obj_id": 0}), 422, "invalid_request")
    assert_error(client.get(f"{url}/pdf"), 422, "invalid_request")
    assert_error(client.get(f"{url}/overlay.gif", params={"max_side": 10}), 422, "invalid_request")
    exports = list(client.app.state.studio.data_dir.glob("export-*"))
    assert exports == []  # temporary files are cleaned up, also after errors


def test_video_exports(client, clip, monkeypatch):
    info = upload(client, "clip.mp4", clip)
    sid, pid = info["session_id"], info["project"]["id"]
    new_object(client, sid)
    new_object(client, sid)
    prompt(client, sid, 1, frame=0, type="box", box=[4, 4, 40, 30])
    prompt(client, sid, 2, frame=0, x=50, y=40)
    client.post(f"/api/sessions/{sid}/propagate", json={"direction": "forward", "start_frame": 0})
    url = f"/api/projects/{pid}/export"

    with _zip(client.get(f"{url}/davis.zip").content) as z:
        assert z.namelist() == [f"{i:05d}.png" for i in range(4)]
        values = set(np.unique(np.asarray(Image.open(io.BytesIO(z.read("00002.png"))))))
        assert values <= {0, 1, 2}
    coco = client.get(f"{url}/coco.json").json()
    assert {a["image_id"] for a in coco["annotations"]} <= {1, 2, 3, 4}
    with _zip(client.get(f"{url}/yolo.zip").content) as z:
        assert z.read("classes.txt") == b"object 1\nobject 2\n"
    r = client.get(f"{url}/mask.png", params={"obj_id": 1, "frame": 2})
    assert r.status_code == 200 and "_frame00002_" in r.headers["content-disposition"]
    mp4 = client.get(f"{url}/overlay.mp4")
    assert mp4.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(mp4.content)) as video:
        assert sum(1 for _ in video.decode(video=0)) == 4
    gif = Image.open(io.BytesIO(client.get(f"{url}/overlay.gif").content))
    assert gif.n_frames == 4 and gif.size == (64, 48) and gif.info["duration"] == 100  # the clip's 10 fps
    monkeypatch.setattr("anyseg.server.exports.GIF_MAX_FRAMES", 3)  # a longer video: every 2nd frame, at half the rate
    gif = Image.open(io.BytesIO(client.get(f"{url}/overlay.gif").content))
    assert gif.n_frames == 2 and gif.info["duration"] == 200
    assert_error(client.get(f"{url}/yolo.txt", params={"frame": 4}), 422, "invalid_input")


# --------------------------------------------------------------------------- persistence
def test_restart_keeps_annotations_and_reopens(model, tmp_path, clip, monkeypatch):
    data = tmp_path / "studio"
    with make_client(model, data) as client:
        image = upload(client, "photo.png", png_bytes(64, 48))
        new_object(client, image["session_id"], "cat")
        saved = mask_of(prompt(client, image["session_id"], 1, x=20, y=20), 1)
        video = upload(client, "clip.mp4", clip)
        new_object(client, video["session_id"])
        prompt(client, video["session_id"], 1, frame=1, x=20, y=20)
    assert list((data / "embeddings").glob("*.pt"))

    def no_encoding(*args):
        raise AssertionError("the cached embedding should have been used")

    monkeypatch.setattr("anyseg.predictors.image.ImagePredictor.set_image", no_encoding)
    with make_client(model, data) as client:
        assert {p["name"] for p in client.get("/api/projects").json()} == {"photo.png", "clip.mp4"}
        info = client.post(f"/api/projects/{image['project']['id']}/sessions").json()
        assert info["objects"][0]["name"] == "cat" and len(info["objects"][0]["prompts"]) == 1
        masks = client.get(f"/api/projects/{image['project']['id']}/masks/0").json()
        assert (mask_of(masks, 1) == saved).all()
        r = prompt(client, info["session_id"], 1, x=30, y=30)  # the restored embedding answers clicks
        assert len(r["object"]["prompts"]) == 2

        info = client.post(f"/api/projects/{video['project']['id']}/sessions").json()
        events = sse_events(client.post(f"/api/sessions/{info['session_id']}/propagate",
                                        json={"direction": "forward"}).text)
        assert [e["frame"] for name, e in events if name == "frame"] == [1, 2, 3]  # prompts replayed


def test_precision_is_served_and_the_embedding_cache_follows_it(model, tmp_path, clip):
    data = tmp_path / "studio"
    with make_client(model, data, precision="bf16") as client:
        assert client.get("/api/status").json()["model"]["precision"] == "bf16"
        image = upload(client, "photo.png", png_bytes(64, 48))
        new_object(client, image["session_id"])
        fast = prompt(client, image["session_id"], 1, x=20, y=20)
        sessions = client.app.state.studio.sessions
        assert sessions.get(image["session_id"]).predictor.precision == "bf16"
        video = upload(client, "clip.mp4", clip)
        assert sessions.get(video["session_id"]).tracker.predictor.precision == "bf16"
    (embedding,) = (data / "embeddings").glob("*.pt")  # of the image; the video has none
    assert torch.load(embedding, weights_only=True)["precision"] == "bf16"
    with make_client(model, data) as client:  # fp32 again: the bf16 embedding is made again, not converted
        info = client.post(f"/api/projects/{image['project']['id']}/sessions").json()
        new_object(client, info["session_id"])
        exact = prompt(client, info["session_id"], 2, x=20, y=20)
        assert client.app.state.studio.sessions.get(info["session_id"]).predictor.precision == "fp32"
    assert torch.load(embedding, weights_only=True)["precision"] == "fp32"
    scores = [[c["score"] for c in r["object"]["candidates"]] for r in (fast, exact)]
    assert scores[0] != scores[1] and np.allclose(scores[0], scores[1], atol=0.05)
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        create_app(ServerSettings(model="tiny", data_dir=tmp_path / "other", precision="int4"), model=model)


def test_choice_after_restart_predicts_again(model, tmp_path):
    data = tmp_path / "studio"
    with make_client(model, data) as client:
        info = upload(client, "photo.png", png_bytes(64, 48))
        new_object(client, info["session_id"])
        r = prompt(client, info["session_id"], 1, x=20, y=20)
        scores = [c["score"] for c in r["object"]["candidates"]]
    with make_client(model, data) as client:
        sid = client.post(f"/api/projects/{info['project']['id']}/sessions").json()["session_id"]
        r = client.patch(f"/api/sessions/{sid}/objects/1", json={"choice": 0}).json()
        assert r["object"]["choice"] == 0 and [c["score"] for c in r["object"]["candidates"]] == pytest.approx(scores)


def test_kill_9_loses_no_saved_annotation(tmp_path):
    port = free_port()
    data = tmp_path / "studio"
    args = ["tests/server_helpers.py", "--port", str(port), "--data-dir", str(data)]
    base = f"http://127.0.0.1:{port}"

    def call(method: str, path: str, body: dict | None = None, form: bytes | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        data_ = json.dumps(body or {}).encode()
        if form is not None:
            headers = {"Content-Type": "multipart/form-data; boundary=BOUND"}
            data_ = (b"--BOUND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n\r\n" + form
                     + b"\r\n--BOUND--\r\n")
        request = urllib.request.Request(base + path, data=data_ if method != "GET" else None, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    server = start_server(args, port)
    try:
        info = call("POST", "/api/sessions", form=png_bytes(64, 48))
        call("POST", f"/api/sessions/{info['session_id']}/objects", {"name": "keep me"})
        saved = call("POST", f"/api/sessions/{info['session_id']}/objects/1/prompts", {"type": "point", "x": 9, "y": 9})
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    server = start_server(args, port)
    try:
        pid = info["project"]["id"]
        reopened = call("POST", f"/api/projects/{pid}/sessions")
        assert reopened["objects"][0]["name"] == "keep me" and len(reopened["objects"][0]["prompts"]) == 1
        assert call("GET", f"/api/projects/{pid}/masks/0")["masks"] == saved["masks"]
    finally:
        server.kill()
        server.wait()


# --------------------------------------------------------------------------- sessions, queue
def test_idle_sessions_are_evicted_and_freed(model, tmp_path):
    with make_client(model, tmp_path, session_ttl_s=0.3) as client:
        info = upload(client, "photo.png", png_bytes(64, 48))
        session = client.app.state.studio.sessions.get(info["session_id"])
        predictor = weakref.ref(session.predictor)
        del session
        deadline = time.monotonic() + 10
        while client.get("/api/status").json()["sessions"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_error(client.get(f"/api/sessions/{info['session_id']}"), 404, "unknown_session")
        client.app.state.studio.worker.submit(gc.collect).result()
        assert predictor() is None  # the embedding's memory is released
        assert client.post(f"/api/projects/{info['project']['id']}/sessions").status_code == 200


def test_least_recently_used_session_makes_room(model, tmp_path):
    with make_client(model, tmp_path, max_sessions=2) as client:
        ids = [upload(client, f"{i}.png", png_bytes(64, 48, seed=i))["session_id"] for i in range(3)]
        assert client.get("/api/status").json()["sessions"] == 2
        assert_error(client.get(f"/api/sessions/{ids[0]}"), 404, "unknown_session")
        assert client.get(f"/api/sessions/{ids[2]}").status_code == 200


def test_worker_runs_one_job_at_a_time():
    worker = InferenceWorker()
    running, overlaps, threads = [], [], set()

    def job(i):
        threads.add(threading.get_ident())
        overlaps.append(len(running))
        running.append(i)
        time.sleep(0.01)
        running.remove(i)
        return i

    futures = [worker.submit(job, i) for i in range(20)]
    assert [f.result() for f in futures] == list(range(20))
    assert overlaps == [0] * 20 and len(threads) == 1 and threading.get_ident() not in threads
    failing = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result()
    worker.stop()


def test_unexpected_errors_are_a_bare_500(client, monkeypatch, caplog):
    sid = upload(client, "photo.png", png_bytes(64, 48))["session_id"]
    new_object(client, sid)

    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ImageSession, "add_prompt", broken)
    with caplog.at_level(logging.ERROR, logger="anyseg.server"):
        r = client.post(f"/api/sessions/{sid}/objects/1/prompts", json={"type": "point", "x": 1, "y": 1})
    body = assert_error(r, 500, "internal")
    assert "secret" not in body["detail"]
    assert "secret internals" in caplog.text  # logged on the server


# --------------------------------------------------------------------------- gallery
def test_gallery_from_local_samples(model, tmp_path, samples_dir):
    with make_client(model, tmp_path, samples_dir=samples_dir) as client:
        gallery = client.get("/api/gallery").json()
        ids = [s["id"] for s in gallery["samples"]]
        assert {"truck", "groceries", "cars", "dog", "bedroom", "dog-video", "coffee"} == set(ids)
        assert not gallery["offline"] and not any(s["cached"] for s in gallery["samples"])
        assert all(s["url"].startswith("https://raw.githubusercontent.com/facebookresearch/") for s in gallery["samples"])
        thumb = client.get("/api/gallery/coffee/thumbnail")
        assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) == 240
        info = client.post("/api/gallery/dog/sessions").json()
        assert info["project"]["name"] == "Dog" and info["project"]["media"]["width"] == 800
        assert next(s for s in client.get("/api/gallery").json()["samples"] if s["id"] == "dog")["cached"]
        assert client.post("/api/gallery/dog/sessions").json()["project"]["id"] != info["project"]["id"]


def test_gallery_offline_says_so_and_uploads_still_work(client):
    studio = client.app.state.studio
    unreachable = Sample("far", "Far away", "image", "images/far.jpg", "http://127.0.0.1:9/far.jpg")
    studio.gallery = Gallery(studio.data_dir, samples=(unreachable,), timeout=5)
    assert_error(client.get("/api/gallery/far/thumbnail"), 404, "unknown_thumbnail")
    body = assert_error(client.post("/api/gallery/far/sessions"), 424, "offline", "offline")
    assert "Upload your own" in body["detail"]
    gallery = client.get("/api/gallery").json()
    assert gallery["offline"] and "offline" in gallery["detail"] and not gallery["samples"][0]["cached"]
    upload(client, "photo.png", png_bytes(64, 48))


# --------------------------------------------------------------------------- without weights
def test_missing_weights_are_explained_and_the_page_still_served(tmp_path):
    settings = ServerSettings(model="sam2.1-tiny", data_dir=tmp_path / "studio", download=False)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while (status := client.get("/api/status").json())["model"]["state"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        model = status["model"]
        assert model["state"] == "unavailable" and model["download_url"].endswith("/sam2.1_hiera_tiny.pt")
        assert model["save_as"].endswith(os.path.join("checkpoints", "sam2.1_hiera_tiny.pt"))
        assert model["download_url"] in model["detail"] and "Traceback" not in model["detail"]
        assert client.get("/").status_code == 200
        body = assert_error(client.post("/api/sessions", files={"file": ("p.png", png_bytes(), "image/png")}), 503,
                            "model_unavailable")
        assert model["save_as"] in body["detail"]
        assert client.get("/api/projects").json() == []


def test_unknown_model_name_fails_at_start(tmp_path):
    from anyseg.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match="sam2.1-tiny"):
        create_app(ServerSettings(model="sam2.1-tinny", data_dir=tmp_path))


def test_serve_command(tmp_path, monkeypatch, capsys, fixtures_dir):
    from anyseg.cli import main

    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kw: served.update(app=app, host=host, port=port))
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(64, 48))
    checkpoint = str(fixtures_dir / "sam2.1_hiera_tiny.random.pt")
    port = free_port()
    assert main(["serve", "--checkpoint", checkpoint, "--data-dir", str(tmp_path / "d"), "--open", str(image),
                 "--port", str(port)]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == port
    studio = served["app"].state.studio
    assert studio.settings.allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]  # loopback only
    project = studio.store.projects()[0]
    assert f"http://127.0.0.1:{port}/#project={project.id}" in capsys.readouterr().err
    assert studio.settings.precision == "fp32"
    assert main(["serve", "--checkpoint", checkpoint, "--data-dir", str(tmp_path / "d"), "--precision", "int8",
                 "--port", str(port)]) == 0
    assert served["app"].state.studio.holder.precision == "int8"
    assert main(["serve", "--model", "sam2.1-tinny", "--port", str(port)]) == 2
    assert "Did you mean 'sam2.1-tiny'" in capsys.readouterr().err
    assert main(["serve", "--open", str(tmp_path / "missing.png"), "--data-dir", str(tmp_path / "d"),
                 "--port", str(port)]) == 2
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["serve", "--open", str(tmp_path / "notes.txt"), "--data-dir", str(tmp_path / "d"),
                 "--port", str(port)]) == 2
    assert "neither an image nor a video" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--port", str(port)]) == 0
    assert served["app"].state.studio.settings.allowed_hosts is None
    assert "anyone who can reach it" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err
    with socket.socket() as taken:  # another server on the port: refused before the model loads
        taken.bind(("127.0.0.1", port))
        taken.listen()
        served_studio = served["app"].state.studio
        served.clear()
        projects = len(served_studio.store.projects())
        assert main(["serve", "--data-dir", str(tmp_path / "d"), "--port", str(port), "--open", str(image)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err and not served
        assert len(served_studio.store.projects()) == projects  # --open's project was not made


# --------------------------------------------------------------------------- the fixture checkpoint
@pytest.fixture(scope="module")
def fixture_checkpoint(fixtures_dir) -> Path:
    return fixtures_dir / "sam2.1_hiera_tiny.random.pt"


def test_fixture_checkpoint_loads_on_retry_and_segments(fixture_checkpoint, samples_dir, tmp_path):
    """Served as `anyseg serve --checkpoint PATH` serves it: missing at first, then placed and
    loaded with the page's "Check again"."""
    checkpoint = tmp_path / "weights" / "sam2.1_hiera_tiny.pt"
    settings = ServerSettings(model=None, checkpoint=str(checkpoint), data_dir=tmp_path / "studio")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        def settled() -> dict:
            deadline = time.monotonic() + 120
            while (model := client.get("/api/status").json()["model"])["state"] == "loading":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            return model

        model = settled()
        assert model["state"] == "unavailable" and str(checkpoint) in model["detail"] and model["download_url"] is None
        checkpoint.parent.mkdir()
        checkpoint.symlink_to(fixture_checkpoint)
        assert client.post("/api/model/load").json()["state"] == "loading"
        assert settled() == {"state": "ready", "name": "sam2.1_hiera_tiny.pt", "precision": "fp32", "family": "sam2",
                             "detail": None, "download_url": None, "save_as": None}

        dog = (samples_dir / "images" / "dog.jpg").read_bytes()
        info = upload(client, "dog.jpg", dog)
        new_object(client, info["session_id"], "dog")
        r = prompt(client, info["session_id"], 1, x=300, y=300)
        assert len(r["object"]["candidates"]) == 3 and mask_of(r, 1).shape == (534, 800)
        mask = client.get(f"/api/projects/{info['project']['id']}/export/mask.png", params={"obj_id": 1})
        assert Image.open(io.BytesIO(mask.content)).size == (800, 534)


def test_a_data_folder_that_cannot_be_written_is_refused_at_creation(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InvalidInputError, match="cannot write in the studio's data folder"):
        create_app(ServerSettings(data_dir=tmp_path / "taken" / "studio"))


def test_loading_on_the_cpu_compiles_the_loops(fixture_checkpoint, monkeypatch):
    """The model is ready only once the CPU loops are compiled, so the first click does not
    wait for numba (the first time after an install)."""
    from anyseg.server import worker

    calls = []
    monkeypatch.setattr(worker, "compile_loops", lambda: calls.append(holder.model))
    holder = worker.ModelHolder(None, str(fixture_checkpoint), "cpu")
    holder._load()
    assert calls == [None] and holder.model is not None and holder.status().state == "ready"


def test_fixture_checkpoint_matches_the_predictor(fixture_checkpoint, samples_dir, tmp_path):
    """The studio's mask for a click is the image predictor's, byte for byte."""
    from anyseg import ImagePredictor
    from anyseg.io.images import load_image

    model = load_model(checkpoint=fixture_checkpoint)
    path = samples_dir / "images" / "groceries.jpg"
    with make_client(model, tmp_path) as client:
        info = upload(client, "groceries.jpg", path.read_bytes())
        new_object(client, info["session_id"])
        r = prompt(client, info["session_id"], 1, x=400, y=250)
    predictor = ImagePredictor(model)
    predictor.set_image(load_image(path))
    out = predictor.predict(points=[[400, 250]], labels=[1], multimask=True)
    assert (mask_of(r, 1) == out.masks[out.best]).all()


# --------------------------------------------------------------------------- schemathesis
def test_schemathesis_finds_no_server_errors(model, tmp_path):
    """Every operation of the OpenAPI spec with generated (mostly invalid) inputs: never a 5xx.
    (Against a running server: see the command in the README.)"""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    app = create_app(ServerSettings(model="tiny", data_dir=tmp_path, max_upload_bytes=100_000), model=model)
    with TestClient(app):  # runs the app's startup (the inference thread)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                case.call_and_validate(checks=[schemathesis.checks.not_a_server_error])

            check()
