"""Live sessions: a project opened with the model, holding its image embedding or video state.

A session translates the studio's actions (a click, a box, undo, clear, choose a candidate, track)
into predictor calls, and records every change in the :class:`~anyseg.server.store.Store` as it
happens. Its methods run on the inference thread (:class:`~anyseg.server.worker.InferenceWorker`),
one at a time. The store is the truth: a session's prompts are always those stored, so a
session can be rebuilt from the store after a restart (re-embedding the image, replaying the
video prompts).

:class:`SessionManager` gives sessions unguessable ids, keeps one live session per project, and
evicts sessions left idle longer than the TTL, releasing their memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import secrets
import time
from collections.abc import Iterator

import numpy as np

from anyseg.errors import InvalidInputError
from anyseg.io.export import object_color
from anyseg.io.images import load_image
from anyseg.io.masks import encode_rle, rle_area
from anyseg.models.sam2_tracking import NO_OBJ_SCORE
from anyseg.predictors.image import ImagePredictor
from anyseg.predictors.video import FrameResult, VideoPredictor
from anyseg.server.errors import ApiError, not_found
from anyseg.server.media import MediaLibrary
from anyseg.server.schemas import Candidate, MaskRecord, ObjectInfo, Preview, PromptResult
from anyseg.server.store import Project, Store, StoredMask
from anyseg.server.worker import InferenceWorker, ModelHolder

log = logging.getLogger("anyseg.server")

Tracked = tuple[str, int, list[StoredMask]]
"""One frame of a propagation: the pass (``forward`` / ``backward``), the frame, its masks."""


def color_hex(obj_id: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*object_color(obj_id))


def split_prompts(prompts: list[dict]) -> tuple[list[list[float]], list[int], list[float] | None]:
    """Clicks (points, labels) and the last box of a frame's prompts, in the order given."""
    points = [[p["x"], p["y"]] for p in prompts if p["type"] == "point"]
    labels = [int(p["positive"]) for p in prompts if p["type"] == "point"]
    boxes = [p["box"] for p in prompts if p["type"] == "box"]
    return points, labels, (boxes[-1] if boxes else None)


def mask_record(obj_id: int, frame: int, mask: np.ndarray, score: float | None) -> StoredMask:
    rle = encode_rle(mask)
    return StoredMask(obj_id, frame, rle, rle_area(rle), score)  # from the runs: microseconds, a sum ~0.5 ms


def mask_out(mask: StoredMask) -> MaskRecord:
    """A stored mask as the API returns it."""
    return MaskRecord(obj_id=mask.obj_id, rle=mask.rle, area=mask.area, score=mask.score)


class StudioSession:
    """What image and video sessions share: identity, the project, object bookkeeping."""

    kind: str

    def __init__(self, session_id: str, project: Project, store: Store) -> None:
        self.id = session_id
        self.project = project
        self.store = store
        self.last_used = time.monotonic()
        self.propagating = False  # set while a propagation streams (by the event loop)
        self.cancelled = False  # asks a running propagation to stop

    @property
    def pid(self) -> str:
        return self.project.id

    def object_info(self, obj_id: int) -> ObjectInfo:
        obj = self.store.object(self.pid, obj_id)
        prompts = [dict(p, frame=f) for _, f, p in self.store.prompts(self.pid, obj_id)]
        return ObjectInfo(obj_id=obj.obj_id, name=obj.name, color=color_hex(obj.obj_id), prompts=prompts,
                          choice=obj.choice, candidates=self.candidates(obj_id))

    def candidates(self, obj_id: int) -> list[Candidate]:
        return []

    def result(self, obj_id: int, frame: int) -> PromptResult:
        return PromptResult(frame=frame, object=self.object_info(obj_id),
                            masks=[mask_out(m) for m in self.store.masks(self.pid, frame)])

    def check_frame(self, frame: int) -> None:
        n = self.project.media.num_frames
        if frame >= n:
            raise InvalidInputError(f"frame {frame} is past the end: the {self.kind} has {n} frame(s)")

    def add_prompt(self, obj_id: int, prompt: dict) -> PromptResult:
        """Add a click or box (a :class:`~anyseg.server.schemas.PointPrompt` / ``BoxPrompt`` as a
        dict) for an object, predict its mask, and store both."""
        raise NotImplementedError

    def preview(self, obj_id: int | None, click: dict) -> Preview:
        """The mask the object would get with the click ``click`` (a ``PointPrompt`` as a dict)
        added to its prompts (no object: the click alone), predicted and not stored: what the
        page shows under the pointer before a click."""
        raise InvalidInputError(f"masks are previewed on images; on a {self.kind}, click to segment")

    def undo(self, obj_id: int, frame: int) -> PromptResult:
        """Remove the object's last prompt on ``frame`` and predict its mask without it."""
        raise NotImplementedError

    def clear(self, obj_id: int) -> None:
        """Remove every prompt and mask of the object."""
        raise NotImplementedError

    def delete_object(self, obj_id: int) -> None:
        """Forget the object with its prompts and masks."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model state (embedding, tracker); the session is unusable afterwards."""
        raise NotImplementedError


class ImageSession(StudioSession):
    """An embedded image. An object's mask comes from all its clicks and its last box; a single
    click gives three candidates to choose from.

    A preview's masks are kept (as RLE) with the prompts they were predicted for until the next
    prediction: a click where the pointer rested finds them and answers without the model (the
    embedding, the only other input, does not change in a session).
    """

    kind = "image"

    def __init__(self, session_id: str, project: Project, store: Store, predictor: ImagePredictor) -> None:
        super().__init__(session_id, project, store)
        self.predictor: ImagePredictor | None = predictor
        self._candidates: dict[int, list[StoredMask]] = {}  # of each object's single click (RLE: compact)
        self._kept: tuple[str, list[StoredMask], int] | None = None  # a preview's prompts (JSON), masks, best

    @classmethod
    def open(cls, session_id: str, project: Project, store: Store, model, library: MediaLibrary,
             precision: str = "fp32") -> ImageSession:
        """Embed the image in ``precision``, or read its embedding back from the cache."""
        predictor = ImagePredictor(model, precision=precision)
        cached = library.embedding_path(project.media)
        try:
            predictor.load_embedding(cached)
            if predictor.image_size != (project.media.height, project.media.width):
                raise InvalidInputError("the cached embedding is of another image")
        except InvalidInputError:
            predictor.set_image(load_image(library.path(project.media)))
            predictor.save_embedding(cached)
        return cls(session_id, project, store, predictor)

    def candidates(self, obj_id: int) -> list[Candidate]:
        return [Candidate(index=i, score=m.score) for i, m in enumerate(self._candidates.get(obj_id, []))]

    def _masks(self, obj_id: int, prompts: list[dict], keep: bool = False) -> tuple[list[StoredMask], int]:
        """The object's masks for ``prompts`` (a single click: three candidates, otherwise one)
        and the best one's index: the kept ones if they were predicted for the same prompts.
        ``keep`` keeps these for the next call."""
        key = json.dumps(prompts, sort_keys=True)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == key:
            masks, best = [dataclasses.replace(m, obj_id=obj_id) for m in kept[1]], kept[2]
        else:
            points, labels, box = split_prompts(prompts)
            pred = self.predictor.predict(points=points or None, labels=labels or None, box=box,
                                          multimask=len(points) == 1 and box is None)
            masks = [mask_record(obj_id, 0, m, float(score)) for m, score in zip(pred.masks, pred.scores)]
            best = pred.best
        if keep:
            self._kept = key, masks, best
        return masks, best

    def _predict(self, obj_id: int, prompts: list[dict]) -> tuple[StoredMask, int]:
        """The object's best mask for ``prompts`` and its index; remembers a click's candidates."""
        masks, best = self._masks(obj_id, prompts)
        if len(masks) > 1:
            self._candidates[obj_id] = masks
        else:
            self._candidates.pop(obj_id, None)
        return masks[best], best

    def _prompts(self, obj_id: int) -> list[dict]:
        return [p for _, _, p in self.store.prompts(self.pid, obj_id)]

    def add_prompt(self, obj_id: int, prompt: dict) -> PromptResult:
        self.store.object(self.pid, obj_id)
        self.check_frame(prompt["frame"])
        mask, best = self._predict(obj_id, self._prompts(obj_id) + [_without_frame(prompt)])
        self.store.record_prompt(self.pid, obj_id, 0, _without_frame(prompt), [mask], choice=best)
        return self.result(obj_id, 0)

    def preview(self, obj_id: int | None, click: dict) -> Preview:
        self.check_frame(click["frame"])
        prompts = []
        if obj_id is not None:
            self.store.object(self.pid, obj_id)  # an unknown object is refused
            prompts = self._prompts(obj_id)
        # no object yet: 0, relabelled when the click takes these masks for its new object
        masks, best = self._masks(obj_id or 0, prompts + [_without_frame(click)], keep=True)
        return Preview(obj_id=obj_id, rle=masks[best].rle, area=masks[best].area, score=masks[best].score)

    def undo(self, obj_id: int, frame: int) -> PromptResult:
        self.store.object(self.pid, obj_id)
        self.check_frame(frame)
        self.store.pop_prompt(self.pid, obj_id, 0)
        remaining = self._prompts(obj_id)
        if remaining:
            mask, best = self._predict(obj_id, remaining)
            self.store.put_masks(self.pid, [mask], choice=(obj_id, best))
        else:
            self.clear(obj_id)
        return self.result(obj_id, 0)

    def choose(self, obj_id: int, index: int) -> None:
        """Keep candidate ``index`` of the object's single-click prediction."""
        if obj_id not in self._candidates:  # e.g. after a restart: predict again from the stored prompts
            prompts = self._prompts(obj_id)
            if not prompts:
                raise InvalidInputError(f"object {obj_id} has no mask to choose from: click on it first")
            self._predict(obj_id, prompts)
        candidates = self._candidates.get(obj_id, [])
        if index >= len(candidates):
            raise InvalidInputError(f"object {obj_id} has no candidate mask {index}: candidates come from a "
                                    "single click (three of them)")
        self.store.put_masks(self.pid, [candidates[index]], choice=(obj_id, index))

    def clear(self, obj_id: int) -> None:
        self.store.object(self.pid, obj_id)
        self._candidates.pop(obj_id, None)
        self.store.clear_object(self.pid, obj_id)

    def delete_object(self, obj_id: int) -> None:
        self.clear(obj_id)
        self.store.delete_object(self.pid, obj_id)

    def close(self) -> None:
        self.predictor = None
        self._candidates.clear()
        self._kept = None


class VideoTrackingSession(StudioSession):
    """A video opened for tracking with SAM 2. A frame's prompt for an object is all its clicks
    there plus its last box there; tracking writes every frame's masks as they come."""

    kind = "video"

    def __init__(self, session_id: str, project: Project, store: Store, model, library: MediaLibrary,
                 precision: str = "fp32") -> None:
        super().__init__(session_id, project, store)
        self.tracker = VideoPredictor(model, precision=precision).open(str(library.path(project.media)))
        self._replayed = False

    def _ensure_replayed(self) -> None:
        """After a restart the tracker is empty: give it the stored prompts again (this encodes
        each prompted frame), lazily, on the first action that needs them."""
        if self._replayed:
            return
        groups: dict[tuple[int, int], list[dict]] = {}
        for obj_id, frame, prompt in self.store.prompts(self.pid):
            groups.setdefault((obj_id, frame), []).append(prompt)
        for (obj_id, frame), prompts in groups.items():
            self._prompt_tracker(obj_id, frame, prompts)
        self._replayed = True

    def _prompt_tracker(self, obj_id: int, frame: int, prompts: list[dict]) -> FrameResult:
        points, labels, box = split_prompts(prompts)
        return self.tracker.add_prompt(frame, obj_id, points=points or None, labels=labels or None, box=box)

    def _store_frame(self, obj_id: int, frame: int, result: FrameResult) -> StoredMask:
        row = result.obj_ids.index(obj_id)
        return mask_record(obj_id, frame, result.masks[row], float(result.object_scores[row]))

    def add_prompt(self, obj_id: int, prompt: dict) -> PromptResult:
        self.store.object(self.pid, obj_id)
        frame = prompt["frame"]
        self.check_frame(frame)
        self._ensure_replayed()
        prompts = [p for _, _, p in self.store.prompts(self.pid, obj_id, frame)] + [_without_frame(prompt)]
        result = self._prompt_tracker(obj_id, frame, prompts)
        mask = self._store_frame(obj_id, frame, result)
        self.store.record_prompt(self.pid, obj_id, frame, _without_frame(prompt), [mask])
        return self.result(obj_id, frame)

    def undo(self, obj_id: int, frame: int) -> PromptResult:
        self.store.object(self.pid, obj_id)
        self.check_frame(frame)
        self._ensure_replayed()
        if self.store.pop_prompt(self.pid, obj_id, frame) is None:
            return self.result(obj_id, frame)
        remaining = [p for _, _, p in self.store.prompts(self.pid, obj_id, frame)]
        if remaining:
            result = self._prompt_tracker(obj_id, frame, remaining)
            self.store.put_masks(self.pid, [self._store_frame(obj_id, frame, result)])
        elif not self.store.prompts(self.pid, obj_id):  # no prompt left anywhere: nothing to track
            self.clear(obj_id)
        else:  # the frame keeps what tracking gave it before the prompt, if anything
            result = self.tracker.clear_prompts(frame, obj_id)
            if result.object_scores[result.obj_ids.index(obj_id)] > NO_OBJ_SCORE:
                self.store.put_masks(self.pid, [self._store_frame(obj_id, frame, result)])
            else:
                self.store.put_masks(self.pid, [], delete=[(obj_id, frame)])
        return self.result(obj_id, frame)

    def clear(self, obj_id: int) -> None:
        self.store.object(self.pid, obj_id)
        self._ensure_replayed()
        if obj_id in self.tracker.objects:
            self.tracker.remove_object(obj_id)
        self.store.clear_object(self.pid, obj_id)

    def delete_object(self, obj_id: int) -> None:
        self.clear(obj_id)
        self.store.delete_object(self.pid, obj_id)

    def propagation(self, direction: str, start: int | None) -> tuple[int, Iterator[Tracked]]:
        """How many frames tracking in ``direction`` visits, and an iterator of the results,
        ``(pass, frame, masks)`` frame by frame, each stored before it is yielded (``pass`` is
        ``forward`` or ``backward``). Call it and advance the iterator on the inference thread only."""
        self._ensure_replayed()
        frames = sorted({frame for _, frame, _ in self.store.prompts(self.pid)})
        if not frames:
            raise InvalidInputError("no object has a prompt yet: click on an object first")
        if start is not None:
            self.check_frame(start)
        first = frames[0] if start is None else start
        last = frames[-1] if start is None else start
        passes = {"forward": [("forward", first)], "backward": [("backward", last)],
                  "both": [("forward", first), ("backward", first)]}[direction]
        n = self.project.media.num_frames
        # forward from f visits f..n-1; backward from f visits f..0, and nothing from 0 (as the predictor)
        total = sum(n - f if name == "forward" else (f + 1 if f > 0 else 0) for name, f in passes)
        return total, self._propagate(passes)

    def _propagate(self, passes: list[tuple[str, int]]) -> Iterator[Tracked]:
        for name, first in passes:
            for result in self.tracker.propagate(start=first, reverse=name == "backward"):
                masks = [mask_record(o, result.frame, m, float(s))
                         for o, m, s in zip(result.obj_ids, result.masks, result.object_scores)]
                self.store.put_masks(self.pid, masks)
                yield name, result.frame, masks

    def close(self) -> None:
        self.tracker.close()


def _without_frame(prompt: dict) -> dict:
    return {k: v for k, v in prompt.items() if k != "frame"}


class SessionManager:
    """The live sessions: created on the inference thread, found by id, evicted when idle."""

    def __init__(self, store: Store, worker: InferenceWorker, holder: ModelHolder, library: MediaLibrary,
                 ttl_s: float, max_sessions: int) -> None:
        self.store = store
        self.worker = worker
        self.holder = holder
        self.library = library
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, StudioSession] = {}
        self._open_lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> StudioSession:
        """The live session, marked as used now; 404 if unknown or evicted."""
        session = self._sessions.get(session_id)
        if session is None:
            raise not_found("session", "no live session with this id (it may have been closed or evicted "
                                       "after being idle): open its project again")
        session.last_used = time.monotonic()
        return session

    def for_project(self, project_id: str) -> StudioSession | None:
        return next((s for s in self._sessions.values() if s.pid == project_id), None)

    async def open(self, project: Project) -> StudioSession:
        """The project's live session, or a new one (embedding the image / opening the video)."""
        async with self._open_lock:
            live = self.for_project(project.id)
            if live is not None:
                live.last_used = time.monotonic()
                return live
            model = self.holder.require()
            if project.media.kind == "video" and model.family != "sam2":
                raise ApiError(422, "needs_sam2",
                               "video tracking needs a SAM 2 model; serve one with --model sam2.1-tiny")
            self._make_room()
            session_id = secrets.token_urlsafe(24)
            if project.media.kind == "image":
                kind = ImageSession.open
            else:
                kind = VideoTrackingSession
            session = await self.worker.run(kind, session_id, project, self.store, model, self.library,
                                            self.holder.precision)
            self._sessions[session_id] = session
            return session

    def close(self, session_id: str) -> None:
        """End a session; its memory is released once queued work on it is done."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self.worker.submit(_release, session)

    def close_project(self, project_id: str) -> None:
        session = self.for_project(project_id)
        if session is not None:
            self.close(session.id)

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Close the sessions idle for longer than the TTL (not while they track)."""
        now = time.monotonic() if now is None else now
        idle = [s.id for s in self._sessions.values() if not s.propagating and now - s.last_used > self.ttl_s]
        for session_id in idle:
            log.info("evicting idle session %s", session_id[:6])
            self.close(session_id)
        return idle

    def _make_room(self) -> None:
        """Close the least recently used sessions beyond ``max_sessions - 1``."""
        idle = sorted((s for s in self._sessions.values() if not s.propagating), key=lambda s: s.last_used)
        for session in idle[: max(0, len(self._sessions) - self.max_sessions + 1)]:
            self.close(session.id)

    def close_all(self) -> None:
        for session_id in list(self._sessions):
            self.close(session_id)


def _release(session: StudioSession) -> None:
    session.close()
    gc.collect()
