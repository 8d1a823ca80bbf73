#!/usr/bin/env bash
# Fill .device/ (git-ignored) with what benchmarks/device/run.sh needs on a lent GPU machine,
# which reaches no network and sees neither ../shared nor the official source trees:
#   .device/wheels    PyAV and pycocotools (anyseg), hydra-core, omegaconf, antlr4 and iopath
#                     (the official SAM 2), for the machine's Python 3.12
#   .device/official  the official sam2 and mobile_sam packages (for timing only; never committed)
#   .device/samples   truck.jpg, groceries.jpg and bedroom.mp4 from ../shared/samples
# Usage, from the repository root:
#   benchmarks/device/prepare.sh OFFICIAL_SAM2_TREE OFFICIAL_MOBILESAM_TREE
# then run benchmarks/device/run.sh there with .device carried (benchmarks/README.md).
# A tree may be a plain checkout or an export of a bare repository's package folder, e.g.
#   mkdir -p T && git --git-dir=BARE archive HEAD sam2 | tar -x -C T
set -euo pipefail
sam2_tree=${1:?the facebookresearch/sam2 source tree}
mobilesam_tree=${2:?the ChaoningZhang/MobileSAM source tree}
samples=${SAMPLES:-../shared/samples}
[ -d "$sam2_tree/sam2" ] || { echo "$sam2_tree has no sam2 package" >&2; exit 2; }
[ -d "$mobilesam_tree/mobile_sam" ] || { echo "$mobilesam_tree has no mobile_sam package" >&2; exit 2; }
rm -rf .device && mkdir -p .device/wheels .device/official/sam2 .device/official/MobileSAM .device/samples
binary=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q "${binary[@]}" -d .device/wheels "av==18.1.0" "pycocotools==2.0.11"
# pure-python packages, some published as source only: built into wheels here
python3 -m pip wheel -q --no-deps -w .device/wheels \
    "hydra-core==1.3.8" "omegaconf==2.3.1" "antlr4-python3-runtime==4.9.3" "iopath==0.1.10"
cp -r "$sam2_tree/sam2" .device/official/sam2/
cp -r "$mobilesam_tree/mobile_sam" .device/official/MobileSAM/
find .device/official -name __pycache__ -prune -exec rm -rf {} +
cp "$samples/images/truck.jpg" "$samples/images/groceries.jpg" "$samples/videos/bedroom.mp4" .device/samples/
du -sh .device
