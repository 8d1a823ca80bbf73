"""The image features an encoder hands to the prompt decoder (and, for SAM 2, to the
memory tracker)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageFeatures:
    """Encoder output for a batch of B images.

    ``embed``: ``(B, 256, 64, 64)`` image embedding (SAM 2: the raw stride-16 FPN level,
    before ``no_mem_embed`` or memory conditioning). ``high_res``: SAM 2 only, the
    stride-4 and stride-8 maps after the decoder's 1x1 projections,
    ``[(B, 32, 256, 256), (B, 64, 128, 128)]``. ``pos``: SAM 2 only, ``(B, 256, 64, 64)``
    sine position encoding of ``embed`` (used by memory attention).
    """

    embed: torch.Tensor
    high_res: list[torch.Tensor] | None = None
    pos: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embed.shape[0]

    def select(self, index: int | slice) -> "ImageFeatures":
        """The features of one image (kept as a batch of 1) or of a slice."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures(
            self.embed[index],
            None if self.high_res is None else [f[index] for f in self.high_res],
            None if self.pos is None else self.pos[index],
        )

    def to(self, device=None, dtype=None) -> "ImageFeatures":
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return ImageFeatures(
            move(self.embed),
            None if self.high_res is None else [move(f) for f in self.high_res],
            move(self.pos),
        )

    def state(self) -> dict[str, torch.Tensor]:
        """A flat dict of tensors (for saving)."""
        out = {"embed": self.embed}
        if self.high_res is not None:
            out.update({f"high_res_{i}": f for i, f in enumerate(self.high_res)})
        if self.pos is not None:
            out["pos"] = self.pos
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "ImageFeatures":
        high = [state[k] for k in sorted(k for k in state if k.startswith("high_res_"))]
        return cls(state["embed"], high or None, state.get("pos"))
