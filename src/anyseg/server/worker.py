"""The inference queue: one thread runs every piece of model work, one at a time.

Requests from many sessions arrive concurrently; each hands its model work (embedding an image,
decoding a click, one frame of tracking) to :class:`InferenceWorker` and awaits the result. The
device therefore runs one inference at a time, in arrival order, and a long propagation, queued
one frame per job, lets other sessions' clicks in between its frames.

:class:`ModelHolder` loads the model on that thread (downloading official weights on first use,
and on the CPU having the compiled loops ready, :func:`~anyseg.models.mask_decoder.compile_loops`)
and remembers why it could not, so the page can say which file to download and where.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from anyseg import hub
from anyseg.errors import AnysegError
from anyseg.loading import load_model
from anyseg.models.mask_decoder import compile_loops
from anyseg.models.registry import get_spec
from anyseg.predictors.precision import check_precision
from anyseg.server.errors import ApiError
from anyseg.server.schemas import ModelStatus

log = logging.getLogger("anyseg.server")

T = TypeVar("T")


class InferenceWorker:
    """A single thread that runs submitted callables in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future, Callable, tuple] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="anyseg-inference", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; the future holds its result or exception."""
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Queue ``fn(*args)`` and wait for it without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then end the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue  # the request that wanted it has gone
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # delivered to the awaiting request
                future.set_exception(exc)


class ModelHolder:
    """The served model: loaded on the worker thread, or the reason it could not be; and the
    precision its predictors compute in."""

    def __init__(self, name: str | None, checkpoint: str | None, device: str, download: bool = True,
                 model=None, precision: str = "fp32") -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.device = device
        self.precision = check_precision(precision, device)
        self.download = download
        self.model = model
        self._error: str | None = None
        self._loading = False

    @property
    def label(self) -> str:
        return self.name or Path(self.checkpoint or "").name

    def start_loading(self, worker: InferenceWorker) -> None:
        """Queue the load (again, after a failure); a no-op when loaded or loading."""
        if self.model is None and not self._loading:
            self._loading, self._error = True, None
            worker.submit(self._load)

    def _load(self) -> None:
        try:
            model = load_model(self.name, checkpoint=self.checkpoint, device=self.device, download=self.download)
            if model.device.type == "cpu":  # the first click would wait for it (once per install)
                compile_loops()
            self.model = model
        except AnysegError as exc:
            self._error = str(exc)
            log.warning("model not loaded: %s", exc)
        except Exception:
            self._error = "the model could not be loaded (the server's log has the details)"
            log.exception("loading the model failed")
        finally:
            self._loading = False

    def require(self):
        """The model, or a 503 saying why it is not there (yet)."""
        if self.model is not None:
            return self.model
        raise ApiError(503, "model_unavailable", self.status().detail or "the model is still loading")

    def status(self) -> ModelStatus:
        if self.model is not None:
            return ModelStatus(state="ready", name=self.label, precision=self.precision, family=self.model.family)
        if self._loading or self._error is None:
            return ModelStatus(state="loading", name=self.label, precision=self.precision,
                               detail="loading the model (on first use, official weights are downloaded and "
                                      "the CPU loops compiled)")
        url = save_as = None
        if self.checkpoint is None and self.name is not None:
            spec = get_spec(self.name)
            url, save_as = spec.url, str(hub.checkpoint_path(spec))
        return ModelStatus(state="unavailable", name=self.label, precision=self.precision, detail=self._error,
                           download_url=url, save_as=save_as)
