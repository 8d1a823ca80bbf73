"""SAM 2 / SAM 2.1: a Hiera image encoder, SAM's prompt encoder and mask decoder
(with high-resolution skips and an object-score head), and the memory modules the
video tracker uses. Module names follow the official checkpoints, so they load
strictly and unmodified."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from anyseg.models.common import MLP, Linear
from anyseg.models.features import ImageFeatures
from anyseg.models.fpn import Sam2ImageEncoder
from anyseg.models.hiera import HieraConfig
from anyseg.models.mask_decoder import DecoderOutput, MaskDecoder, MaskDecoderConfig
from anyseg.models.memory_attention import MemoryAttention
from anyseg.models.memory_encoder import MemoryEncoder
from anyseg.models.prompt_encoder import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_PAD, PromptEncoder
from anyseg.models.sam2_tracking import Sam2TrackerMixin

SAM2_DECODER = MaskDecoderConfig(
    use_high_res_features=True,
    iou_prediction_use_sigmoid=True,
    pred_obj_scores=True,
    pred_obj_scores_mlp=True,
    use_multimask_token_for_obj_ptr=True,
    dynamic_multimask_via_stability=True,
)


@dataclass(frozen=True)
class Sam2Config:
    trunk: HieraConfig
    version: str = "2.1"  # "2" or "2.1"
    image_size: int = 1024
    backbone_stride: int = 16
    hidden_dim: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    decoder: MaskDecoderConfig = field(default=SAM2_DECODER)

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.backbone_stride

    @property
    def no_obj_embed_spatial(self) -> bool:
        """SAM 2.1 adds a learned embedding to memories of frames without the object."""
        return self.version == "2.1"

    @property
    def proj_tpos_enc_in_obj_ptrs(self) -> bool:
        """SAM 2.1 gives object pointers a projected, signed temporal encoding; SAM 2
        gives them none."""
        return self.version == "2.1"


_TRUNKS = {
    "t": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                     window_pos_embed_bkg_spatial_size=(7, 7)),
    "s": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                     window_pos_embed_bkg_spatial_size=(7, 7)),
    "b+": HieraConfig(embed_dim=112, num_heads=2),
    "l": HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                     window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8)),
}

PRESETS: dict[str, Sam2Config] = {}
for _size, _trunk in _TRUNKS.items():
    PRESETS[f"sam2_hiera_{_size}"] = Sam2Config(trunk=_trunk, version="2")
    PRESETS[f"sam2.1_hiera_{_size}"] = Sam2Config(trunk=_trunk, version="2.1")


class Sam2Model(Sam2TrackerMixin, nn.Module):
    """SAM 2 weights and per-frame math. Pre/post-processing and tracking state live in
    the predictors."""

    family = "sam2"

    def __init__(self, cfg: Sam2Config) -> None:
        super().__init__()
        self.cfg = cfg
        d, m = cfg.hidden_dim, cfg.mem_dim
        self.image_size = cfg.image_size
        self.image_encoder = Sam2ImageEncoder(cfg.trunk, d)
        self.sam_prompt_encoder = PromptEncoder(
            d, (cfg.embedding_size, cfg.embedding_size), (cfg.image_size, cfg.image_size)
        )
        self.sam_mask_decoder = MaskDecoder(cfg.decoder)
        self.memory_attention = MemoryAttention(d, m)
        self.memory_encoder = MemoryEncoder(d, m)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m))
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(d, d, d, 3)
        if cfg.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = Linear(d, m)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.no_mem_embed.dtype

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """``(B, 3, 1024, 1024)`` normalised images -> :class:`ImageFeatures`."""
        decoder = self.sam_mask_decoder
        embed, high_res = self.image_encoder(images, decoder.conv_s0, decoder.conv_s1)
        return ImageFeatures(embed, high_res, self.image_encoder.neck.position_encoding(embed))

    def prompt_tokens(
        self, coords: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """SAM 2's token layout: box corners first, then points, then one padding point.

        ``coords`` ``(B, N, 2)``, ``labels`` ``(B, N)``, ``boxes`` ``(B, 4)``, all in
        model-input pixels. Returns ``(B, N', 2)`` coordinates and ``(B, N')`` labels.
        """
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[LABEL_BOX_TL, LABEL_BOX_BR]], dtype=torch.int32, device=boxes.device)
            box_labels = box_labels.expand(box_coords.shape[0], -1)
            if coords is None:
                coords, labels = box_coords, box_labels
            else:
                coords = torch.cat([box_coords, coords], dim=1)
                labels = torch.cat([box_labels, labels.to(torch.int32)], dim=1)
        if coords is None:
            return None, None
        b = coords.shape[0]
        coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], dim=1)
        labels = torch.cat([labels.to(torch.int32), labels.new_full((b, 1), LABEL_PAD, dtype=torch.int32)], dim=1)
        return coords, labels

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
        """Prompted masks on one image (``features`` of batch 1), as the image predictor
        computes them: ``no_mem_embed`` is added to the embedding.

        Prompts are batched over B (``coords`` ``(B, N, 2)``, ``boxes`` ``(B, 4)``,
        ``mask_input`` ``(B, 1, 256, 256)`` logits) in model-input pixels. ``decoder``: a
        copy of the mask decoder to decode with instead (:meth:`MaskDecoder.copy_in`).
        Returns ``masks`` ``(B, K, 256, 256)`` logits, ``iou`` ``(B, K)`` (no object score:
        the image predictor does not use it).
        """
        coords, labels = self.prompt_tokens(coords, labels, boxes)
        batch = 1
        for t in (coords, mask_input):
            if t is not None:
                batch = t.shape[0]
        sparse, dense = self.sam_prompt_encoder(coords, labels, mask_input, batch_size=batch)
        decoder = self.sam_mask_decoder if decoder is None else decoder
        return decoder(features.embed, self.sam_prompt_encoder.dense_pe(), sparse, dense, multimask,
                       features.high_res, image_offset=self.no_mem_embed.reshape(-1),
                       object_score=False, tokens=False, project=True)

    def keep_image(self, features: ImageFeatures, decoder: MaskDecoder | None = None) -> None:
        """Do now the decoding work that depends on the image alone, kept for the prompts
        on ``features`` (batch of 1) that follow (:meth:`MaskDecoder.keep_image`)."""
        decoder = self.sam_mask_decoder if decoder is None else decoder
        encoder = self.sam_prompt_encoder
        decoder.keep_image(features.embed, encoder.dense_pe(), encoder.no_mask(1), features.high_res,
                           self.no_mem_embed.reshape(-1))

    @property
    def mask_decoder(self) -> MaskDecoder:
        """The mask decoder (named ``sam_mask_decoder`` in SAM 2 checkpoints)."""
        return self.sam_mask_decoder


def build_sam2(preset: str | Sam2Config, **overrides) -> Sam2Model:
    """Build an (uninitialised) SAM 2 model from a preset name or a config."""
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    if overrides:
        cfg = replace(cfg, **overrides)
    return Sam2Model(cfg)
