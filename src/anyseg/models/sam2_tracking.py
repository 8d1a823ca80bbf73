"""The per-frame math of SAM 2's video tracker: prompting on memory-conditioned
features, mask prompts taken as outputs, memory attention over the memory bank, and
memory encoding. Which memories to use is the video predictor's policy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from anyseg.models.mask_decoder import MaskDecoder

NO_OBJ_SCORE = -1024.0  # mask logits of an object judged absent


@dataclass
class TrackStep:
    """One object's (or a batch of B objects') outputs on one frame.

    ``low_res`` ``(B, 1, 256, 256)`` mask logits of the chosen mask (``high_res`` at the
    model's ``image_size``); ``obj_ptr`` ``(B, 256)`` the object pointer; ``object_score``
    ``(B, 1)`` presence logits. ``high``: ``high_res`` when given or made.
    """

    low_res: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    image_size: int
    high: torch.Tensor | None = None

    @property
    def high_res(self) -> torch.Tensor:
        """``(B, 1, S, S)`` mask logits: ``low_res`` upsampled, made when first asked for
        (only a memory is made from them; a click encodes none)."""
        if self.high is None:
            size = (self.image_size, self.image_size)
            self.high = F.interpolate(self.low_res, size, mode="bilinear", align_corners=False)
        return self.high


@dataclass
class Memory:
    """A memory-bank entry for memory attention: ``features`` and ``pos`` ``(B, 64, h, w)``
    and its temporal slot ``tpos`` (0 = a conditioning frame, else frames before)."""

    features: torch.Tensor
    pos: torch.Tensor
    tpos: int


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """``(N,)`` positions -> ``(N, dim)``: sines then cosines (not interleaved)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    angles = positions.unsqueeze(-1) / dim_t
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Sam2TrackerMixin:
    """Tracking methods of :class:`anyseg.models.sam2.Sam2Model` (which provides the
    modules and ``cfg`` they use)."""

    def forward_sam_heads(
        self,
        feat: torch.Tensor,
        high_res: list[torch.Tensor],
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
        decoder: MaskDecoder | None = None,
    ) -> TrackStep:
        """Prompt encoder + mask decoder on (memory-conditioned) features.

        ``feat`` ``(B, 256, 64, 64)``; ``coords`` ``(B, N, 2)`` model-input pixels and
        ``labels`` ``(B, N)`` (box corners as labels 2, 3); ``mask_input`` ``(B, 1, h, w)``
        logits (resized to 256 x 256 if needed). ``decoder``: a copy of the mask decoder to
        decode with instead (:meth:`MaskDecoder.copy_in`, called outside autocast).
        """
        b = feat.shape[0]
        if coords is None:
            coords = feat.new_zeros(b, 1, 2)
            labels = torch.full((b, 1), -1, dtype=torch.int32, device=feat.device)
        coords, labels = self.prompt_tokens(coords, labels, None)
        prompt = self.sam_prompt_encoder
        if mask_input is not None and tuple(mask_input.shape[-2:]) != prompt.mask_input_size:
            mask_input = F.interpolate(
                mask_input.float(), prompt.mask_input_size, mode="bilinear", align_corners=False, antialias=True
            )
        sparse, dense = prompt(coords, labels, mask_input)
        out = (self.sam_mask_decoder if decoder is None else decoder)(feat, prompt.dense_pe(), sparse, dense, multimask,
                                                                      high_res)
        present = out.object_score > 0
        low_multi = torch.where(present[:, None, None], out.masks, NO_OBJ_SCORE).float()
        if multimask:
            best = torch.argmax(out.iou, dim=-1)
            rows = torch.arange(b, device=feat.device)
            low = low_multi[rows, best].unsqueeze(1)
            token = out.tokens[rows, best] if out.tokens.shape[1] > 1 else out.tokens[:, 0]
        else:
            low, token = low_multi, out.tokens[:, 0]
        presence = present.float()
        obj_ptr = presence * self.obj_ptr_proj(token) + (1 - presence) * self.no_obj_ptr
        return TrackStep(low, obj_ptr, out.object_score, self.image_size)

    def mask_as_output(self, feat: torch.Tensor, high_res: list[torch.Tensor], mask: torch.Tensor) -> TrackStep:
        """A mask prompt taken as the output itself: ``mask`` ``(B, 1, 1024, 1024)`` binary.
        The object pointer still comes from the decoder, prompted with the mask."""
        m = mask.float()
        high = m * 20.0 - 10.0
        low = F.interpolate(high, (high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        ptr = self.forward_sam_heads(feat, high_res, mask_input=self.mask_downsample(m)).obj_ptr
        presence = torch.any(m.flatten(1) > 0.0, dim=1, keepdim=True).float()
        obj_ptr = presence * ptr + (1 - presence) * self.no_obj_ptr
        return TrackStep(low, obj_ptr, 20.0 * presence - 10.0, self.image_size, high)

    def condition_on_memory(
        self,
        feat: torch.Tensor,
        pos: torch.Tensor,
        memories: list[Memory],
        obj_ptrs: torch.Tensor | None = None,
        ptr_offsets: list[int] | None = None,
        max_ptr_offset: int = 15,
    ) -> torch.Tensor:
        """Memory attention of a frame's features to the memory bank.

        ``feat``, ``pos`` ``(B, 256, 64, 64)``; ``obj_ptrs`` ``(N, B, 256)`` with their
        frame offsets ``ptr_offsets`` (signed, in the tracking direction; SAM 2.1 only). Returns ``(B, 256, 64, 64)``. With no memory
        at all (a first conditioning frame) the result is ``feat + no_mem_embed``.
        """
        b, c, h, w = feat.shape
        if not memories and obj_ptrs is None:
            return feat + self.no_mem_embed.reshape(1, -1, 1, 1)
        mem, mem_pos = [], []
        num_maskmem = self.cfg.num_maskmem
        for m in memories:
            mem.append(m.features.flatten(2).transpose(1, 2))
            tpos = self.maskmem_tpos_enc[num_maskmem - m.tpos - 1].reshape(1, 1, -1)
            mem_pos.append(m.pos.flatten(2).transpose(1, 2) + tpos)
        num_ptr_tokens = 0
        if obj_ptrs is not None:
            md = self.cfg.mem_dim
            if self.cfg.proj_tpos_enc_in_obj_ptrs:
                offsets = torch.tensor(ptr_offsets, device=feat.device)
                ptr_pos = self.obj_ptr_tpos_proj(sine_1d(offsets / max_ptr_offset, c))
                ptr_pos = ptr_pos.unsqueeze(1).expand(-1, b, md)
            else:
                ptr_pos = obj_ptrs.new_zeros(obj_ptrs.shape[0], b, md)
            split = c // md
            # each 256-d pointer becomes `split` 64-d tokens
            ptrs = obj_ptrs.reshape(-1, b, split, md).permute(0, 2, 1, 3).flatten(0, 1)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
            mem.append(ptrs.transpose(0, 1))
            mem_pos.append(ptr_pos.transpose(0, 1))
            num_ptr_tokens = ptrs.shape[0]
        memory = torch.cat([m.to(feat.dtype) for m in mem], dim=1)
        memory_pos = torch.cat([p.to(feat.dtype) for p in mem_pos], dim=1)
        x = feat.flatten(2).transpose(1, 2)
        x_pos = pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(x, x_pos, memory, memory_pos, num_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def encode_memory(
        self, feat: torch.Tensor, high_res_masks: torch.Tensor, object_score: torch.Tensor, binarize: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of a frame: raw features ``(B, 256, 64, 64)`` fused with its mask logits
        ``(B, 1, 1024, 1024)`` -> ``(B, 64, 64, 64)`` features and position encoding."""
        cfg = self.cfg
        mask = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        mask = mask * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(feat, mask)
        if cfg.no_obj_embed_spatial:
            absent = 1 - (object_score > 0).float()
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, pos
