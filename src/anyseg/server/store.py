"""The studio's persistence: projects, media and annotations in SQLite.

One database file (``studio.db`` in the data folder) in WAL mode with ``synchronous=FULL``: every
change is its own committed transaction, so a crash or a ``kill -9`` right after a request
returns loses nothing. Prompts are kept in the order they were given (undo removes the last one);
masks are COCO RLEs, one per object and frame.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyseg.server.errors import ApiError, not_found

MAX_OBJECTS = 255
"""Object ids are 1..255: the label values of DAVIS-palette PNGs."""

_OBJECT = "WHERE project_id = ? AND obj_id = ?"  # the rows of one object

_SCHEMA = """
CREATE TABLE IF NOT EXISTS media (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    num_frames INTEGER NOT NULL,
    fps REAL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    media_id TEXT NOT NULL REFERENCES media (id),
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    obj_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    choice INTEGER,
    PRIMARY KEY (project_id, obj_id)
);
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    obj_id INTEGER NOT NULL,
    frame INTEGER NOT NULL,
    data TEXT NOT NULL,
    FOREIGN KEY (project_id, obj_id) REFERENCES objects (project_id, obj_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS prompts_by_object ON prompts (project_id, obj_id, frame);
CREATE TABLE IF NOT EXISTS masks (
    project_id TEXT NOT NULL,
    obj_id INTEGER NOT NULL,
    frame INTEGER NOT NULL,
    rle TEXT NOT NULL,
    area INTEGER NOT NULL,
    score REAL,
    PRIMARY KEY (project_id, frame, obj_id),
    FOREIGN KEY (project_id, obj_id) REFERENCES objects (project_id, obj_id) ON DELETE CASCADE
);
"""


@dataclass(frozen=True)
class Media:
    id: str
    kind: str
    filename: str
    path: str  # relative to the data folder
    sha256: str
    width: int
    height: int
    num_frames: int
    fps: float | None


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created: float
    updated: float
    media: Media
    num_objects: int


@dataclass(frozen=True)
class StoredObject:
    obj_id: int
    name: str
    choice: int | None


@dataclass(frozen=True)
class StoredMask:
    obj_id: int
    frame: int
    rle: dict[str, Any]
    area: int
    score: float | None


def new_id() -> str:
    """An unguessable id (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(16)


class Store:
    """The SQLite database of one data folder; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (rolled back on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------- projects
    def create_project(self, name: str, media: Media) -> Project:
        """Record ``media`` (its file already in place) and a new project on it."""
        now = time.time()
        project_id = new_id()
        with self._tx() as db:
            db.execute(
                "INSERT INTO media VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (media.id, media.kind, media.filename, media.path, media.sha256, media.width,
                 media.height, media.num_frames, media.fps),
            )
            db.execute("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", (project_id, name, media.id, now, now))
        return self.project(project_id)

    _PROJECT_SQL = """
        SELECT p.id, p.name, p.created, p.updated, m.*, m.id AS media_id,
               (SELECT COUNT(*) FROM objects o WHERE o.project_id = p.id) AS num_objects
        FROM projects p JOIN media m ON m.id = p.media_id
    """

    @staticmethod
    def _project(row: sqlite3.Row) -> Project:
        media = Media(row["media_id"], row["kind"], row["filename"], row["path"], row["sha256"],
                      row["width"], row["height"], row["num_frames"], row["fps"])
        return Project(row["id"], row["name"], row["created"], row["updated"], media, row["num_objects"])

    def project(self, project_id: str) -> Project:
        rows = self._query(self._PROJECT_SQL + " WHERE p.id = ?", (project_id,))
        if not rows:
            raise not_found("project", f"no project with id {project_id!r}")
        return self._project(rows[0])

    def projects(self) -> list[Project]:
        """Every project, the most recently changed first."""
        return [self._project(r) for r in self._query(self._PROJECT_SQL + " ORDER BY p.updated DESC")]

    def rename_project(self, project_id: str, name: str) -> Project:
        with self._tx() as db:
            db.execute("UPDATE projects SET name = ?, updated = ? WHERE id = ?", (name, time.time(), project_id))
        return self.project(project_id)

    def delete_project(self, project_id: str) -> bool:
        """Delete a project with its annotations; returns whether its media file is now unused
        (the caller deletes it)."""
        media = self.project(project_id).media
        with self._tx() as db:
            db.execute("DELETE FROM projects WHERE id = ?", (project_id,))
            db.execute("DELETE FROM media WHERE id = ?", (media.id,))
            still_used = db.execute("SELECT 1 FROM media WHERE path = ?", (media.path,)).fetchone()
        return still_used is None

    def _touch(self, db: sqlite3.Connection, project_id: str) -> None:
        db.execute("UPDATE projects SET updated = ? WHERE id = ?", (time.time(), project_id))

    # -------------------------------------------------------------------- objects
    def add_object(self, project_id: str, name: str | None) -> StoredObject:
        """A new object with the lowest free id (1..255)."""
        with self._tx() as db:
            used = {r[0] for r in db.execute("SELECT obj_id FROM objects WHERE project_id = ?", (project_id,))}
            free = next((i for i in range(1, MAX_OBJECTS + 1) if i not in used), None)
            if free is None:
                raise ApiError(409, "too_many_objects", f"a project holds at most {MAX_OBJECTS} objects")
            db.execute("INSERT INTO objects VALUES (?, ?, ?, NULL)", (project_id, free, name or f"object {free}"))
            self._touch(db, project_id)
        return StoredObject(free, name or f"object {free}", None)

    def objects(self, project_id: str) -> list[StoredObject]:
        rows = self._query("SELECT obj_id, name, choice FROM objects WHERE project_id = ? ORDER BY obj_id",
                           (project_id,))
        return [StoredObject(r["obj_id"], r["name"], r["choice"]) for r in rows]

    def object(self, project_id: str, obj_id: int) -> StoredObject:
        rows = self._query(f"SELECT obj_id, name, choice FROM objects {_OBJECT}", (project_id, obj_id))
        if not rows:
            raise not_found("object", f"the project has no object {obj_id}")
        return StoredObject(rows[0]["obj_id"], rows[0]["name"], rows[0]["choice"])

    def update_object(self, project_id: str, obj_id: int, name: str | None = None,
                      choice: int | None = None) -> None:
        with self._tx() as db:
            if name is not None:
                db.execute(f"UPDATE objects SET name = ? {_OBJECT}", (name, project_id, obj_id))
            if choice is not None:
                db.execute(f"UPDATE objects SET choice = ? {_OBJECT}", (choice, project_id, obj_id))
            self._touch(db, project_id)

    def delete_object(self, project_id: str, obj_id: int) -> None:
        """Delete an object with its prompts and masks."""
        with self._tx() as db:
            db.execute(f"DELETE FROM objects {_OBJECT}", (project_id, obj_id))
            self._touch(db, project_id)

    # -------------------------------------------------------------------- prompts
    def prompts(self, project_id: str, obj_id: int | None = None,
                frame: int | None = None) -> list[tuple[int, int, dict]]:
        """``(obj_id, frame, prompt)`` in the order given, optionally of one object / frame."""
        sql, args = "SELECT obj_id, frame, data FROM prompts WHERE project_id = ?", [project_id]
        if obj_id is not None:
            sql, args = sql + " AND obj_id = ?", args + [obj_id]
        if frame is not None:
            sql, args = sql + " AND frame = ?", args + [frame]
        rows = self._query(sql + " ORDER BY id", tuple(args))
        return [(r["obj_id"], r["frame"], json.loads(r["data"])) for r in rows]

    def record_prompt(self, project_id: str, obj_id: int, frame: int, prompt: dict,
                      masks: list[StoredMask], choice: int | None = None) -> None:
        """Append a prompt with the masks it produced (and, for images, the chosen candidate)."""
        with self._tx() as db:
            db.execute("INSERT INTO prompts (project_id, obj_id, frame, data) VALUES (?, ?, ?, ?)",
                       (project_id, obj_id, frame, json.dumps(prompt)))
            db.execute(f"UPDATE objects SET choice = ? {_OBJECT}", (choice, project_id, obj_id))
            self._put_masks(db, project_id, masks)
            self._touch(db, project_id)

    def pop_prompt(self, project_id: str, obj_id: int, frame: int) -> dict | None:
        """Remove and return the object's last prompt on ``frame`` (``None`` if it has none)."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT id, data FROM prompts {_OBJECT} AND frame = ? ORDER BY id DESC LIMIT 1",
                (project_id, obj_id, frame),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM prompts WHERE id = ?", (row["id"],))
            self._touch(db, project_id)
        return json.loads(row["data"])

    def clear_object(self, project_id: str, obj_id: int) -> None:
        """Remove every prompt and mask of an object (the object stays)."""
        with self._tx() as db:
            db.execute(f"DELETE FROM prompts {_OBJECT}", (project_id, obj_id))
            db.execute(f"DELETE FROM masks {_OBJECT}", (project_id, obj_id))
            db.execute(f"UPDATE objects SET choice = NULL {_OBJECT}", (project_id, obj_id))
            self._touch(db, project_id)

    # ---------------------------------------------------------------------- masks
    def put_masks(self, project_id: str, masks: list[StoredMask], choice: tuple[int, int | None] | None = None,
                  delete: list[tuple[int, int]] = ()) -> None:
        """Write masks (replacing those of the same object and frame) and delete the
        ``(obj_id, frame)`` masks in ``delete``, in one transaction; ``choice`` is an
        ``(obj_id, index)`` to record with them."""
        with self._tx() as db:
            for obj_id, frame in delete:
                db.execute(f"DELETE FROM masks {_OBJECT} AND frame = ?", (project_id, obj_id, frame))
            if choice is not None:
                db.execute(f"UPDATE objects SET choice = ? {_OBJECT}", (choice[1], project_id, choice[0]))
            self._put_masks(db, project_id, masks)
            self._touch(db, project_id)

    @staticmethod
    def _put_masks(db: sqlite3.Connection, project_id: str, masks: list[StoredMask]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO masks VALUES (?, ?, ?, ?, ?, ?)",
            [(project_id, m.obj_id, m.frame, json.dumps(m.rle), m.area, m.score) for m in masks],
        )

    @staticmethod
    def _mask(row: sqlite3.Row) -> StoredMask:
        return StoredMask(row["obj_id"], row["frame"], json.loads(row["rle"]), row["area"], row["score"])

    def masks(self, project_id: str, frame: int) -> list[StoredMask]:
        """Every object's mask on ``frame``, by object id."""
        rows = self._query("SELECT * FROM masks WHERE project_id = ? AND frame = ? ORDER BY obj_id",
                           (project_id, frame))
        return [self._mask(r) for r in rows]

    def all_masks(self, project_id: str) -> Iterator[StoredMask]:
        """Every stored mask, by frame then object id (read in pages, never all at once)."""
        last = (-1, -1)
        while True:
            rows = self._query(
                "SELECT * FROM masks WHERE project_id = ? AND (frame, obj_id) > (?, ?) "
                "ORDER BY frame, obj_id LIMIT 256",
                (project_id, *last),
            )
            if not rows:
                return
            yield from (self._mask(r) for r in rows)
            last = (rows[-1]["frame"], rows[-1]["obj_id"])

    def tracks(self, project_id: str) -> dict[int, list[tuple[int, int]]]:
        """For each object, the inclusive frame ranges where its mask is not empty."""
        rows = self._query(
            "SELECT obj_id, frame FROM masks WHERE project_id = ? AND area > 0 ORDER BY obj_id, frame", (project_id,)
        )
        ranges: dict[int, list[tuple[int, int]]] = {}
        for r in rows:
            runs = ranges.setdefault(r["obj_id"], [])
            if runs and runs[-1][1] == r["frame"] - 1:
                runs[-1] = (runs[-1][0], r["frame"])
            else:
                runs.append((r["frame"], r["frame"]))
        return ranges
