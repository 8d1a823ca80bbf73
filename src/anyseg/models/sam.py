"""SAM (ViT-B/L/H) and MobileSAM (TinyViT-5M): an image encoder, the prompt encoder and
the mask decoder, with the module names of the official checkpoints (``image_encoder``,
``prompt_encoder``, ``mask_decoder``) so they load strictly and unmodified.

The two families differ only in the encoder; both embed a 1024 x 1024 input (the image's
longest side resized to 1024, then padded) to a ``(256, 64, 64)`` map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from anyseg.models.features import ImageFeatures
from anyseg.models.mask_decoder import DecoderOutput, MaskDecoder, MaskDecoderConfig
from anyseg.models.prompt_encoder import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_PAD, PromptEncoder
from anyseg.models.tiny_vit import TINY_VIT_5M, TinyViTConfig, TinyViTImageEncoder
from anyseg.models.vit import VIT_B, VIT_H, VIT_L, ViTConfig, ViTImageEncoder


@dataclass(frozen=True)
class SamConfig:
    """A SAM 1 architecture: the encoder's config (:class:`ViTConfig` or
    :class:`TinyViTConfig`) plus the prompt encoder and mask decoder settings.

    The input size is the encoder's ``img_size``; the embedding grid is what the encoder
    produces from it (64 x 64 for every official model).
    """

    encoder: ViTConfig | TinyViTConfig
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder: MaskDecoderConfig = field(default_factory=lambda: MaskDecoderConfig(lin_mlp=True))
    mask_threshold: float = 0.0

    @property
    def image_size(self) -> int:
        return self.encoder.img_size

    @property
    def embedding_size(self) -> int:
        """Tokens per side of the image embedding."""
        if isinstance(self.encoder, TinyViTConfig):
            return self.encoder.stage_grids()[-1]
        return self.encoder.grid_size


PRESETS: dict[str, SamConfig] = {
    "sam_vit_b": SamConfig(encoder=VIT_B),
    "sam_vit_l": SamConfig(encoder=VIT_L),
    "sam_vit_h": SamConfig(encoder=VIT_H),
    "mobile_sam_vit_t": SamConfig(encoder=TINY_VIT_5M),
}


class SamModel(nn.Module):
    """SAM 1 / MobileSAM weights and per-image math; pre/post-processing lives in the
    predictors (:class:`~anyseg.predictors.transforms.Sam1Transform`)."""

    family = "sam"

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        if cfg.encoder.out_chans != cfg.prompt_embed_dim or cfg.decoder.dim != cfg.prompt_embed_dim:
            raise ValueError("the encoder's out_chans, prompt_embed_dim and the decoder's dim must agree")
        self.cfg = cfg
        self.image_size = cfg.image_size
        self.mask_threshold = cfg.mask_threshold
        if isinstance(cfg.encoder, TinyViTConfig):
            self.image_encoder: nn.Module = TinyViTImageEncoder(cfg.encoder)
        else:
            self.image_encoder = ViTImageEncoder(cfg.encoder)
        grid = (cfg.embedding_size, cfg.embedding_size)
        self.prompt_encoder = PromptEncoder(
            cfg.prompt_embed_dim, grid, (cfg.image_size, cfg.image_size), cfg.mask_in_chans
        )
        self.mask_decoder = MaskDecoder(cfg.decoder)

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.no_mask_embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt_encoder.no_mask_embed.weight.dtype

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """``(B, 3, S, S)`` normalised, padded images (S = ``image_size``) ->
        :class:`ImageFeatures` with ``embed`` ``(B, 256, 64, 64)`` (channels-last in memory:
        the mask decoder reads it as ``(B, 64 * 64, 256)`` tokens on every prompt)."""
        return ImageFeatures(self.image_encoder(images).contiguous(memory_format=torch.channels_last))

    def prompt_tokens(
        self, coords: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """SAM 1's token layout: points first, one padding point only when there is no
        box, then the two box corners (labels 2 and 3; the same embedding as SAM 1's
        separate box path).

        ``coords`` ``(B, N, 2)``, ``labels`` ``(B, N)``, ``boxes`` ``(B, 4)``, all in
        model-input pixels. Returns ``(B, N', 2)`` coordinates and ``(B, N')`` labels.
        """
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        if coords is not None:
            b = coords.shape[0]
            parts.append((coords, labels.to(torch.int32)))
            if boxes is None:
                pad_label = torch.full((b, 1), LABEL_PAD, dtype=torch.int32, device=coords.device)
                parts.append((coords.new_zeros(b, 1, 2), pad_label))
        if boxes is not None:
            box_labels = torch.tensor([[LABEL_BOX_TL, LABEL_BOX_BR]], dtype=torch.int32, device=boxes.device)
            parts.append((boxes.reshape(-1, 2, 2), box_labels.expand(boxes.shape[0], -1)))
        if not parts:
            return None, None
        return torch.cat([c for c, _ in parts], dim=1), torch.cat([lab for _, lab in parts], dim=1)

    def predict_masks(
        self,
        features: ImageFeatures,
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = True,
        decoder: MaskDecoder | None = None,
    ) -> DecoderOutput:
        """Prompted masks on one image (``features`` of batch 1).

        Prompts are batched over B (``coords`` ``(B, N, 2)`` with ``labels`` ``(B, N)``,
        ``boxes`` ``(B, 4)``, ``mask_input`` ``(B, 1, 256, 256)`` logits), coordinates in
        model-input pixels. ``decoder``: a copy of the mask decoder to decode with instead
        (:meth:`MaskDecoder.copy_in`). Returns ``masks`` ``(B, K, 256, 256)`` logits and ``iou``
        ``(B, K)``, with K = 3 (``multimask``) or 1.
        """
        coords, labels = self.prompt_tokens(coords, labels, boxes)
        batch = 1 if mask_input is None else mask_input.shape[0]
        sparse, dense = self.prompt_encoder(coords, labels, mask_input, batch_size=batch)
        decoder = self.mask_decoder if decoder is None else decoder
        return decoder(features.embed, self.prompt_encoder.dense_pe(), sparse, dense, multimask,
                       object_score=False, tokens=False, project=True)

    def keep_image(self, features: ImageFeatures, decoder: MaskDecoder | None = None) -> None:
        """Do now the decoding work that depends on the image alone, kept for the prompts
        on ``features`` (batch of 1) that follow (:meth:`MaskDecoder.keep_image`)."""
        decoder = self.mask_decoder if decoder is None else decoder
        decoder.keep_image(features.embed, self.prompt_encoder.dense_pe(), self.prompt_encoder.no_mask(1))


def build_sam(preset: str | SamConfig, **overrides) -> SamModel:
    """Build an (uninitialised) SAM 1 / MobileSAM model from a preset name or a config.

    A reduced architecture is a derived config, e.g.
    ``replace(PRESETS["sam_vit_b"], encoder=replace(VIT_B, embed_dim=192, depth=4, ...))``.
    """
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    if overrides:
        cfg = replace(cfg, **overrides)
    return SamModel(cfg)
