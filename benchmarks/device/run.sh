#!/usr/bin/env bash
# On a lent GPU machine (the workplace's device tool), from the repository root, with .device
# carried (made by benchmarks/device/prepare.sh): the GPU checks and figures of issue #7.
#   run.sh [STAGE ...]   stages, in the order given (default: parity bench):
#     parity   anyseg on the GPU (fp32, bf16) against anyseg on the CPU in fp32, which the
#              fixtures prove equal to the official outputs (benchmarks/device_parity.py)
#     bench    side by side with the official predictors on the GPU, fp32 and bf16: encode, click
#              and video (1 and 3 objects) for SAM 2.1-tiny, encode and click for MobileSAM
#     compile  encode and video for SAM 2.1-tiny in bf16, compiled on both sides as the official
#              code compiles (its vos_optimized mode for video; compiling takes minutes;
#              torch keeps what it compiled on disk, so later processes take less)
# Results go to $OUT (which the device tool brings back), else ./device-out: run.log,
# device_parity.{json,md}, bench/bench.{json,md}, compile/bench.{json,md}.
# DEVICE (default cuda), PYTHON and OFFICIAL_PYTHON (default python3) may be set, e.g. to try
# the stages on a CPU.
set -uo pipefail
out=${OUT:-device-out}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
official=${OFFICIAL_PYTHON:-python3}
samples=.device/samples
[ -d .device/wheels ] && [ -d .device/official ] && [ -d $samples ] ||
    { echo ".device/ is missing or incomplete: run benchmarks/device/prepare.sh first (and carry .device)" >&2; exit 2; }
mkdir -p "$out"
exec > >(tee "$out/run.log") 2>&1
# what the machine's python lacks, from the carried wheels (it reaches no package index)
"$python" -c "import av, pycocotools" 2>/dev/null ||
    "$python" -m pip install -q --no-index --no-deps --no-compile .device/wheels/{av,pycocotools}-*.whl || exit 3
"$official" -c "import hydra, omegaconf, iopath" 2>/dev/null ||
    "$official" -m pip install -q --no-index --no-deps --no-compile \
        .device/wheels/{hydra_core,omegaconf,antlr4,iopath}*.whl || exit 3
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$python" -c "import torch; print('torch', torch.__version__)"
bench() {  # NAME, then anyseg bench's arguments
    local name=$1; shift
    "$python" -m anyseg.cli bench --device "$device" --image $samples/truck.jpg \
        --everything-image $samples/groceries.jpg --video $samples/bedroom.mp4 \
        --official-python "$(command -v "$official")" --official-sam2 .device/official/sam2 \
        --official-mobilesam .device/official/MobileSAM --out "$out/$name" "$@"
}
stages=("$@")
[ $# -gt 0 ] || stages=(parity bench)
status=0
for stage in "${stages[@]}"; do
    echo "== $stage $(date +%T)"
    case $stage in
    parity) "$python" benchmarks/device_parity.py --device "$device" --image $samples/truck.jpg \
                --video $samples/bedroom.mp4 --out "$out/device_parity.json" ;;
    bench) bench bench --models sam2.1_hiera_t,mobile_sam_vit_t --measures encode,click,video \
               --precisions fp32,bf16 --repeat 1 ;;
    compile) bench compile --models sam2.1_hiera_t --measures encode,video --precisions bf16 \
                 --repeat 1 --compile ;;
    *) echo "unknown stage $stage"; false ;;
    esac || status=1
done
echo "== done $(date +%T), status $status"
exit $status
