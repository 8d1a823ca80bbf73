"""Video object tracking with SAM 2's memory bank, streaming in bounded memory.

A :class:`VideoSession` decodes frames lazily and keeps only what tracking needs: each
object's conditioning frames (those it was prompted on), the non-conditioning outputs
of the frames near the tracking front (the last ``num_maskmem`` memories and up to 16
object pointers), and the image features of the current frame. Results stream out of
:meth:`VideoSession.propagate` and are not kept.

The tracking semantics are the official SAM 2 video predictor's: prompts on any frame,
refinement clicks that reuse the frame's previous logits, conditioning vs.
non-conditioning memories, memories stored in bfloat16, object pointers with signed
temporal encodings, and forward / backward propagation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from anyseg.errors import InvalidInputError
from anyseg.io.masks import small_components
from anyseg.io.video import VideoSource, open_video
from anyseg.models.common import LastResult
from anyseg.models.features import ImageFeatures
from anyseg.models.sam2_tracking import NO_OBJ_SCORE, Memory, TrackStep
from anyseg.predictors.precision import autocast, check_precision, decoder_copy, encoding
from anyseg.predictors.prompts import check_inside
from anyseg.predictors.transforms import Sam2Transform


@dataclass
class FrameResult:
    """Masks of every object on one frame.

    ``masks`` ``(N, H, W)`` bool at the video's resolution, ``logits`` ``(N, 256, 256)``
    low-res mask logits, ``object_scores`` ``(N,)`` presence logits (> 0: visible), in the
    order of ``obj_ids``. An object with no output on the frame has an empty mask and
    score ``-1024``.
    """

    frame: int
    obj_ids: list[int]
    masks: np.ndarray
    logits: np.ndarray
    object_scores: np.ndarray


@dataclass
class FrameOutput:
    """One object's stored output on one frame: ``low_res`` ``(1, 1, 256, 256)`` logits,
    ``obj_ptr`` ``(1, 256)``, ``object_score`` ``(1, 1)``, and ``memory`` ``(1, 64, 64, 64)``
    bfloat16 once encoded."""

    low_res: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    memory: torch.Tensor | None = None


@dataclass
class Prompt:
    """Clicks (and box corners, labels 2 and 3) in model-input pixels, or a mask."""

    coords: torch.Tensor | None = None  # (1, N, 2)
    labels: torch.Tensor | None = None  # (1, N) int32
    mask: torch.Tensor | None = None  # (1, 1, 1024, 1024) binary float

    @property
    def num_points(self) -> int:
        return 0 if self.labels is None else self.labels.shape[1]


@dataclass
class ObjectTrack:
    """Everything the tracker keeps for one object."""

    obj_id: int
    prompts: dict[int, Prompt] = field(default_factory=dict)
    cond: dict[int, FrameOutput] = field(default_factory=dict)  # conditioning frames
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)  # near the tracking front
    # outputs of prompts whose memory is encoded at the next propagation: frame -> (output, is_cond)
    pending: dict[int, tuple[FrameOutput, bool]] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def output(self, frame: int, pending_cond: bool | None = None) -> FrameOutput | None:
        """The newest output on ``frame``: a pending one (of that kind), else stored."""
        if pending_cond is not None and frame in self.pending:
            out, is_cond = self.pending[frame]
            if is_cond == pending_cond:
                return out
        return self.cond.get(frame) or self.non_cond.get(frame)


class VideoPredictor:
    """Builds :class:`VideoSession` objects for a SAM 2 model.

    ``fill_hole_area``: background regions of at most this many low-res pixels inside a
    mask are filled (official default 8; 0 disables). ``max_sprinkle_area``: foreground
    specks of at most this many pixels are removed (default 0, off). ``precision``
    ``"bf16"`` / ``"fp16"`` opts in to faster reduced-precision compute, ``"int8"`` to bf16 with
    the image encoder's wide linear layers in int8 on the CPU (default exact fp32; see
    :mod:`anyseg.predictors.precision`).
    """

    def __init__(self, model, fill_hole_area: int = 8, max_sprinkle_area: int = 0, precision: str = "fp32") -> None:
        if getattr(model, "family", None) != "sam2":
            raise InvalidInputError("video tracking needs a SAM 2 model (e.g. sam2.1-tiny)")
        if fill_hole_area < 0 or max_sprinkle_area < 0:
            raise InvalidInputError("fill_hole_area and max_sprinkle_area must be >= 0")
        self.model = model.eval()
        self.fill_hole_area = fill_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.precision = check_precision(precision, model.device)
        # prompted and tracked masks are decoded as the image predictor decodes them
        self.decoder = decoder_copy(model, self.precision)

    def open(self, source, **video_options) -> "VideoSession":
        """Open a video file, a frame folder, a list of frames or a live iterator."""
        return VideoSession(self, open_video(source, **video_options))


class VideoSession:
    """The tracking state of one video. Create it with :meth:`VideoPredictor.open`."""

    max_obj_ptrs = 16  # object pointers attended to (official max_obj_ptrs_in_encoder)
    feature_cache_size = 2

    def __init__(self, predictor: VideoPredictor, video: VideoSource) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.video = video
        self.transform = Sam2Transform(self.model.image_size)
        self.objects: OrderedDict[int, ObjectTrack] = OrderedDict()
        self._features: OrderedDict[int, ImageFeatures] = OrderedDict()
        self._memory_pos: torch.Tensor | None = None
        self._conditioned = LastResult()  # the last conditioning: see _condition
        self._live_frames: Iterator | None = None  # a live source is pulled only as needed
        self._live_seen = -1

    # ------------------------------------------------------------------ queries
    @property
    def num_frames(self) -> int | None:
        """Frame count (``None`` for a live source that has not ended)."""
        return self.video.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the video."""
        return self.video.height, self.video.width

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_prompt(
        self,
        frame: int,
        obj_id: int,
        points=None,
        labels=None,
        box=None,
        mask=None,
        clear: bool = True,
    ) -> FrameResult:
        """Prompt object ``obj_id`` on ``frame``; returns that frame's masks for all objects.

        Give clicks (``points`` ``(N, 2)`` (x, y) video pixels with ``labels`` ``(N,)``, 1
        object / 0 background) and/or a ``box`` ``(4,)``, or a ``mask`` ``(H, W)``. With
        ``clear=False`` the clicks are added to the frame's earlier clicks. A frame that was
        already tracked is refined from its previous logits. New objects may be added at
        any time, also after propagation.
        """
        frame = self._check_frame(frame)
        obj_id = _check_obj_id(obj_id)
        if mask is not None:
            if points is not None or labels is not None or box is not None:
                raise InvalidInputError("give either a mask or points/box, not both")
            prompt = Prompt(mask=self._mask_prompt(mask))
        else:
            prompt = self._click_prompt(frame, obj_id, points, labels, box, clear)
        obj = self.objects.get(obj_id) or self.objects.setdefault(obj_id, ObjectTrack(obj_id))
        obj.prompts[frame] = prompt

        is_init_cond = frame not in obj.tracked
        reverse = obj.tracked.get(frame, False)
        is_cond = is_init_cond
        prev_logits = None
        if prompt.mask is None:
            prev = obj.output(frame, pending_cond=is_cond)
            if prev is not None:
                prev_logits = prev.low_res.clamp(-32.0, 32.0)
        out = self._run_frame(obj, frame, is_init_cond, prompt, reverse, encode_memory=False, prev_logits=prev_logits)
        obj.pending[frame] = (out, is_cond)
        return self._frame_result(frame, lambda o: o.output(frame, pending_cond=is_cond))

    @torch.inference_mode()
    def clear_prompts(self, frame: int, obj_id: int) -> FrameResult:
        """Remove ``obj_id``'s prompts on ``frame``; its output there becomes an ordinary
        tracked one. Returns the frame's masks."""
        frame = self._check_frame(frame)
        obj = self._object(obj_id)
        obj.prompts.pop(frame, None)
        obj.pending.pop(frame, None)
        out = obj.cond.pop(frame, None)
        if out is not None:
            obj.non_cond[frame] = out
            obj.tracked.pop(frame, None)
        is_cond = any(frame in o.pending and o.pending[frame][1] for o in self.objects.values())
        return self._frame_result(frame, lambda o: o.output(frame, pending_cond=is_cond))

    def remove_object(self, obj_id: int) -> None:
        """Forget an object and everything tracked for it."""
        del self.objects[self._object(obj_id).obj_id]
        self._conditioned.clear()  # it may hold the object's memories

    def reset(self) -> None:
        """Forget every object, prompt and tracking result (the video stays open)."""
        self.objects.clear()
        self._conditioned.clear()

    def close(self) -> None:
        self.reset()
        self._features.clear()
        self.video.close()

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -------------------------------------------------------------- propagation
    def propagate(self, start: int | None = None, reverse: bool = False, max_frames: int | None = None):
        """Track every object frame by frame, yielding a :class:`FrameResult` per frame.

        Starts at ``start`` (default: the earliest prompted frame), goes forward (or
        backward with ``reverse``) to the end, or for at most ``max_frames`` frames after
        the start. Nothing is kept but what tracking needs: keep the results you want.
        """
        self._preflight()
        if start is None:
            start = min(f for obj in self.objects.values() for f in obj.cond)
        start = self._check_frame(start)
        if max_frames is not None and max_frames < 0:
            raise InvalidInputError("max_frames must be >= 0")
        if reverse:
            stop = max(start - (max_frames if max_frames is not None else start), 0)
            order = range(start, stop - 1, -1) if start > 0 else range(0)
        else:
            last = start + max_frames if max_frames is not None else None
            if self.num_frames is not None:
                last = self.num_frames - 1 if last is None else min(last, self.num_frames - 1)
            order = range(start, last + 1) if last is not None else _count_from(start)
        return self._propagate(order, reverse)

    @torch.inference_mode()
    def _propagate(self, order, reverse: bool) -> Iterator[FrameResult]:
        for frame in order:
            if self.num_frames is None and not self._has_frame(frame):
                return  # a live source ended
            for obj in self.objects.values():
                if frame not in obj.cond:
                    obj.non_cond[frame] = self._run_frame(obj, frame, False, None, reverse, encode_memory=True)
                obj.tracked[frame] = reverse
                self._forget_far(obj, frame)
            yield self._frame_result(frame, lambda o: o.output(frame))

    @torch.inference_mode()
    def _preflight(self) -> None:
        """Encode the memories of prompted frames; check every object has a prompt."""
        if not self.objects:
            raise InvalidInputError("no object has a prompt yet: call add_prompt() first")
        for obj in self.objects.values():
            for is_cond in (False, True):
                for frame, (out, cond) in list(obj.pending.items()):
                    if cond != is_cond:
                        continue
                    if out.memory is None:
                        feats = self._frame_features(frame)
                        high = F.interpolate(out.low_res.float(), (self.model.image_size,) * 2, mode="bilinear", align_corners=False)
                        with self._autocast():
                            memory, _ = self.model.encode_memory(feats.embed, high, out.object_score, binarize=True)
                        out.memory = memory.to(torch.bfloat16)
                    (obj.cond if is_cond else obj.non_cond)[frame] = out
                    del obj.pending[frame]
            if not obj.cond:
                raise InvalidInputError(f"object {obj.obj_id} has no prompt on any frame; add one first")
            for frame in obj.cond:
                obj.non_cond.pop(frame, None)

    # ------------------------------------------------------------ per-frame math
    def _run_frame(
        self,
        obj: ObjectTrack,
        frame: int,
        is_init_cond: bool,
        prompt: Prompt | None,
        reverse: bool,
        encode_memory: bool,
        prev_logits: torch.Tensor | None = None,
    ) -> FrameOutput:
        model = self.model
        feats = self._frame_features(frame)
        if prompt is not None and prompt.mask is not None:
            with self._autocast():
                step = model.mask_as_output(feats.embed, feats.high_res, prompt.mask)
        else:
            with self._autocast():
                pix = self._condition(obj, frame, feats, is_init_cond, reverse)
            num_points = 0 if prompt is None else prompt.num_points
            coords = None if prompt is None else prompt.coords
            labels = None if prompt is None else prompt.labels
            step = model.forward_sam_heads(pix, feats.high_res, coords, labels, mask_input=prev_logits,
                                           multimask=num_points <= 1, decoder=self.predictor.decoder)
        memory = None
        if encode_memory:
            binarize = prompt is not None and prompt.mask is None
            high = step.high_res  # (made outside autocast)
            with self._autocast():
                memory, _ = model.encode_memory(feats.embed, high, step.object_score, binarize=binarize)
            memory = memory.to(torch.bfloat16)
        return FrameOutput(self._postprocess(step), step.obj_ptr, step.object_score, memory)

    def _condition(self, obj: ObjectTrack, frame: int, feats: ImageFeatures, is_init_cond: bool, reverse: bool):
        """The frame's features conditioned on ``obj``'s memory bank (the official policy).

        The last result is kept (:class:`LastResult`) and given again for the same inputs:
        clicks on one frame see the same bank (a click's output joins it only when tracking
        starts), so a refinement click on a tracked frame costs a decode instead of a memory
        attention (over a second on a CPU), and the decoder finds the same features again
        (see ``MaskDecoder._image_side``)."""
        memories, ptrs, offsets, max_offset = [], [], [], 1
        if not is_init_cond:
            memories, ptrs, offsets, max_offset = self._memory_bank(obj, frame, reverse)
        inputs = (feats.embed, feats.pos, *(m.features for m in memories), *(m.pos for m in memories), *ptrs)

        def compute():
            obj_ptrs = torch.stack(ptrs, dim=0) if ptrs else None
            return self.model.condition_on_memory(feats.embed, feats.pos, memories, obj_ptrs, offsets, max_offset)

        return self._conditioned.get(inputs, compute, ([m.tpos for m in memories], offsets, max_offset))

    def _memory_bank(self, obj: ObjectTrack, frame: int, reverse: bool):
        """``obj``'s memories, object pointers (each ``(1, C)``) with their frame offsets, and
        the largest offset, for conditioning ``frame`` (the official policy)."""
        model = self.model
        step = -1 if reverse else 1
        pos = self._memory_position()
        memories = [Memory(out.memory, pos, 0) for out in obj.cond.values()]
        num_maskmem = model.cfg.num_maskmem
        for t_pos in range(1, num_maskmem):
            out = obj.non_cond.get(frame - step * (num_maskmem - t_pos))
            if out is not None:
                memories.append(Memory(out.memory, pos, t_pos))

        num_frames = self.num_frames
        max_ptrs = self.max_obj_ptrs if num_frames is None else min(num_frames, self.max_obj_ptrs)
        signed = model.cfg.proj_tpos_enc_in_obj_ptrs
        offsets, ptrs = [], []
        for t, out in obj.cond.items():
            if (t >= frame) if reverse else (t <= frame):
                offsets.append((frame - t) * step if signed else abs(frame - t))
                ptrs.append(out.obj_ptr)
        for t_diff in range(1, max_ptrs):
            t = frame - step * t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = obj.non_cond.get(t)
            if out is not None:
                offsets.append(t_diff)
                ptrs.append(out.obj_ptr)
        return memories, ptrs, offsets, max(max_ptrs - 1, 1)

    def _postprocess(self, step: TrackStep) -> torch.Tensor:
        """Hole filling and sprinkle removal on the low-res logits (CPU, as configured)."""
        logits = step.low_res
        fill, sprinkle = self.predictor.fill_hole_area, self.predictor.max_sprinkle_area
        if fill <= 0 and sprinkle <= 0:
            return logits
        values = logits.float().cpu().numpy()
        if fill > 0:
            values = np.where(small_components(values <= 0, fill), 0.1, values)
        if sprinkle > 0:
            values = np.where(small_components(values > 0, sprinkle), -10.0, values)
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(logits.device, logits.dtype)

    def _autocast(self):
        return autocast(self.model.device, self.predictor.precision)

    def _memory_position(self) -> torch.Tensor:
        """Position encoding of a memory (the same for every frame and object)."""
        if self._memory_pos is None:
            md = self.model.cfg.mem_dim
            side = self.model.cfg.embedding_size
            probe = torch.zeros(1, md, side, side, device=self.model.device, dtype=self.model.dtype)
            self._memory_pos = self.model.memory_encoder.position_encoding(probe)
        return self._memory_pos

    def _forget_far(self, obj: ObjectTrack, frame: int) -> None:
        """Drop non-conditioning outputs that no later step near ``frame`` can use."""
        window = max(self.max_obj_ptrs, self.model.cfg.num_maskmem)
        for t in [t for t in obj.non_cond if abs(t - frame) > window]:
            del obj.non_cond[t]

    # ------------------------------------------------------------------ frames
    def _has_frame(self, frame: int) -> bool:
        """Pull a live source up to ``frame``; False once it has ended before it."""
        if self._live_frames is None:
            self._live_frames = iter(self.video)
        while self.video.num_frames is None and self._live_seen < frame:
            try:
                self._live_seen, _ = next(self._live_frames)
            except StopIteration:
                break
        return self._live_seen >= frame

    def _frame_features(self, frame: int) -> ImageFeatures:
        feats = self._features.get(frame)
        if feats is None:
            if self.num_frames is None:
                self._has_frame(frame)
            image = self.transform.video_frame(self.video.get(frame))
            model = self.model
            with encoding(model.device, self.predictor.precision):
                feats = model.encode_image(image[None].to(model.device, model.dtype))
            self._features[frame] = feats
            while len(self._features) > self.feature_cache_size:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(frame)
        return feats

    # ----------------------------------------------------------------- helpers
    def _frame_result(self, frame: int, output_of) -> FrameResult:
        h, w = self.size
        logits, scores = [], []
        for obj in self.objects.values():
            out = output_of(obj)
            if out is None:
                logits.append(torch.full((1, 1, *self.model.sam_prompt_encoder.mask_input_size), NO_OBJ_SCORE))
                scores.append(NO_OBJ_SCORE)
            else:
                logits.append(out.low_res.float().cpu())
                scores.append(float(out.object_score))
        if not logits:
            low_hw = self.model.sam_prompt_encoder.mask_input_size
            return FrameResult(frame, [], np.zeros((0, h, w), bool), np.zeros((0, *low_hw), np.float32),
                               np.zeros((0,), np.float32))
        low = torch.cat(logits, dim=0)
        masks = self.transform.binary_masks(low, (h, w), 0.0)
        return FrameResult(frame, self.obj_ids, masks[:, 0], low[:, 0].numpy(), np.asarray(scores, np.float32))

    def _object(self, obj_id) -> ObjectTrack:
        obj = self.objects.get(obj_id)
        if obj is None:
            raise InvalidInputError(f"unknown object id {obj_id!r}; the session has {self.obj_ids}")
        return obj

    def _check_frame(self, frame) -> int:
        if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool) or frame < 0:
            raise InvalidInputError(f"frame must be a non-negative integer, got {frame!r}")
        n = self.num_frames
        if n is not None and frame >= n:
            raise InvalidInputError(f"frame {frame} is past the end: the video has {n} frames")
        if n is None and not self._has_frame(frame):
            raise InvalidInputError(f"frame {frame} is past the end: the video has {self.num_frames} frames")
        return int(frame)

    def _click_prompt(self, frame, obj_id, points, labels, box, clear) -> Prompt:
        h, w = self.size
        if (points is None) != (labels is None):
            raise InvalidInputError("points and labels must be given together")
        if points is None and box is None:
            raise InvalidInputError("empty prompt: give points, a box or a mask")
        coords = np.zeros((0, 2), np.float32)
        lab = np.zeros((0,), np.int32)
        if points is not None:
            coords = np.asarray(points, dtype=np.float32)
            lab = np.asarray(labels)
            if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
                raise InvalidInputError(f"points must have shape (N, 2), got {coords.shape}")
            if lab.shape != (coords.shape[0],) or not ((lab == 0) | (lab == 1)).all():
                raise InvalidInputError("labels must be N values, each 1 (object) or 0 (background)")
            check_inside(coords, h, w, "point", "video")
        if box is not None:
            if not clear:
                raise InvalidInputError("a box replaces a frame's clicks: use clear=True with a box")
            b = np.asarray(box, dtype=np.float32)
            if b.shape != (4,) or b[2] < b[0] or b[3] < b[1]:
                raise InvalidInputError("box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0")
            check_inside(b.reshape(2, 2), h, w, "box corner", "video")
            coords = np.concatenate([b.reshape(2, 2), coords])
            lab = np.concatenate([np.array([2, 3]), lab])
        size = self.model.image_size
        device = self.model.device
        xy = torch.as_tensor(coords[None] / np.array([w, h], np.float32), device=device) * size
        lab_t = torch.as_tensor(lab.astype(np.int32)[None], device=device)
        if not clear and obj_id in self.objects:
            old = self.objects[obj_id].prompts.get(frame)
            if old is not None and old.coords is not None:
                xy = torch.cat([old.coords, xy], dim=1)
                lab_t = torch.cat([old.labels, lab_t], dim=1)
        return Prompt(coords=xy, labels=lab_t)

    def _mask_prompt(self, mask) -> torch.Tensor:
        m = np.asarray(mask)
        if m.shape != self.size:
            raise InvalidInputError(f"the mask must be {self.size[0]}x{self.size[1]} (H x W) like the video, got {m.shape}")
        t = torch.as_tensor(m.astype(bool), device=self.model.device)[None, None].float()
        size = self.model.image_size
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, (size, size), mode="bilinear", align_corners=False, antialias=True)
            t = (t >= 0.5).float()
        return t


def _check_obj_id(obj_id) -> int:
    if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
        raise InvalidInputError(f"object ids are integers, got {obj_id!r}")
    return int(obj_id)


def _count_from(start: int) -> Iterator[int]:
    frame = start
    while True:
        yield frame
        frame += 1
