"""Prompted segmentation of still images.

The image embedding is computed once by :meth:`ImagePredictor.set_image` (or read back
with :meth:`load_embedding`); every :meth:`predict` call then runs only the light
prompt encoder and mask decoder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from anyseg.errors import AnysegError, InvalidInputError
from anyseg.io.export import atomic_path
from anyseg.io.images import as_rgb_array
from anyseg.kernels import bound_threads
from anyseg.models.features import ImageFeatures
from anyseg.predictors.precision import PRECISIONS, check_precision, decoder_copy, encoding
from anyseg.predictors.prompts import as_float_array, check_inside
from anyseg.predictors.transforms import transform_for

EMBEDDING_FORMAT = "anyseg-embedding/1"


@dataclass
class Prediction:
    """Masks for one prompt, or for B prompts when the prompt was batched.

    ``masks``: ``(K, H, W)`` bool at the original resolution (``(B, K, H, W)`` batched);
    ``scores``: ``(K,)`` predicted IoU (``(B, K)``); ``logits``: ``(K, 256, 256)`` low-res
    logits (``(B, K, 256, 256)``), to feed back as ``mask_input``.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    @property
    def best(self) -> int:
        """Index of the highest-scoring mask (unbatched predictions)."""
        return int(np.argmax(self.scores))


def model_fingerprint(model) -> str:
    """Identifies an architecture *and* its weights, so a saved embedding is never
    reused with another model."""
    h = hashlib.sha256(repr(model.cfg).encode())
    for name, p in list(model.named_parameters())[-4:]:
        h.update(name.encode())
        h.update(np.asarray(p.detach().float().cpu().reshape(-1)[:64]).tobytes())
    return h.hexdigest()[:16]


class ImagePredictor:
    """Predicts masks from points, boxes and mask prompts on an embedded image.

    Coordinates are (x, y) pixels of the original image. ``model`` is any model from
    :func:`anyseg.load_model` (SAM 1, MobileSAM or SAM 2). ``precision`` ``"bf16"`` /
    ``"fp16"`` opts in to a faster reduced-precision image encoder and mask decoder, and
    ``"int8"`` to bf16 with the encoder's wide linear layers, the decoder's first upscaling
    product and its later attention scores in int8 on the CPU (default
    ``"fp32"``: exact; see :mod:`anyseg.predictors.precision`); the prompt encoder and the
    mask resizing stay in fp32.
    """

    def __init__(self, model, mask_threshold: float = 0.0, precision: str = "fp32") -> None:
        self.model = model.eval()
        self.precision = check_precision(precision, model.device)
        # prompts are decoded on a copy whose image side is in the reduced type; the features are kept in it
        self._decoder = decoder_copy(model, self.precision)
        self._features_dtype = PRECISIONS[self.precision] or model.dtype
        self.transform = transform_for(model)
        self.mask_threshold = mask_threshold
        self._features: ImageFeatures | None = None
        self._sizes: list[tuple[int, int]] = []

    # ----------------------------------------------------------------- embedding
    @torch.inference_mode()
    def set_images(self, images) -> None:
        """Embed a list of images in one encoder batch; select one with
        ``predict(..., image=i)``."""
        arrays = [as_rgb_array(im) for im in images]
        if not arrays:
            raise InvalidInputError("set_images() needs at least one image")
        batch = torch.stack([self.transform.image(a) for a in arrays]).to(self.model.device, self.model.dtype)
        with encoding(self.model.device, self.precision), bound_threads():
            features = self.model.encode_image(batch)
        self._features = features.to(dtype=self._features_dtype)
        self._sizes = [a.shape[:2] for a in arrays]
        self._keep_image()

    def set_image(self, image) -> None:
        """Embed one ``(H, W, 3)`` uint8 RGB array or PIL image."""
        self.set_images([image])

    @property
    def decoder(self):
        """The copy of the mask decoder that prompts are decoded with in bf16 / fp16, or
        None (fp32: the model's own); the ``decoder`` argument of ``predict_masks``."""
        return self._decoder

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first embedded image."""
        self._require_image()
        return self._sizes[0]

    def features(self, image: int = 0) -> ImageFeatures:
        """The cached encoder output of one embedded image (batch of 1)."""
        self._require_image()
        return self._features.select(self._image_index(image))

    def save_embedding(self, path: str | os.PathLike) -> None:
        """Write the cached embedding(s) to ``path`` (atomically)."""
        self._require_image()
        payload = {
            "format": EMBEDDING_FORMAT,
            "model": model_fingerprint(self.model),
            "precision": self.precision,
            "sizes": torch.tensor(self._sizes),
            "features": {k: v.cpu() for k, v in self._features.state().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def load_embedding(self, path: str | os.PathLike) -> None:
        """Restore an embedding written by :meth:`save_embedding` for this same model, in this
        predictor's precision (those of another are refused, not converted)."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InvalidInputError(f"no embedding file at {path}") from None
        except Exception as exc:
            raise InvalidInputError(f"{path} is not an anyseg embedding file ({exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != EMBEDDING_FORMAT:
            raise InvalidInputError(f"{path} is not an anyseg embedding file")
        if payload["model"] != model_fingerprint(self.model):
            raise InvalidInputError(f"{path} was computed by another model or other weights; embed the image again")
        feats = ImageFeatures.from_state(payload["features"])
        # files written before the precision was recorded: that of the features' type
        made = payload.get("precision") or ("fp32" if feats.embed.dtype == torch.float32 else "a reduced")
        if made != self.precision:
            raise InvalidInputError(f"{path} was computed in {made} precision, this predictor computes in "
                                    f"{self.precision}; embed the image again")
        self._features = feats.to(self.model.device, self._features_dtype)
        self._sizes = [tuple(int(v) for v in hw) for hw in payload["sizes"].tolist()]
        self._keep_image()

    # ---------------------------------------------------------------- prediction
    @torch.inference_mode()
    def predict(
        self,
        points=None,
        labels=None,
        box=None,
        mask_input=None,
        multimask: bool = True,
        image: int = 0,
    ) -> Prediction:
        """Masks for a prompt on the embedded image number ``image``.

        - ``points``: ``(N, 2)`` (x, y) pixels, with ``labels`` ``(N,)`` (1 foreground,
          0 background); or ``(B, N, 2)`` / ``(B, N)`` for B prompts at once.
        - ``box``: ``(4,)`` XYXY pixels, or ``(B, 4)`` for B prompts at once.
        - ``mask_input``: ``(1, 256, 256)`` low-res logits of an earlier prediction
          (``(B, 1, 256, 256)`` batched).
        - ``multimask``: three candidate masks (K = 3) instead of one (K = 1).
        """
        self._require_image()
        index = self._image_index(image)
        hw = self._sizes[index]
        coords, lab, boxes, masks_in, batched = self._prompt_tensors(points, labels, box, mask_input, hw)
        with bound_threads():
            out = self.model.predict_masks(
                self._features.select(index), coords, lab, boxes, masks_in, multimask, decoder=self.decoder
            )
            logits = out.masks.float()
            masks = self.transform.binary_masks(logits, hw, self.mask_threshold)
        if self.transform.low_res_clamp is not None:  # in place: the masks are made already
            logits = logits.clamp_(-self.transform.low_res_clamp, self.transform.low_res_clamp)
        scores = out.iou.float().cpu().numpy()
        logits = logits.cpu().numpy()
        if not batched:
            masks, scores, logits = masks[0], scores[0], logits[0]
        return Prediction(masks, scores, logits)

    # ------------------------------------------------------------------- helpers
    def _keep_image(self) -> None:
        """The decoding work that depends on the first image alone, done now rather than on
        its first prompt (``model.keep_image``): the first click answers as fast as the next."""
        with torch.inference_mode(), bound_threads():
            self.model.keep_image(self._features.select(0), decoder=self.decoder)

    def _require_image(self) -> None:
        if self._features is None:
            raise AnysegError("no image is set: call set_image() (or load_embedding()) first")

    def _image_index(self, image: int) -> int:
        if not isinstance(image, (int, np.integer)) or not 0 <= image < len(self._sizes):
            raise InvalidInputError(f"image index {image!r} is out of range: {len(self._sizes)} image(s) are set")
        return int(image)

    def _prompt_tensors(self, points, labels, box, mask_input, hw):
        """Validate user prompts; return model-input tensors and whether they are batched."""
        device, h, w = self.model.device, hw[0], hw[1]
        coords = lab = boxes = masks_in = None
        batch_sizes = []
        if points is not None or labels is not None:
            if points is None or labels is None:
                raise InvalidInputError("points and labels must be given together")
            pts = as_float_array(points, "points")
            lbl = np.asarray(labels)
            if pts.ndim == 2:
                pts, lbl = pts[None], lbl[None] if lbl.ndim == 1 else lbl
            else:
                batch_sizes.append(pts.shape[0])
            if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] == 0:
                raise InvalidInputError(f"points must have shape (N, 2) or (B, N, 2), got {np.shape(points)}")
            if lbl.shape != pts.shape[:2]:
                raise InvalidInputError(f"labels must have shape {pts.shape[1:2]} to match the points, got {np.shape(labels)}")
            if not ((lbl == 0) | (lbl == 1)).all():
                raise InvalidInputError("labels must be 1 (foreground) or 0 (background)")
            check_inside(pts, h, w, "point")
            coords = self.transform.coords(torch.as_tensor(pts, device=device), hw)
            lab = torch.as_tensor(lbl.astype(np.int32), device=device)
        if box is not None:
            b = as_float_array(box, "box")
            if b.ndim == 1:
                b = b[None]
            else:
                batch_sizes.append(b.shape[0])
            if b.ndim != 2 or b.shape[-1] != 4 or b.shape[0] == 0:
                raise InvalidInputError(f"box must have shape (4,) or (B, 4) as x0, y0, x1, y1; got {np.shape(box)}")
            if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
                raise InvalidInputError("box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0")
            check_inside(b.reshape(-1, 2), h, w, "box corner")
            boxes = self.transform.coords(torch.as_tensor(b, device=device).reshape(-1, 2, 2), hw).reshape(-1, 4)
        if mask_input is not None:
            m = as_float_array(mask_input, "mask_input")
            if m.ndim == 2:
                m = m[None]
            if m.ndim == 3:
                m = m[None]
            else:
                batch_sizes.append(m.shape[0])
            low = 4 * self.model.image_size // 16
            if m.ndim != 4 or m.shape[1:] != (1, low, low):
                raise InvalidInputError(f"mask_input must be low-res logits of shape (1, {low}, {low}), got {np.shape(mask_input)}")
            masks_in = torch.as_tensor(m, device=device)
        if coords is None and boxes is None and masks_in is None:
            raise InvalidInputError("empty prompt: give points, a box or a mask_input")
        sizes = set(batch_sizes)
        if len(sizes) > 1:
            raise InvalidInputError(f"batched prompts disagree on the batch size: {sorted(sizes)}")
        batch = sizes.pop() if sizes else 1
        coords, lab, boxes, masks_in = (
            _broadcast(t, batch) for t in (coords, lab, boxes, masks_in)
        )
        dtype = self.model.dtype
        masks_in = None if masks_in is None else masks_in.to(dtype)
        return coords, lab, boxes, masks_in, bool(batch_sizes)


def _broadcast(t: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if t is None or t.shape[0] == batch:
        return t
    return t.expand(batch, *t.shape[1:])
