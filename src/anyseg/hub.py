"""Finding, downloading, verifying and reading official checkpoint files.

Checkpoints are cached under ``home()/checkpoints/<filename>``. A download streams to
``<filename>.part`` (resumed with an HTTP Range request after an interruption), is
checked against the registry's SHA-256, and only then renamed into place, so the
final path never holds a partial or unverified file. Nothing here ever substitutes
other weights: if the official file cannot be had, the error says what to download,
where to put it, and how to load a local file instead.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import re
import ssl
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch
from tqdm import tqdm

from anyseg.errors import CheckpointError, InvalidInputError, WeightsUnavailableError
from anyseg.models.registry import ModelSpec, get_spec, list_specs

CHUNK_BYTES = 1 << 20

# What a dropped connection, a refusal, a timeout or an HTTP error status looks like.
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
)

# Files already warned about because the registry has no SHA-256 for them.
_UNVERIFIED_WARNED: set[str] = set()


def home() -> Path:
    """anyseg's cache folder: ``$ANYSEG_HOME``, else ``~/.cache/anyseg``."""
    env = os.environ.get("ANYSEG_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anyseg"


def checkpoint_path(spec: ModelSpec) -> Path:
    """Where the official file of ``spec`` is (or will be) cached."""
    return home() / "checkpoints" / spec.filename


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(url: str, dest: Path) -> str:
    return (
        f"Download {url} by hand and save it as {dest}, or load a local file with "
        "checkpoint=PATH (Python) / --checkpoint PATH (command line)."
    )


def _warn_unverified(path: Path) -> None:
    if str(path) not in _UNVERIFIED_WARNED:
        _UNVERIFIED_WARNED.add(str(path))
        warnings.warn(
            f"no SHA-256 is known for {path.name}; using {path} without verifying it",
            stacklevel=3,
        )


def download(
    url: str, dest: str | os.PathLike, sha256: str | None, progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, verified against ``sha256``; returns ``dest``.

    Bytes go to ``dest + ".part"`` first; a ``.part`` left by an interrupted download
    is resumed with a Range request (or restarted if the server ignores Range). After
    the SHA-256 matches, the file is renamed to ``dest`` atomically. On a mismatch the
    ``.part`` is deleted. Network errors (refused, timed out, dropped, HTTP 4xx/5xx), a
    folder that cannot be written and checksum mismatches raise
    :class:`WeightsUnavailableError`, naming the URL and where to place the file by hand.
    With ``sha256=None`` nothing is verified and a warning says so once. Processes that
    download the same file take turns (a lock on ``dest + ".lock"``, POSIX): the next one
    finds the file in place and returns it, verified, instead of writing the ``.part`` too.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = open(dest.with_suffix(dest.suffix + ".lock"), "a")
    except OSError as exc:
        raise _unwritable(exc, dest, url) from exc
    with lock:
        _take_turn(lock, dest)
        if dest.is_file() and (sha256 is None or _verified_hash(dest) == sha256):
            return dest  # another process's download, finished while this one waited
        return _download_now(url, dest, sha256, progress, timeout)


def _unwritable(exc: OSError, dest: Path, url: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"could not write {exc.filename or dest}: {exc.strerror or exc}. Set ANYSEG_HOME to a writable folder, "
        f"or download {url} by hand and load it with checkpoint=PATH (Python) / --checkpoint PATH (command line)."
    )


def _take_turn(lock, dest: Path) -> None:
    """Wait, saying so, while another process holds the lock of ``dest``'s download."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no turns
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"anyseg: waiting for another process to finish downloading {dest.name}", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)


def _download_now(url: str, dest: Path, sha256: str | None, progress: bool, timeout: float) -> Path:
    """:func:`download`'s work, under its lock."""
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        _fetch(url, part, progress, timeout)
    except _NETWORK_ERRORS as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()
            reason = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise WeightsUnavailableError(
            f"could not download {url}: {reason}. {_by_hand(url, dest)}"
        ) from exc
    except OSError as exc:  # the folder: no rights to it, read-only, full
        raise _unwritable(exc, dest, url) from exc
    actual = sha256_of(part)
    if sha256 is None:
        _warn_unverified(dest)
    elif actual != sha256:
        part.unlink()
        raise WeightsUnavailableError(
            f"the file downloaded from {url} is not the expected one (SHA-256 {actual}, "
            f"expected {sha256}) and was discarded. {_by_hand(url, dest)}"
        )
    os.replace(part, dest)
    _remember_hash(dest, actual)
    return dest


# ``resolve_checkpoint``'s ``download`` flag shadows the function of that name.
_download = download


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Stream ``url`` into ``part``, continuing from the bytes already there."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "anyseg"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is not a prefix of the file
            exc.close()
            part.unlink()
            return _fetch(url, part, progress, timeout)
        raise
    with response:
        if response.status != 206:
            offset = 0  # the server ignored Range and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, file=sys.stderr,
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _remember_hash(path: Path, digest: str) -> None:
    """Record ``digest`` with the file's size and mtime in ``<file>.sha256``.

    Remembering is only an optimisation: a cache folder that cannot be written to
    just means the file is hashed again next time.
    """
    stat = path.stat()
    try:
        _sidecar(path).write_text(f"{digest} {stat.st_size} {stat.st_mtime_ns}\n")
    except OSError:
        pass


def _verified_hash(path: Path) -> str:
    """SHA-256 of ``path``, from its sidecar if size and mtime still match."""
    stat = path.stat()
    try:
        digest, size, mtime_ns = _sidecar(path).read_text().split()
        if int(size) == stat.st_size and int(mtime_ns) == stat.st_mtime_ns:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_of(path)
    _remember_hash(path, digest)
    return digest


def resolve_checkpoint(spec: ModelSpec, download: bool = True, progress: bool = True) -> Path:
    """Path of the verified official file of ``spec``, downloading it if needed.

    A cached file is hashed once; the result is remembered in ``<file>.sha256`` next to
    it, keyed on size and mtime. A cached file with the wrong SHA-256 is never used
    (nor deleted: it may be the user's). With ``download=False`` a missing file raises
    :class:`WeightsUnavailableError` instead of being fetched.
    """
    path = checkpoint_path(spec)
    if path.is_file():
        if spec.sha256 is None:
            _warn_unverified(path)
        else:
            actual = _verified_hash(path)
            if actual != spec.sha256:
                raise WeightsUnavailableError(
                    f"{path} is not the official {spec.name} file (SHA-256 {actual}, "
                    f"expected {spec.sha256}). Delete it to download it again. "
                    + _by_hand(spec.url, path)
                )
        return path
    if not download:
        raise WeightsUnavailableError(
            f"the weights of {spec.name} are not downloaded. {_by_hand(spec.url, path)}"
        )
    return _download(spec.url, path, spec.sha256, progress=progress)


def checkpoint_for(
    name: str | None, checkpoint: str | os.PathLike | None, download: bool = True
) -> tuple[ModelSpec | None, Path]:
    """The spec (if a name is given) and the weights file to load.

    An explicit ``checkpoint`` is used as it is (fine-tuned weights are welcome); else
    the official file of ``name`` is resolved through the cache.
    """
    spec = get_spec(name) if name is not None else None
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}")
        return spec, path
    if spec is None:
        raise InvalidInputError("give a model name or a checkpoint path")
    return spec, resolve_checkpoint(spec, download=download)


def cached_models() -> dict[str, Path | None]:
    """Every registered name, with the cached file's path or ``None`` (not hashed)."""
    result: dict[str, Path | None] = {}
    for spec in list_specs():
        path = checkpoint_path(spec)
        result[spec.name] = path if path.is_file() else None
    return result


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, loaded on the CPU with their stored dtypes.

    Only plain weights are read (``torch.load(..., weights_only=True)``): a file that
    needs Python code to unpickle is refused. The official containers are unwrapped:
    SAM 2 stores ``{"model": state_dict}``, SAM 1 and MobileSAM a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    damaged = CheckpointError(f"{path} is truncated or not a PyTorch checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive; before PyTorch 1.6 a protocol-2 pickle.
    if not (head == b"PK\x03\x04" or head.startswith(b"\x80\x02")):
        raise damaged
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"GLOBAL (\S+)", str(exc))
        detail = f" (it needs {needs.group(1)})" if needs else ""
        raise CheckpointError(
            f"{path} is not a plain weights file: it pickles Python objects{detail}, "
            "which anyseg does not execute"
        ) from exc
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise damaged from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors")
    return tensors
