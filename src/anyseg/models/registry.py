"""The official weights anyseg knows by name.

Each :class:`ModelSpec` ties a short model name (``"sam2.1-large"``) to the
architecture family, the config preset that builds it, and the one official file
that holds its weights: where Meta (or the MobileSAM authors) publish it and its
SHA-256, so a download can be verified byte for byte.

Where the SHA-256 values come from: the official sources publish no checksums, so
each value below was taken from independent public projects that download the same
URL and verify it (listed per group), and agrees in every one of them. The six hex
digits in the SAM 1 file names are the first digits of the files' MD5, not SHA-256
(e.g. ``sam_vit_h_4b8939.pth`` has MD5 ``4b8939a88964f0f4ff5f5b2642c598a6``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from anyseg.errors import UnknownModelError


@dataclass(frozen=True)
class ModelSpec:
    """One named set of official weights.

    ``family`` is ``"sam"`` or ``"sam2"``; ``preset`` names the config preset that
    builds the matching architecture; ``sha256`` is the hex digest of the file at
    ``url`` (``None`` would mean no trustworthy value is known: the file is then
    used unverified, with a warning); ``filename`` is the name it is cached under.
    """

    name: str
    family: str
    preset: str
    url: str
    sha256: str | None
    filename: str
    description: str


_SAM2_1 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SAM = "https://dl.fbaipublicfiles.com/segment_anything"
_MOBILE_SAM = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights"

_SPECS = [
    # SAM 2.1 (URLs: facebookresearch/sam2 checkpoints/download_ckpts.sh). SHA-256 as in
    # computational-cell-analytics/micro-sam (micro_sam/v2/util.py HASHES["sam2.1"]),
    # also in a Hugging Face cache blob name for facebook/sam2.1-hiera-base-plus and
    # in several download scripts that check these URLs with sha256sum.
    ModelSpec(
        "sam2.1-tiny", "sam2", "sam2.1_hiera_t", f"{_SAM2_1}/sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        "sam2.1_hiera_tiny.pt", "SAM 2.1, Hiera-Tiny backbone, 38.9M parameters",
    ),
    ModelSpec(
        "sam2.1-small", "sam2", "sam2.1_hiera_s", f"{_SAM2_1}/sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        "sam2.1_hiera_small.pt", "SAM 2.1, Hiera-Small backbone, 46M parameters",
    ),
    ModelSpec(
        "sam2.1-base-plus", "sam2", "sam2.1_hiera_b+", f"{_SAM2_1}/sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        "sam2.1_hiera_base_plus.pt", "SAM 2.1, Hiera-Base+ backbone, 80.8M parameters",
    ),
    ModelSpec(
        "sam2.1-large", "sam2", "sam2.1_hiera_l", f"{_SAM2_1}/sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        "sam2.1_hiera_large.pt", "SAM 2.1, Hiera-Large backbone, 224.4M parameters",
    ),
    # SAM 2 (URLs: the commented-out SAM 2 block of the same download_ckpts.sh). SHA-256
    # as in micro-sam (micro_sam/v2/util.py HASHES["sam2.0"]) and in the 3D Slicer
    # SegmentWithSAM extension (checksum="SHA256:..." for each of these URLs).
    ModelSpec(
        "sam2-tiny", "sam2", "sam2_hiera_t", f"{_SAM2}/sam2_hiera_tiny.pt",
        "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
        "sam2_hiera_tiny.pt", "SAM 2 (July 2024), Hiera-Tiny backbone, 38.9M parameters",
    ),
    ModelSpec(
        "sam2-small", "sam2", "sam2_hiera_s", f"{_SAM2}/sam2_hiera_small.pt",
        "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
        "sam2_hiera_small.pt", "SAM 2 (July 2024), Hiera-Small backbone, 46M parameters",
    ),
    ModelSpec(
        "sam2-base-plus", "sam2", "sam2_hiera_b+", f"{_SAM2}/sam2_hiera_base_plus.pt",
        "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
        "sam2_hiera_base_plus.pt", "SAM 2 (July 2024), Hiera-Base+ backbone, 80.8M parameters",
    ),
    ModelSpec(
        "sam2-large", "sam2", "sam2_hiera_l", f"{_SAM2}/sam2_hiera_large.pt",
        "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
        "sam2_hiera_large.pt", "SAM 2 (July 2024), Hiera-Large backbone, 224.4M parameters",
    ),
    # SAM (URLs: facebookresearch/segment-anything README, "Model Checkpoints"). SHA-256
    # as in micro-sam (micro_sam/util.py pooch registry), the 3D Slicer SegmentWithSAM
    # extension, and many download scripts checking these URLs.
    ModelSpec(
        "sam-vit-b", "sam", "sam_vit_b", f"{_SAM}/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        "sam_vit_b_01ec64.pth", "SAM, ViT-B image encoder, 375 MB file",
    ),
    ModelSpec(
        "sam-vit-l", "sam", "sam_vit_l", f"{_SAM}/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        "sam_vit_l_0b3195.pth", "SAM, ViT-L image encoder, 1.2 GB file",
    ),
    ModelSpec(
        "sam-vit-h", "sam", "sam_vit_h", f"{_SAM}/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        "sam_vit_h_4b8939.pth", "SAM, ViT-H image encoder, 2.6 GB file",
    ),
    # MobileSAM (URL: weights/mobile_sam.pt in ChaoningZhang/MobileSAM, as its README
    # uses it). SHA-256 as in micro-sam (pooch registry "vit_t") and in download scripts
    # that pin this file by URL, SHA-256 and size (40,728,226 bytes).
    ModelSpec(
        "mobile-sam", "sam", "mobile_sam_vit_t", f"{_MOBILE_SAM}/mobile_sam.pt",
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        "mobile_sam.pt", "MobileSAM, TinyViT image encoder distilled from SAM, 41 MB file",
    ),
]

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; :class:`UnknownModelError` lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(str(name), REGISTRY, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(REGISTRY)}."
    )


def list_specs() -> list[ModelSpec]:
    """Every registered spec, in registry order (newest family first)."""
    return list(REGISTRY.values())
