"""Prompt encoder shared by SAM and SAM 2: points, box corners and mask inputs to
sparse and dense embeddings for the mask decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from anyseg.kernels import loops_apply, mask_downscale
from anyseg.models.common import LayerNorm2d
from anyseg.models.position import PositionEmbeddingRandom

# Point labels understood by the prompt encoder.
LABEL_PAD, LABEL_NEG, LABEL_POS, LABEL_BOX_TL, LABEL_BOX_BR = -1, 0, 1, 2, 3


@dataclass
class MaskEmbedding:
    """Mask prompts' dense embedding, factored: ``features @ weight^T + bias``, where
    ``features`` ``(B, h w, c)`` are the mask downscaling's output before its last (1 x 1)
    convolution, as tokens, and ``weight`` ``(C, c)`` and ``bias`` ``(C,)`` that
    convolution's; ``size`` is ``(h, w)``. ``no_mask``: the dense embedding without a mask
    prompt, ``(1, C, h, w)``, as :meth:`PromptEncoder.forward` gives it. The mask decoder
    shifts the projections it made of an image once by the embedding's few channels (c =
    16) instead of projecting the image again (``MaskDecoder._image_side``)."""

    features: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    size: tuple[int, int]
    no_mask: torch.Tensor

    def shift_factors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding less the no-mask one, of one mask, as the product ``x @ weight^T``:
        ``x`` ``(h w, c + 1)`` the features and a channel of ones, in ``dtype``; ``weight``
        ``(C, c + 1)`` float32, the last convolution's weight and its bias less the no-mask
        vector."""
        n, c = self.features.shape[1:]
        x = self.features.new_empty(n, c + 1, dtype=dtype)
        x[:, :c] = self.features[0]
        x[:, c] = 1
        shift = self.bias - self.no_mask[0, :, 0, 0]
        return x, torch.cat([self.weight, shift[:, None]], dim=1).float()

    def dense(self) -> torch.Tensor:
        """The embedding ``(B, C, h, w)``, channels last: the decoder's ``(B, h w, C)`` token
        layout (added to image features in that layout; a map in the other takes a
        transposing pass of a few ms)."""
        tokens = F.linear(self.features, self.weight, self.bias)
        return tokens.transpose(1, 2).reshape(len(tokens), -1, *self.size)


class PromptEncoder(nn.Module):
    """Encodes prompts in the coordinates of the ``input_size`` model input.

    Box prompts are two points with labels 2 (top-left) and 3 (bottom-right): the
    embedding is the same as SAM's separate box path. Label -1 marks padding.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        embedding_size: tuple[int, int] = (64, 64),
        input_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.embedding_size = embedding_size
        self.input_size = input_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * embedding_size[0], 4 * embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: torch.Tensor | None = None

    def dense_pe(self) -> torch.Tensor:
        """Position encoding of the image-embedding grid: ``(1, C, h, w)`` (cached)."""
        pe = self._dense_pe
        weight = self.pe_layer.positional_encoding_gaussian_matrix
        if self.training or pe is None or pe.device != weight.device or pe.dtype != weight.dtype:
            # channels-last: the decoder reads it as (1, h w, C) tokens
            pe = self.pe_layer(self.embedding_size).unsqueeze(0).contiguous(memory_format=torch.channels_last)
            self._dense_pe = None if self.training else pe
        return pe

    def _load_from_state_dict(self, *args, **kwargs):
        self._dense_pe = None
        super()._load_from_state_dict(*args, **kwargs)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``coords`` ``(B, N, 2)`` pixel (x, y) of the model input, ``labels`` ``(B, N)``
        -> ``(B, N, embed_dim)``."""
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_size)  # pixel centres
        # a padding point is its embedding alone, any other point its position + its label's
        table = torch.cat([self.not_a_point_embed.weight, *(t.weight for t in self.point_embeddings)])
        is_point = (labels != LABEL_PAD).unsqueeze(-1).to(emb.dtype)
        return emb * is_point + F.embedding(labels.long() - LABEL_PAD, table)

    def embed_masks(self, masks: torch.Tensor) -> MaskEmbedding:
        """``(B, 1, 4h, 4w)`` mask logits -> their :class:`MaskEmbedding` (``(B, embed_dim,
        h, w)`` by its ``dense()``)."""
        *downscale, last = self.mask_downscaling
        h, w = masks.shape[-2] // 4, masks.shape[-1] // 4
        if loops_apply(masks, last.weight, dtype=torch.float32):  # the modules in one compiled pass
            features = mask_downscale(masks, self.mask_downscaling)
        else:
            x = masks
            for layer in downscale:
                x = layer(x)
            features = x.flatten(2).transpose(1, 2).contiguous()
        c = features.shape[-1]
        return MaskEmbedding(features, last.weight.reshape(-1, c), last.bias, (h, w), self.no_mask(1))

    def no_mask(self, batch_size: int) -> torch.Tensor:
        """The dense embedding without a mask prompt: ``(B, C, h, w)``, one vector expanded."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch_size, -1, *self.embedding_size)

    def forward(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        masks: torch.Tensor | None,
        batch_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | MaskEmbedding]:
        """Returns sparse ``(B, N, C)`` and dense ``(B, C, h, w)`` embeddings (for ``masks``,
        a :class:`MaskEmbedding`, whose ``dense()`` that is).

        Padding (label -1 points) is the caller's choice: SAM 1 pads only when there
        is no box, SAM 2 always pads.
        """
        if coords is not None:
            batch_size = coords.shape[0]
            sparse = self.embed_points(coords, labels)
        else:
            if masks is not None:
                batch_size = masks.shape[0]
            weight = self.no_mask_embed.weight
            sparse = torch.empty((batch_size, 0, self.embed_dim), device=weight.device, dtype=weight.dtype)
        return sparse, self.no_mask(batch_size) if masks is None else self.embed_masks(masks)
