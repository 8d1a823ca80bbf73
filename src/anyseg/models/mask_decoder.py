"""SAM's mask decoder: output tokens + prompt tokens attend to the image embedding,
then hypernetwork MLPs turn the mask tokens into mask logits at 4x resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anyseg import kernels
from anyseg.kernels import layer_norm, loops_apply, mask_product, mlp_pack, token_mlps, tokens_apply
from anyseg.models.common import (INT8_AVAILABLE, MLP, LastResult, LayerNorm2d, Linear, int8_product,
                                  parameters_of, quantize_weight)
from anyseg.models.prompt_encoder import MaskEmbedding
from anyseg.models.two_way_transformer import ImageProjections, TwoWayTransformer


@dataclass(frozen=True)
class MaskDecoderConfig:
    dim: int = 256
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    use_high_res_features: bool = False  # SAM 2: skip connections from the stride-4/8 maps
    iou_prediction_use_sigmoid: bool = False
    pred_obj_scores: bool = False  # SAM 2: an object-presence token and head
    pred_obj_scores_mlp: bool = False
    use_multimask_token_for_obj_ptr: bool = False
    # SAM 2: when one mask is asked for and the single-mask output is unstable,
    # answer with the best of the multimask outputs instead.
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    lin_mlp: bool = False  # SAM 1 checkpoints name the token MLPs' layers lin1/lin2


@dataclass
class DecoderOutput:
    """``masks`` ``(B, M, 4h, 4w)`` logits (of the M mask tokens asked for), ``iou``
    ``(B, K)``, ``tokens`` ``(B, K', C)`` (the mask tokens the object pointer is made from),
    ``object_score`` ``(B, 1)`` logits (those two None when not asked for)."""

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score: torch.Tensor | None


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks binarised at ``threshold + offset`` and ``threshold - offset``:
    ``(..., H, W)`` -> ``(...)``; 1 where both are empty."""
    inter = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int32).float()
    union = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int32).float()
    return torch.where(union > 0, inter / union, torch.ones_like(inter))


@dataclass
class StackedMLPs:
    """K MLPs of the same shape, stacked once: per layer, the weights ``(K, in, out)`` and
    biases ``(K, 1, out)`` for torch's batched products, and the layers' widths and
    parameters for the compiled loop (:func:`~anyseg.kernels.mlp_pack`)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    dims: np.ndarray
    pack: np.ndarray

    @classmethod
    def of(cls, mlps: list[MLP]) -> "StackedMLPs":
        layers = [(torch.stack([mlp.layers[i].weight.t() for mlp in mlps]).contiguous(),
                   torch.stack([mlp.layers[i].bias for mlp in mlps])[:, None])
                  for i in range(len(mlps[0].layers))]
        return cls(layers, *mlp_pack(mlps))

    def __call__(self, x: torch.Tensor, act: nn.Module, wanted: range | None = None) -> torch.Tensor:
        """``x`` ``(K', B, C)`` through the ``wanted`` MLPs (a step-1 range, all by default),
        ``act`` between the layers: ``(K', B, out)``. float32 ReLU MLPs on the CPU without
        gradients through the compiled loop (:func:`~anyseg.kernels.token_mlps`), else one
        batched product per layer."""
        wanted = range(len(self.layers[0][0])) if wanted is None else wanted
        if isinstance(act, nn.ReLU) and tokens_apply(x):
            return token_mlps(x, self.dims, self.pack, wanted.start)
        last = len(self.layers) - 1
        for i, (weight, bias) in enumerate(self.layers):
            x = torch.baddbmm(bias[wanted.start:wanted.stop], x, weight[wanted.start:wanted.stop])
            x = act(x) if i < last else x
        return x


def _deconv_weight(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2, stride-2 transposed convolution's weight ``(Cin, Cout, 2, 2)`` as one
    ``(Cin, 4 * Cout)`` matrix whose columns run over (di, dj, Cout)."""
    cin, cout = conv.weight.shape[:2]
    return conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)


def _to_blocks(x: torch.Tensor, levels: int) -> torch.Tensor:
    """``(B, C, 2^L h, 2^L w)`` -> ``(B, h w 4^(L-1), 4 C)``: the pixel order of
    :meth:`MaskDecoder._upscale` after L 2x2 transposed convolutions (pixel ``(i, j)`` of
    the ``h x w`` grid, then the (di, dj) sub-pixel of each level; channels last)."""
    b, c, hh, ww = x.shape
    h, w = hh >> levels, ww >> levels
    x = x.reshape(b, c, h, *[2] * levels, w, *[2] * levels)
    rows, cols = list(range(3, 3 + levels)), list(range(4 + levels, 4 + 2 * levels))
    order = [0, 2, 3 + levels] + [d for pair in zip(rows, cols) for d in pair] + [1]
    return x.permute(*order).reshape(b, h * w * 4 ** (levels - 1), 4 * c)


def _from_blocks(x: torch.Tensor, h: int, w: int, levels: int) -> torch.Tensor:
    """Inverse of the pixel order of :func:`_to_blocks` for ``(B, h w 4^L, K)`` values:
    ``(B, K, 2^L h, 2^L w)``."""
    b, _, k = x.shape
    x = x.reshape(b, h, w, *[2, 2] * levels, k)
    rows, cols = list(range(3, 3 + 2 * levels, 2)), list(range(4, 4 + 2 * levels, 2))
    x = x.permute(0, 3 + 2 * levels, 1, *rows, 2, *cols)
    return x.reshape(b, k, h << levels, w << levels)


@dataclass
class ImageSide:
    """The decoder's image-side inputs: image tokens ``keys`` ``(1 or B, h w, C)``, their
    position encoding ``key_pe`` ``(1, h w, C)``, and the first layer's projections of them
    when they were made (see :meth:`MaskDecoder._image_side`)."""

    keys: torch.Tensor
    key_pe: torch.Tensor
    projected: ImageProjections | None = None


def _is_broadcast(dense: torch.Tensor) -> bool:
    """Whether ``dense`` ``(B, C, h, w)`` is one embedding vector expanded over the map and
    the batch (the no-mask prompt)."""
    return (dense.shape[0] == 1 or dense.stride(0) == 0) and dense.stride(2) == 0 and dense.stride(3) == 0


class MaskDecoder(nn.Module):
    def __init__(self, cfg: MaskDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._skips_of = LastResult()  # see _skips
        self._image_of = LastResult()  # see _image_side
        self._pe_of = LastResult()  # see _image_side
        self._stacked_of = LastResult()  # see _hypernetworks
        self._iou_of = LastResult()  # see _iou
        self._deconv_of = LastResult()  # see _upscale
        self._quantized_of = LastResult()  # see _first_deconv_int8
        self.int8_upscale = False  # see copy_in
        dim = cfg.dim
        self.transformer = TwoWayTransformer(depth=2, dim=dim, num_heads=8, mlp_dim=2048, lin_mlp=cfg.lin_mlp)
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        if cfg.pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        if cfg.use_high_res_features:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim,
            cfg.iou_head_hidden_dim,
            self.num_mask_tokens,
            cfg.iou_head_depth,
            sigmoid_output=cfg.iou_prediction_use_sigmoid,
        )
        if cfg.pred_obj_scores:
            self.pred_obj_score_head = MLP(dim, dim, 1, 3) if cfg.pred_obj_scores_mlp else Linear(dim, 1)

    def predict_all(
        self,
        image_embed: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res_features: list[torch.Tensor] | None = None,
        image_offset: torch.Tensor | None = None,
        masks_of: slice = slice(None),
        object_score: bool = True,
        tokens: bool = True,
        project: bool = False,
    ) -> DecoderOutput:
        """Every mask token's output, before the multimask choice.

        ``image_embed`` ``(1 or B, C, h, w)`` (broadcast to the B prompts), ``image_pe``
        ``(1, C, h, w)``, ``sparse`` ``(B, N, C)``, ``dense`` ``(B, C, h, w)`` (or a
        :class:`~anyseg.models.prompt_encoder.MaskEmbedding`),
        ``high_res_features`` ``[(1 or B, C/8, 4h, 4w), (1 or B, C/4, 2h, 2w)]``,
        ``image_offset`` ``(C,)`` added to the embedding first (SAM 2's ``no_mem_embed``).
        ``masks_of``: the mask tokens whose masks are made (all by default; the scores and
        tokens are every token's). ``object_score``: whether the object-presence score is
        made (else None). ``tokens``: whether every mask token's output is returned (the
        tracker's object pointer is made from them; else ``tokens`` is None). The last
        attention computes only the outputs asked for. ``project``: an image's prompts, which
        take the first layer's projections of the image side from the first prompt on
        (:meth:`_image_side`), so that every prompt takes the same path.
        """
        sparse = sparse.to(self.iou_token.weight.dtype)  # the token side's type (see copy_in)
        b = sparse.shape[0]
        heads = [self.iou_token.weight, self.mask_tokens.weight]
        if self.cfg.pred_obj_scores:
            heads.insert(0, self.obj_score_token.weight)
        first = 1 if self.cfg.pred_obj_scores else 0
        prompt = torch.cat(heads, dim=0).unsqueeze(0).expand(b, -1, -1)
        prompt = torch.cat((prompt, sparse), dim=1)

        # the outputs read below, in this order: object score, IoU, then the mask tokens
        # (all of them, or those whose masks are made)
        score_rows = [0] if object_score and self.cfg.pred_obj_scores else []
        mask_ids = range(self.num_mask_tokens) if tokens else range(self.num_mask_tokens)[masks_of]
        rows = score_rows + [first] + [first + 1 + i for i in mask_ids]
        h, w = image_embed.shape[-2:]
        side = self._image_side(image_embed, image_pe, dense, image_offset, project)
        hs, src = self.transformer(side.keys.expand(b, -1, -1), side.key_pe, prompt, side.projected, rows)
        iou_token_out = hs[:, len(score_rows), :]
        mask_tokens_out = hs[:, len(score_rows) + 1 :, :]  # (B, len(mask_ids), C)

        up = self._upscale(src, high_res_features)  # (B, 16 h w, C/8), in blocks, before the last GELU
        made = mask_tokens_out[:, masks_of] if tokens else mask_tokens_out
        hyper_in = self._hypernetworks(made, masks_of)
        if loops_apply(up):  # the GELU (SAM's exact nn.GELU) a lookup inside the product
            masks = mask_product(up, hyper_in, h, w, gelu=True)  # fp32, in raster order
        else:  # without gradients the GELU runs in place: no new 8 MB buffer
            up = self.output_upscaling[4](up) if torch.is_grad_enabled() else torch.ops.aten.gelu_(up)
            if up.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
                masks = mask_product(up, hyper_in, h, w)
            else:
                masks = _from_blocks(up @ hyper_in.transpose(1, 2).to(up.dtype), h, w, levels=2)

        iou = self._iou(iou_token_out)
        if not object_score:
            score = None
        elif self.cfg.pred_obj_scores:
            score = self.pred_obj_score_head(hs[:, 0, :])
        else:
            score = 10.0 * iou.new_ones(iou.shape[0], 1)
        return DecoderOutput(masks, iou, mask_tokens_out if tokens else None, score)

    def _upscale(self, x: torch.Tensor, high_res_features: list[torch.Tensor] | None) -> torch.Tensor:
        """``output_upscaling`` (with SAM 2's high-res skips) on image tokens ``(B, h w, C)``
        up to its last GELU (which the caller applies, see :meth:`predict_all`):
        ``(B, 16 h w, C/8)`` with the pixels in the blocked order of :func:`_to_blocks`.

        Each transposed convolution is one matrix product whose output sub-pixels are left
        where the product puts them (never transposed back into raster order): layer norm,
        GELU and the mask product are per pixel, so only the final masks are reordered.
        """
        dc1, ln1, act1, dc2, _ = self.output_upscaling
        b, n, _ = x.shape
        add1, add2 = self._skips(high_res_features)
        w1, w2 = self._deconv_of.get((dc1.weight, dc2.weight), lambda: (_deconv_weight(dc1), _deconv_weight(dc2)))
        if self.int8_upscale and INT8_AVAILABLE and loops_apply(x):
            x = self._first_deconv_int8(x, w1, add1).reshape(b, 4 * n, -1)
        else:
            x = torch.baddbmm(add1, x, w1.expand(b, -1, -1)).reshape(b, 4 * n, -1)
        # bf16 on the CPU: the norm (torch's takes 2x as long on rows of 32 or 64) and the GELU
        # in one compiled pass, over the product's output
        if loops_apply(x):
            x = layer_norm(x, ln1, gelu=True, in_place=True)
        else:  # without gradients the GELU runs in place: no new 2 MB buffer
            gelu = act1 if torch.is_grad_enabled() else torch.ops.aten.gelu_
            x = gelu(F.layer_norm(x, x.shape[-1:], ln1.weight, ln1.bias, ln1.eps))
        return torch.baddbmm(add2, x, w2.expand(b, -1, -1)).reshape(b, 16 * n, -1)

    def _first_deconv_int8(self, x: torch.Tensor, w1: torch.Tensor, add1: torch.Tensor) -> torch.Tensor:
        """The first transposed convolution's product ``x @ w1`` (its :func:`_deconv_weight`)
        plus ``add1`` (:meth:`_skips`) in int8 (:func:`~anyseg.models.common.int8_product`: the
        weight quantized per output once and kept, the inputs per pixel), for bf16 image
        tokens ``x`` ``(B, h w, C)`` on the CPU: ``(B, h w, C)`` bf16. On CPUs with int8
        dot-product instructions (VNNI) at twice bf16's rate, and the skips are added in the
        pass that scales the products back: on an AMD EPYC 1.35 -> 0.89 ms (2.0 -> 1.6 ms with
        cold caches). The second product is left in bf16: its int32 results (8 MB) cost more
        to write and read back than int8 saves."""
        q, scale = self._quantized_of.get((w1,), lambda: quantize_weight(w1.t()))
        if add1.dim() == 1:  # SAM 1: the bias
            return int8_product(x, q, scale, add1.float())
        return int8_product(x, q, scale, torch.zeros(add1.shape[-1]), add1.reshape(-1, add1.shape[-1]))

    def _hypernetworks(self, tokens: torch.Tensor, wanted: slice) -> torch.Tensor:
        """The hypernetwork MLPs of the ``wanted`` mask tokens on their outputs ``tokens``
        ``(B, K', C)``: ``(B, K', C/8)``. Without gradients, all at once (the K MLPs stacked
        once and kept, :class:`StackedMLPs` in a :class:`LastResult`)."""
        mlps = self.output_hypernetworks_mlps
        if torch.is_grad_enabled():
            return torch.stack([mlps[i](tokens[:, j, :]) for j, i in enumerate(range(len(mlps))[wanted])], dim=1)
        stacked = self._stacked_of.get(parameters_of(mlps), lambda: StackedMLPs.of(list(mlps)))
        return stacked(tokens.transpose(0, 1), mlps[0].act, range(len(mlps))[wanted]).transpose(0, 1)

    def _iou(self, token: torch.Tensor) -> torch.Tensor:
        """The IoU head on the IoU token's outputs ``(B, C)``: ``(B, K)``. Without gradients
        as :meth:`_hypernetworks` computes its MLPs (its weights stacked once and kept)."""
        head = self.iou_prediction_head
        if torch.is_grad_enabled():
            return head(token)
        stacked = self._iou_of.get(parameters_of(head), lambda: StackedMLPs.of([head]))
        iou = stacked(token[None], head.act)[0]
        return torch.sigmoid(iou) if head.sigmoid_output else iou

    def keep_image(self, image_embed, image_pe, no_mask, high_res_features=None, image_offset=None) -> None:
        """Make now, and keep for the prompts that follow, what decoding a prompt computes
        from the image alone (arguments as :meth:`predict_all`'s, ``no_mask`` the dense
        embedding without a mask): its tokens, the first layer's projections of them and
        SAM 2's skip features. The image predictor calls this when an image is set, so that
        its first prompt is as fast as the next ones."""
        self._image_side(image_embed, image_pe, no_mask, image_offset, project=True)
        self._skips(high_res_features)

    def _image_side(self, image_embed, image_pe, dense, offset, project: bool = False) -> ImageSide:
        """The image tokens (``image_embed + offset + dense``) and their position encoding.
        With no mask prompt they depend on the image only, so the last result is kept
        (:class:`LastResult`) for the next prompt on the same image; the first layer's
        projections, which cost more than that layer's folded attention, are added on that
        second prompt (a video frame is decoded once), or with ``project`` on the first (an
        image's prompts, and :meth:`keep_image`). A mask prompt (``dense`` a
        :class:`MaskEmbedding`, of one prompt) keeps the image's no-mask side the same way and
        takes its tokens and their projections, once made, shifted by the mask's embedding
        (:meth:`MaskEmbedding.shift_factors`, :meth:`TwoWayAttentionBlock.shift_projections`):
        products over the embedding's 16 channels instead of passes over the 256 of the image
        (a bf16 refinement click's image side on the 2-core AMD host 1.8 -> 1.2 ms)."""
        masks = dense if isinstance(dense, MaskEmbedding) else None
        if masks is not None and (torch.is_grad_enabled() or len(masks.features) > 1):
            masks, dense = None, masks.dense()
        if masks is None and not _is_broadcast(dense):
            return self._tokens(image_embed, image_pe, dense, offset)
        no_mask = dense if masks is None else masks.no_mask
        inputs = (image_embed, image_pe, no_mask) + (() if offset is None else (offset,))
        side = self._image_of.get(inputs, lambda: self._tokens(image_embed, image_pe, no_mask, offset))
        first = self.transformer.layers[0]
        if (project or self._image_of.reused) and side.projected is None and len(side.keys) == 1:
            side.projected = first.project_image(side.keys, side.key_pe)
        if masks is None:
            return side
        if len(side.keys) > 1:
            return self._tokens(image_embed, image_pe, masks.dense(), offset)
        # the kept tokens hold the no-mask vector: the mask's embedding replaces it
        x, weight = masks.shift_factors(side.keys.dtype)
        masked = ImageSide(torch.addmm(side.keys[0], x, weight.t().to(x.dtype))[None], side.key_pe)
        if side.projected is not None:
            masked.projected = first.shift_projections(side.projected, x, weight)
        return masked

    def _tokens(self, image_embed, image_pe, dense, offset) -> ImageSide:
        """The image tokens ``image_embed + offset + dense`` and ``image_pe``, in the decoder's
        type and the ``(B, h w, C)`` token layout throughout (a view of channels-last maps)."""
        dtype = self.image_dtype
        src = image_embed.flatten(2).transpose(1, 2).to(dtype)
        if offset is not None:
            src = src + offset.to(dtype)
        add = (dense[:1, :, :1, 0] if _is_broadcast(dense) else dense.flatten(2)).transpose(1, 2).to(dtype)
        key_pe = self._pe_of.get((image_pe,), lambda: image_pe.to(dtype).flatten(2).transpose(1, 2))
        return ImageSide((src + add).contiguous(), key_pe)

    def _skips(self, high_res_features: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """What each transposed convolution adds to its product: its bias, plus (SAM 2) the
        stride-8 / stride-4 skip features in the blocked pixel order (kept for the next
        prompt on the same features, :class:`LastResult`)."""
        dc1, _, _, dc2, _ = self.output_upscaling
        if not self.cfg.use_high_res_features:
            return dc1.bias.repeat(4), dc2.bias.repeat(4)
        feat_s0, feat_s1 = high_res_features
        dtype = dc1.bias.dtype
        return self._skips_of.get(
            (feat_s0, feat_s1),
            lambda: (_to_blocks(feat_s1.to(dtype), 1) + dc1.bias.repeat(4),
                     _to_blocks(feat_s0.to(dtype), 2) + dc2.bias.repeat(4)),
        )

    @property
    def image_dtype(self) -> torch.dtype:
        """The type the image side is decoded in (see :meth:`copy_in`)."""
        return self.output_upscaling[0].weight.dtype

    def copy_in(self, dtype: torch.dtype, int8: bool = False) -> "MaskDecoder":
        """A copy of this decoder that decodes the image side in ``dtype``: the image tokens,
        the upscaling and the transformer's token MLPs (their weights cast once, here) are in
        ``dtype``; the prompt and output tokens and their other layers stay fp32 (see
        :mod:`two_way_transformer`). Keep the image features in ``dtype`` too, or they are
        cast once per image. Autocast would instead cast every weight on every call, which
        on CPU costs more than it saves. ``int8`` (bf16 on the CPU): the upscaling's first
        product (:meth:`_first_deconv_int8`) and the transformer's attention scores against
        the image after its first block (``TwoWayTransformer.int8_scores``) in int8."""
        twin = MaskDecoder(self.cfg).to(self.iou_token.weight.device)
        twin.load_state_dict(self.state_dict())
        twin.int8_upscale = int8
        twin.transformer.int8_scores = int8
        twin.output_upscaling.to(dtype)
        for layer in twin.transformer.layers:
            layer.mlp.to(dtype)
        return twin.train(self.training)

    def _load_from_state_dict(self, *args, **kwargs):
        # the kept results were computed with the old weights
        self._skips_of.clear()
        self._image_of.clear()
        self._pe_of.clear()
        self._stacked_of.clear()
        self._iou_of.clear()
        self._deconv_of.clear()
        self._quantized_of.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _masks_of(self, multimask: bool) -> slice:
        """The mask tokens whose masks :meth:`_select` keeps or chooses from."""
        if multimask:
            return slice(1, None)
        if self.cfg.dynamic_multimask_via_stability and not self.training:
            return slice(None)
        return slice(0, 1)

    def _select(self, out: DecoderOutput, multimask: bool) -> DecoderOutput:
        """Keep the three multimask outputs, or one mask (token 0, or the dynamic choice),
        from :meth:`predict_all`'s output made with ``masks_of=self._masks_of(multimask)``."""
        if multimask:
            masks, iou = out.masks, out.iou[:, 1:]
        elif self.cfg.dynamic_multimask_via_stability and not self.training:
            masks, iou = self._dynamic_single_mask(out.masks, out.iou)
        else:
            masks, iou = out.masks, out.iou[:, 0:1]
        if out.tokens is None:
            tokens = None
        elif multimask and self.cfg.use_multimask_token_for_obj_ptr:
            tokens = out.tokens[:, 1:]
        else:
            tokens = out.tokens[:, 0:1]
        return DecoderOutput(masks, iou, tokens, out.object_score)

    def forward(self, image_embed, image_pe, sparse, dense, multimask: bool, high_res_features=None,
                image_offset=None, object_score: bool = True, tokens: bool = True,
                project: bool = False) -> DecoderOutput:
        """:meth:`predict_all` (making only the masks that will be kept) then :meth:`_select`;
        ``object_score`` and ``tokens``: whether the object-presence score and the mask
        tokens' outputs are made (the tracker's; an image prediction needs neither);
        ``project``: as :meth:`predict_all`'s (an image prediction's)."""
        out = self.predict_all(image_embed, image_pe, sparse, dense, high_res_features, image_offset,
                               self._masks_of(multimask), object_score, tokens, project)
        return self._select(out, multimask)

    def _dynamic_single_mask(self, masks: torch.Tensor, iou: torch.Tensor):
        cfg = self.cfg
        multi_iou = iou[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, 0:1], iou[:, 0:1]
        stable = stability_score(single_masks, 0.0, cfg.dynamic_multimask_stability_delta)
        stable = stable >= cfg.dynamic_multimask_stability_thresh  # (B, 1)
        return (
            torch.where(stable[..., None, None], single_masks, best_masks),
            torch.where(stable, single_iou, best_iou),
        )


def compile_loops() -> None:
    """Have numba compile the CPU's compiled loops now, or read them back from its cache on
    disk (under a second): every team entry of :mod:`anyseg._loops`
    (:func:`~anyseg.kernels.compile_team_entries`), and the loops that decoding a prompt
    runs on its own thread, by decoding one prompt with a small random SAM 2-like decoder in
    fp32, bf16 and int8. After an install or upgrade the first image and prompt would
    otherwise wait for the compilation (20-30 s on the 2-core AMD host, once): ``anyseg
    warmup`` and the studio's start call this."""
    kernels.compile_team_entries()
    dim, side = 64, 4
    with torch.random.fork_rng(devices=[]), torch.inference_mode():  # the caller's random numbers untouched
        decoder = MaskDecoder(MaskDecoderConfig(dim=dim, pred_obj_scores=True, use_high_res_features=True,
                                                dynamic_multimask_via_stability=True)).eval()
        embed, pe = torch.randn(1, dim, side, side), torch.randn(1, dim, side, side)
        sparse, dense = torch.randn(1, 2, dim), torch.randn(dim)[None, :, None, None].expand(1, -1, side, side)
        high_res = [torch.randn(1, dim // 8, 4 * side, 4 * side), torch.randn(1, dim // 4, 2 * side, 2 * side)]
        for twin, dtype in ((decoder, torch.float32), (decoder.copy_in(torch.bfloat16), torch.bfloat16),
                            (decoder.copy_in(torch.bfloat16, int8=True), torch.bfloat16)):
            features = [f.to(dtype) for f in high_res]
            for multimask in (True, False):
                twin(embed.to(dtype), pe, sparse, dense, multimask, features, project=multimask)
