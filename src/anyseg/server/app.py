"""The studio's FastAPI application: the REST API, the live-tracking event stream and the page.

:func:`create_app` builds an app from :class:`ServerSettings`. Routes only translate: requests
become session or store calls (model work on the inference thread), results become JSON, JPEG
frames, Server-Sent Events or exported files. Errors always leave as JSON
``{"error", "detail"}`` with a 4xx status (a 503 while the model is unavailable, a 507 when the
disk is full, a bare 500 without any detail of the failure for bugs, which are logged here).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, File, Path as PathParam, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from anyseg import __version__, hub
from anyseg.errors import AnysegError
from anyseg.io.export import writable_folder
from anyseg.models.registry import get_spec
from anyseg.server.errors import ApiError, status_of
from anyseg.server.exports import MEDIA_TYPES, ExportFormat, Exporter, download_name
from anyseg.server.gallery import Gallery
from anyseg.server.media import Limits as MediaLimits
from anyseg.server.media import MediaLibrary, jpeg, safe_filename
from anyseg.server.schemas import (
    ConceptStatus,
    ErrorResponse,
    FrameMasks,
    FrameRequest,
    Gallery as GalleryInfo,
    Limits,
    MediaInfo,
    ModelStatus,
    NewObject,
    ObjectInfo,
    ObjectUpdate,
    Preview,
    PreviewRequest,
    PromptResult,
    ProjectInfo,
    ProjectUpdate,
    Prompt,
    PropagateRequest,
    SessionInfo,
    Status,
    Track,
)
from anyseg.server.sessions import SessionManager, StudioSession, Tracked, VideoTrackingSession, mask_out
from anyseg.server.store import MAX_OBJECTS, Project, Store
from anyseg.server.worker import InferenceWorker, ModelHolder

log = logging.getLogger("anyseg.server")

CONCEPTS_REASON = ("Text and exemplar prompts need SAM 3's concept engine, which anyseg does not have yet; "
                   "they will work here once it does.")
JSON_BODY_LIMIT = 1 << 20
MULTIPART_OVERHEAD = 1 << 16  # the form's boundaries and headers around the uploaded file


@dataclass
class ServerSettings:
    """How the studio runs. ``data_dir`` defaults to ``$ANYSEG_HOME/studio``; with ``download``
    false, missing official weights are reported instead of downloaded."""

    model: str | None = "sam2.1-tiny"
    checkpoint: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    download: bool = True
    data_dir: Path | None = None
    max_upload_bytes: int = 1 << 30
    max_pixels: int = 50_000_000
    max_video_frames: int = 20_000
    session_ttl_s: float = 30 * 60.0
    max_sessions: int = 8
    samples_dir: Path | None = None
    allowed_hosts: list[str] | None = None


class Studio:
    """Everything the routes use, for one app."""

    def __init__(self, settings: ServerSettings, model=None) -> None:
        if model is None and settings.model is not None:
            get_spec(settings.model)  # an unknown name fails now, with suggestions
        self.settings = settings
        self.data_dir = writable_folder(settings.data_dir or hub.home() / "studio", "the studio's data folder")
        self.store = Store(self.data_dir / "studio.db")
        self.library = MediaLibrary(self.data_dir, MediaLimits(settings.max_upload_bytes, settings.max_pixels,
                                                               settings.max_video_frames))
        self.gallery = Gallery(self.data_dir, settings.samples_dir)
        self.holder = ModelHolder(settings.model, settings.checkpoint, settings.device, settings.download, model,
                                  settings.precision)
        self.worker: InferenceWorker | None = None
        self.sessions: SessionManager | None = None

    def start(self) -> None:
        self.worker = InferenceWorker()
        self.holder.start_loading(self.worker)
        self.sessions = SessionManager(self.store, self.worker, self.holder, self.library,
                                       self.settings.session_ttl_s, self.settings.max_sessions)

    def stop(self) -> None:
        self.sessions.close_all()
        self.worker.stop(timeout=60)
        self.library.close()
        self.store.close()

    # ----------------------------------------------------------------- responses
    def project_out(self, project: Project) -> ProjectInfo:
        m = project.media
        media = MediaInfo(kind=m.kind, filename=m.filename, width=m.width, height=m.height,
                          num_frames=m.num_frames, fps=m.fps)
        return ProjectInfo(id=project.id, name=project.name, created=project.created, updated=project.updated,
                           media=media, num_objects=project.num_objects)

    def session_out(self, session: StudioSession) -> SessionInfo:
        pid = session.pid
        return SessionInfo(
            session_id=session.id,
            project=self.project_out(self.store.project(pid)),
            objects=[session.object_info(o.obj_id) for o in self.store.objects(pid)],
            tracks=[Track(obj_id=o, ranges=r) for o, r in self.store.tracks(pid).items()],
            propagating=session.propagating,
        )


def studio(request: Request) -> Studio:
    return request.app.state.studio


StudioDep = Annotated[Studio, Depends(studio)]
ProjectId = Annotated[str, PathParam(max_length=64, description="a project id")]
SessionId = Annotated[str, PathParam(max_length=64, description="a session id")]
ObjId = Annotated[int, PathParam(ge=1, le=MAX_OBJECTS, description="an object id")]
FrameNo = Annotated[int, PathParam(ge=0, le=10_000_000, description="frame number, from 0")]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [(400, "a malformed request body"), (404, "unknown id"),
                       (409, "the session is busy tracking, or an action does not fit its state"),
                       (422, "invalid input: out-of-bounds prompt, bad media, bad parameters"),
                       (503, "the model is not available (yet)"),
                       (507, "the server's disk is full: nothing was kept")]
}
SESSION_CREATED = {**ERRORS, 413: {"model": ErrorResponse, "description": "upload too large"},
                   415: {"model": ErrorResponse, "description": "not an image or a video"}}


def _idle(session: StudioSession) -> StudioSession:
    """Refuse edits while the session tracks: its tracker is mid-propagation."""
    if session.propagating:
        raise ApiError(409, "busy", "the video is being tracked; wait for it to finish or cancel it first")
    return session


# ------------------------------------------------------------------------- status
async def get_status(s: StudioDep) -> Status:
    """The model's state (with what to download if its weights are missing), limits, features."""
    model = s.holder.model
    limits = Limits(max_upload_bytes=s.settings.max_upload_bytes, max_pixels=s.settings.max_pixels,
                    max_video_frames=s.settings.max_video_frames, session_ttl_s=s.settings.session_ttl_s)
    return Status(version=__version__, model=s.holder.status(), video=model is None or model.family == "sam2",
                  limits=limits, concepts=ConceptStatus(available=False, reason=CONCEPTS_REASON),
                  sessions=len(s.sessions))


async def load_model_again(s: StudioDep) -> ModelStatus:
    """Try loading the model again (after placing its weights where the status said)."""
    s.holder.start_loading(s.worker)
    return s.holder.status()


# ------------------------------------------------------------------------- gallery
async def get_gallery(s: StudioDep) -> GalleryInfo:
    """The example images and videos, whether each is cached, and whether we seem offline."""
    return s.gallery.info()


def sample_thumbnail(s: StudioDep, sample_id: Annotated[str, PathParam(max_length=64)]) -> Response:
    """A small JPEG of an example, once it is at hand (404 before its first download)."""
    data = s.gallery.thumbnail(s.gallery.sample(sample_id))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


async def open_sample(s: StudioDep, sample_id: Annotated[str, PathParam(max_length=64)]) -> SessionInfo:
    """Open an example as a new project (downloading it on first use)."""
    sample = s.gallery.sample(sample_id)
    s.holder.require()
    path = await run_in_threadpool(s.gallery.fetch, sample)
    media = await run_in_threadpool(s.library.ingest_file, path, path.name)
    project = s.store.create_project(sample.title, media)
    return s.session_out(await s.sessions.open(project))


# ------------------------------------------------------------------------- projects
async def upload(s: StudioDep, file: Annotated[UploadFile, File(description="an image or a video")]) -> SessionInfo:
    """Upload an image or a video: a new project, opened in a new session."""
    s.holder.require()
    name = safe_filename(file.filename)
    media = await run_in_threadpool(s.library.ingest, file.file, name)
    project = s.store.create_project(name, media)
    return s.session_out(await s.sessions.open(project))


async def list_projects(s: StudioDep) -> list[ProjectInfo]:
    """Every saved project, the most recently changed first."""
    return [s.project_out(p) for p in s.store.projects()]


async def get_project(s: StudioDep, project_id: ProjectId) -> ProjectInfo:
    return s.project_out(s.store.project(project_id))


async def rename_project(s: StudioDep, project_id: ProjectId, body: ProjectUpdate) -> ProjectInfo:
    return s.project_out(s.store.rename_project(s.store.project(project_id).id, body.name))


async def delete_project(s: StudioDep, project_id: ProjectId) -> Response:
    """Delete a project, its annotations and (if no other project uses it) its media file."""
    project = s.store.project(project_id)
    live = s.sessions.for_project(project_id)
    if live is not None:
        _idle(live)
        s.sessions.close(live.id)
    s.library.forget(project.media, delete=s.store.delete_project(project_id))
    return Response(status_code=204)


MaxSide = Annotated[int | None, Query(ge=16, le=8192, description="scale down to this longer side")]


def get_frame(s: StudioDep, project_id: ProjectId, frame: FrameNo, max_side: MaxSide = None) -> Response:
    """Frame ``frame`` of the project's video (0: its image) as JPEG."""
    media = s.store.project(project_id).media
    data = jpeg(s.library.frame(media, frame), max_side)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


async def get_masks(s: StudioDep, project_id: ProjectId, frame: FrameNo) -> FrameMasks:
    """Every object's saved mask on a frame."""
    project = s.store.project(project_id)
    if frame >= project.media.num_frames:
        raise ApiError(404, "unknown_frame",
                       f"frame {frame} does not exist: the media has {project.media.num_frames}")
    return FrameMasks(frame=frame, masks=[mask_out(m) for m in s.store.masks(project_id, frame)])


def export(
    s: StudioDep,
    project_id: ProjectId,
    fmt: Annotated[ExportFormat, PathParam(description="what to export")],
    obj_id: Annotated[int | None, Query(ge=1, le=MAX_OBJECTS, description="mask, cut-out: one object")] = None,
    frame: Annotated[int, Query(ge=0, le=10_000_000, description="single-frame formats: which frame")] = 0,
    max_side: Annotated[int, Query(ge=64, le=4096, description="GIF: longer side in pixels")] = 480,
) -> FileResponse:
    """Export the saved annotations: PNG mask, transparent cut-out, overlay PNG, COCO RLE JSON,
    YOLO-seg polygons (one frame, or all as a zip), DAVIS PNGs (zip), MP4 / GIF overlay."""
    project = s.store.project(project_id)
    tmp = Path(tempfile.mkdtemp(prefix="export-", dir=s.data_dir))
    try:
        name = download_name(project, fmt, obj_id, frame)
        path = tmp / name
        Exporter(project, s.store, s.library).write(fmt, path, obj_id=obj_id, frame=frame, max_side=max_side)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], filename=name,
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


async def open_project(s: StudioDep, project_id: ProjectId) -> SessionInfo:
    """Open a saved project in a live session (its existing one, if it has one)."""
    return s.session_out(await s.sessions.open(s.store.project(project_id)))


# ------------------------------------------------------------------------- sessions
async def get_session(s: StudioDep, session_id: SessionId) -> SessionInfo:
    return s.session_out(s.sessions.get(session_id))


async def close_session(s: StudioDep, session_id: SessionId) -> Response:
    """End a live session and free its memory (the project stays saved)."""
    s.sessions.close(_idle(s.sessions.get(session_id)).id)
    return Response(status_code=204)


async def add_object(s: StudioDep, session_id: SessionId,
                     body: Annotated[NewObject, Body(default_factory=NewObject)]) -> ObjectInfo:
    """A new object (the next free id, its own colour)."""
    session = s.sessions.get(session_id)
    obj = s.store.add_object(session.pid, body.name)
    return session.object_info(obj.obj_id)


async def update_object(s: StudioDep, session_id: SessionId, obj_id: ObjId, body: ObjectUpdate) -> PromptResult:
    """Rename an object, or (images) choose one of its candidate masks."""
    session = _idle(s.sessions.get(session_id))
    s.store.object(session.pid, obj_id)
    if body.name is not None:
        s.store.update_object(session.pid, obj_id, name=body.name)
    if body.choice is not None:
        if session.kind != "image":
            raise ApiError(422, "invalid_input", "candidate masks are chosen on images; on videos, click to refine")
        await s.worker.run(session.choose, obj_id, body.choice)
    return session.result(obj_id, body.frame)


async def delete_object(s: StudioDep, session_id: SessionId, obj_id: ObjId) -> Response:
    """Delete an object with its prompts and masks."""
    session = _idle(s.sessions.get(session_id))
    await s.worker.run(session.delete_object, obj_id)
    return Response(status_code=204)


async def add_prompt(s: StudioDep, session_id: SessionId, obj_id: ObjId,
                     prompt: Annotated[Prompt, Body()]) -> PromptResult:
    """A positive or negative click, or a box, for an object on a frame; returns its new mask
    (and the frame's other masks)."""
    session = _idle(s.sessions.get(session_id))
    return await s.worker.run(session.add_prompt, obj_id, prompt.model_dump())


async def preview(s: StudioDep, session_id: SessionId, body: PreviewRequest) -> Preview:
    """The mask a click at (x, y) would give the object (no object: the click alone), predicted
    and not stored: the page shows it under the pointer before the click. Images only."""
    session = _idle(s.sessions.get(session_id))
    return await s.worker.run(session.preview, body.obj_id, body.model_dump(exclude={"obj_id"}) | {"type": "point"})


async def undo(s: StudioDep, session_id: SessionId, obj_id: ObjId, body: FrameRequest) -> PromptResult:
    """Remove the object's last prompt on the frame."""
    session = _idle(s.sessions.get(session_id))
    return await s.worker.run(session.undo, obj_id, body.frame)


async def clear(s: StudioDep, session_id: SessionId, obj_id: ObjId, body: FrameRequest) -> PromptResult:
    """Remove every prompt and mask of the object (on every frame); the object stays."""
    session = _idle(s.sessions.get(session_id))
    await s.worker.run(session.clear, obj_id)
    return session.result(obj_id, body.frame)


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def propagate(s: StudioDep, session_id: SessionId, body: PropagateRequest) -> StreamingResponse:
    """Track every prompted object through the video, streaming Server-Sent Events: ``start``
    (``total`` frames), one ``frame`` per tracked frame with its masks as they are saved, then
    ``done`` (or ``error``). Cancel with ``…/propagate/cancel`` or by closing the stream."""
    session = _idle(s.sessions.get(session_id))
    if not isinstance(session, VideoTrackingSession):
        raise ApiError(422, "invalid_input", "only videos are tracked; an image's masks are final")
    session.propagating, session.cancelled = True, False  # before any await: one propagation at a time
    try:
        total, frames = await s.worker.run(session.propagation, body.direction, body.start_frame)
    except BaseException:
        session.propagating = False
        raise
    return StreamingResponse(_stream(s, session, body.direction, total, frames), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(s: Studio, session: VideoTrackingSession, direction: str, total: int,
                  frames: Iterator[Tracked]) -> AsyncIterator[str]:
    done = 0
    started = time.perf_counter()
    try:
        yield _event("start", {"direction": direction, "total": total})
        while not session.cancelled:
            step = await s.worker.run(next, frames, None)  # one frame per job: other sessions go between
            if step is None:
                break
            name, frame, masks = step
            done += 1
            session.last_used = time.monotonic()
            yield _event("frame", {"frame": frame, "pass": name, "done": done, "total": total,
                                   "masks": [mask_out(m).model_dump() for m in masks]})
        yield _event("done", {"done": done, "total": total, "cancelled": session.cancelled,
                              "seconds": round(time.perf_counter() - started, 3)})
    except AnysegError as exc:
        _, code = status_of(exc)
        yield _event("error", {"error": code, "detail": str(exc)})
    except Exception:
        log.exception("tracking failed")
        yield _event("error", {"error": "internal", "detail": "tracking failed; the server's log has the details"})
    finally:
        session.propagating = False
        s.worker.submit(frames.close)


async def cancel_propagation(s: StudioDep, session_id: SessionId) -> Response:
    """Stop tracking after the current frame (its masks so far stay saved)."""
    s.sessions.get(session_id).cancelled = True
    return Response(status_code=204)


# ------------------------------------------------------------------------- the app
def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AnysegError)
    async def anyseg_error(request: Request, exc: AnysegError) -> JSONResponse:
        status, code = status_of(exc)
        return _error(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            if err.get("type") == "json_invalid":
                return _error(422, "invalid_request", "the request body is not valid JSON")
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(parts) or "the request is invalid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)
                       for m in r.methods}
            headers = {"Allow": ", ".join(sorted(methods))}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal", "internal server error; the server's log has the details")

    async def storage_error(request: Request, exc: OSError | sqlite3.Error) -> JSONResponse:
        # SQLite says so in its message (SQLITE_FULL's; Python 3.10 has no error codes)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT) if isinstance(exc, OSError) else (
            "database or disk is full" in str(exc))
        if not full:
            return await internal_error(request, exc)
        log.error("no space left for %s %s: %s", request.method, request.url.path, exc)
        return _error(507, "insufficient_storage",
                      "the server has no space left to store this (nothing was kept); free some, then try again")

    app.add_exception_handler(OSError, storage_error)
    app.add_exception_handler(sqlite3.Error, storage_error)


class BodyLimitMiddleware:
    """Refuses request bodies past a size limit with a JSON 413: at once when Content-Length
    says so, else as soon as the bytes received pass it. Uploads (``POST /api/sessions``) may
    be as large as the upload limit, every other body :data:`JSON_BODY_LIMIT`."""

    def __init__(self, app, upload_limit: int, upload_message: str) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.upload_message = upload_message

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/api/sessions":
            limit, message = self.upload_limit, self.upload_message
        else:
            limit, message = JSON_BODY_LIMIT, f"the request body is larger than {JSON_BODY_LIMIT // 1024} KiB"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await _error(413, "too_large", message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message_ = await receive()
            received += len(message_.get("body", b""))
            if received > limit:  # FastAPI re-raises HTTP exceptions met while reading the body
                raise StarletteHTTPException(413, message)
            return message_

        await self.app(scope, limited_receive, send)


def _file(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """The documented responses of a route that answers with a file."""
    return {**ERRORS, 200: {"content": {t: {} for t in media_types}, "description": description}}


def _add_routes(app: FastAPI) -> None:
    def add(path: str, endpoint, method: str, tag: str, **options) -> None:
        options.setdefault("responses", ERRORS)
        if options.get("status_code") == 204:
            options["response_class"] = Response
        app.add_api_route(path, endpoint, methods=[method], tags=[tag], **options)

    add("/api/status", get_status, "GET", "status", responses={})
    add("/api/model/load", load_model_again, "POST", "status", responses={})
    add("/api/gallery", get_gallery, "GET", "gallery", responses={})
    add("/api/gallery/{sample_id}/thumbnail", sample_thumbnail, "GET", "gallery", response_class=Response,
        responses=_file("a thumbnail", "image/jpeg"))
    add("/api/gallery/{sample_id}/sessions", open_sample, "POST", "gallery", status_code=201,
        responses={**ERRORS, 424: {"model": ErrorResponse, "description": "offline: the download failed"}})
    add("/api/sessions", upload, "POST", "sessions", status_code=201, responses=SESSION_CREATED)
    add("/api/projects", list_projects, "GET", "projects", responses={})
    add("/api/projects/{project_id}", get_project, "GET", "projects")
    add("/api/projects/{project_id}", rename_project, "PATCH", "projects")
    add("/api/projects/{project_id}", delete_project, "DELETE", "projects", status_code=204)
    add("/api/projects/{project_id}/frames/{frame}", get_frame, "GET", "projects", response_class=Response,
        responses=_file("the frame", "image/jpeg"))
    add("/api/projects/{project_id}/masks/{frame}", get_masks, "GET", "projects")
    add("/api/projects/{project_id}/export/{fmt}", export, "GET", "exports", response_class=FileResponse,
        responses=_file("the exported file", *sorted(set(MEDIA_TYPES.values()))))
    add("/api/projects/{project_id}/sessions", open_project, "POST", "projects")
    add("/api/sessions/{session_id}", get_session, "GET", "sessions")
    add("/api/sessions/{session_id}", close_session, "DELETE", "sessions", status_code=204)
    add("/api/sessions/{session_id}/objects", add_object, "POST", "objects", status_code=201)
    add("/api/sessions/{session_id}/objects/{obj_id}", update_object, "PATCH", "objects")
    add("/api/sessions/{session_id}/objects/{obj_id}", delete_object, "DELETE", "objects", status_code=204)
    add("/api/sessions/{session_id}/objects/{obj_id}/prompts", add_prompt, "POST", "objects")
    add("/api/sessions/{session_id}/preview", preview, "POST", "objects")
    add("/api/sessions/{session_id}/objects/{obj_id}/undo", undo, "POST", "objects")
    add("/api/sessions/{session_id}/objects/{obj_id}/clear", clear, "POST", "objects")
    add("/api/sessions/{session_id}/propagate", propagate, "POST", "tracking", response_class=StreamingResponse,
        responses=_file("Server-Sent Events: start, frame…, done", "text/event-stream"))
    add("/api/sessions/{session_id}/propagate/cancel", cancel_propagation, "POST", "tracking", status_code=204)


def create_app(settings: ServerSettings | None = None, model=None) -> FastAPI:
    """The studio app. ``model`` serves an already built model instead of loading
    ``settings.model`` / ``settings.checkpoint`` (which happens in the background at start)."""
    settings = settings or ServerSettings()
    studio_ = Studio(settings, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        studio_.start()
        evictor = asyncio.create_task(_evict_idle(studio_))
        try:
            yield
        finally:
            evictor.cancel()
            studio_.stop()

    app = FastAPI(title="anyseg studio", version=__version__, lifespan=lifespan,
                  description="Segment and track anything: upload an image or a video, prompt with clicks "
                              "and boxes, track through videos and export the masks.")
    app.state.studio = studio_
    app.add_middleware(BodyLimitMiddleware, upload_limit=settings.max_upload_bytes + MULTIPART_OVERHEAD,
                       upload_message=studio_.library.too_large_message())
    if settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    _install_error_handlers(app)
    _add_routes(app)
    static = resources.files("anyseg.server") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), headers={"Cache-Control": "no-cache"})

    return app


async def _evict_idle(studio_: Studio) -> None:
    """Every little while, close the sessions idle for longer than the TTL."""
    interval = min(60.0, max(studio_.settings.session_ttl_s / 4, 0.05))
    while True:
        await asyncio.sleep(interval)
        studio_.sessions.evict_idle()
