"""Request and response bodies of the studio's REST API (they make its OpenAPI spec).

Coordinates are (x, y) pixels of the original image or video frame, as everywhere in anyseg.
Masks travel as COCO run-length encodings (``{"size": [H, W], "counts": str}``, column-major),
the format the annotations are stored in and exported as.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from anyseg.predictors.precision import PRECISIONS
from anyseg.server.store import MAX_OBJECTS

Finite = Annotated[float, Field(allow_inf_nan=False)]
FrameIndex = Annotated[int, Field(ge=0, le=10_000_000, description="frame number, from 0 (images: 0)")]
ObjectName = Annotated[str, Field(min_length=1, max_length=80)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    """Every error: a machine code and a sentence for the person."""

    error: str = Field(description="machine-readable code, e.g. unknown_session, bad_media")
    detail: str = Field(description="what went wrong, and what to do about it")


# ---------------------------------------------------------------------------- status
class ModelStatus(BaseModel):
    """The served model: ``loading`` (weights may be downloading), ``ready`` or ``unavailable``
    (then ``detail`` says why; for missing weights ``download_url`` and ``save_as`` say which
    file to download and where to put it)."""

    state: Literal["loading", "ready", "unavailable"]
    name: str = Field(description="registry name, or the checkpoint file's name")
    precision: Literal[tuple(PRECISIONS)] = Field(
        "fp32", description="what the predictors compute in (fp32: exact; the others faster, approximate)")
    family: str | None = Field(None, description="sam or sam2, once loaded")
    detail: str | None = None
    download_url: str | None = None
    save_as: str | None = None


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_video_frames: int
    session_ttl_s: float


class ConceptStatus(BaseModel):
    """Text and exemplar prompts (SAM 3 concepts)."""

    available: bool
    reason: str


class Status(BaseModel):
    version: str
    model: ModelStatus
    video: bool = Field(description="whether the model tracks videos (SAM 2 models do)")
    limits: Limits
    concepts: ConceptStatus
    sessions: int = Field(description="live sessions")


# ---------------------------------------------------------------------------- projects
class MediaInfo(BaseModel):
    kind: Literal["image", "video"]
    filename: str
    width: int
    height: int
    num_frames: int = Field(description="1 for an image")
    fps: float | None = None


class ProjectInfo(BaseModel):
    id: str
    name: str
    created: float = Field(description="seconds since the epoch")
    updated: float
    media: MediaInfo
    num_objects: int


class ProjectUpdate(_Body):
    name: ObjectName


# ---------------------------------------------------------------------------- prompts
class PointPrompt(_Body):
    """A click: positive (on the object) or negative (background)."""

    type: Literal["point"]
    frame: FrameIndex = 0
    x: Finite
    y: Finite
    positive: bool = True


class BoxPrompt(_Body):
    """A box around the object, x0, y0, x1, y1. A new box replaces the object's earlier box on
    that frame (undo brings the earlier one back)."""

    type: Literal["box"]
    frame: FrameIndex = 0
    box: tuple[Finite, Finite, Finite, Finite]


Prompt = Annotated[PointPrompt | BoxPrompt, Field(discriminator="type")]


class Rle(BaseModel):
    size: tuple[int, int] = Field(description="[H, W]")
    counts: str = Field(description="COCO compressed counts (column-major runs)")


class MaskRecord(BaseModel):
    obj_id: int
    rle: Rle
    area: int = Field(description="pixels in the mask")
    score: float | None = Field(None, description="predicted IoU (images) or object score logit (videos)")


class PreviewRequest(_Body):
    """Where the pointer rests: the click it would make there, for an object (or none yet)."""

    obj_id: int | None = Field(None, ge=1, le=MAX_OBJECTS, description="the object the click would go to; none: a new one")
    frame: FrameIndex = 0
    x: Finite
    y: Finite
    positive: bool = True


class Preview(BaseModel):
    """The best mask the object would have with that click added (not stored)."""

    obj_id: int | None
    rle: Rle
    area: int = Field(description="pixels in the mask")
    score: float = Field(description="predicted IoU")


class FrameMasks(BaseModel):
    frame: int
    masks: list[MaskRecord]


class Candidate(BaseModel):
    index: int
    score: float = Field(description="predicted IoU")


class ObjectInfo(BaseModel):
    obj_id: int = Field(description="1..255 (the index in DAVIS-palette PNGs)")
    name: str
    color: str = Field(description="#rrggbb, the object's colour in every overlay")
    prompts: list[Prompt]
    choice: int | None = Field(None, description="images: the chosen candidate mask")
    candidates: list[Candidate] = Field(
        default_factory=list, description="images, after a single click: the candidate masks"
    )


class Track(BaseModel):
    """Where an object has a mask: inclusive frame ranges."""

    obj_id: int
    ranges: list[tuple[int, int]]


class SessionInfo(BaseModel):
    session_id: str = Field(description="unguessable; the handle of the live session")
    project: ProjectInfo
    objects: list[ObjectInfo]
    tracks: list[Track]
    propagating: bool


class PromptResult(BaseModel):
    """The changed object and the masks of every object on the frame."""

    frame: int
    object: ObjectInfo
    masks: list[MaskRecord]


class NewObject(_Body):
    name: ObjectName | None = None


class ObjectUpdate(_Body):
    name: ObjectName | None = None
    choice: int | None = Field(None, ge=0, le=2, description="images: pick candidate mask 0, 1 or 2")
    frame: FrameIndex = Field(0, description="the frame whose masks to return")


class FrameRequest(_Body):
    frame: FrameIndex = Field(0, description="undo: the frame to undo on; clear: the frame whose masks to return")


class PropagateRequest(_Body):
    """``forward`` tracks from the earliest prompted frame to the end, ``backward`` from the latest
    prompted frame to the start, ``both`` does forward and then backward from the earliest
    prompted frame (as the official demo). ``start_frame`` overrides the start."""

    direction: Literal["forward", "backward", "both"] = "both"
    start_frame: FrameIndex | None = None


# ---------------------------------------------------------------------------- gallery
class GallerySample(BaseModel):
    id: str
    title: str
    kind: Literal["image", "video"]
    url: str = Field(description="the public address it is downloaded from on first use")
    cached: bool


class Gallery(BaseModel):
    samples: list[GallerySample]
    offline: bool = Field(description="the last download failed: the network looks unreachable")
    detail: str | None = None
