#!/usr/bin/env bash
# check_emu_models.sh [BUILD] - every model of the zoo trains with --device cuda on the emulated GPU
# (BUILD/anybit_emu, tensor/cuda/emu/) and its first step matches the CPU (docs/RESULTS.md, "The
# program on the CUDA emulator"). For each model: one step of the method from the same seed on the
# CPU (BUILD/anybit) and on the emulated GPU, then the per-bit-width training losses of both runs
# side by side. A step is one forward and backward per bit-width from the same initial weights, so
# the two differ only by float sums in another order, and by the quantizer codes such a rounding
# difference can flip (see RESULTS.md). Needs datasets/mnist and datasets/cifar10 (scripts/get-data.sh);
# the video models train on a small synthetic motion set it renders from MNIST. Runs go to
# runs/emu_models/; about 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}" OUT=runs/emu_models
[ -x "$BUILD/anybit_emu" ] || { echo "check_emu_models.sh: no $BUILD/anybit_emu (configure with -DANYBIT_CUDA_EMULATOR=ON)" >&2; exit 1; }
mkdir -p "$OUT"
[ -d "$OUT/motion" ] || "$BUILD/anybit" make-video-dataset --variant motion --source datasets/mnist --out "$OUT/motion" \
  --train 64 --test 32 --size 32 --frames 8 --seed 1 > /dev/null 2>&1

# The last metrics line's training losses, as "W8A8 2.41687  W4A4 4.67977" (json only, no numpy).
losses() {
  /usr/bin/python3 -c '
import json, sys
m = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("  ".join("%s %.6g" % (b, v["loss"]) for b, v in sorted(m["train"].items(), reverse=True)))' "$1/metrics.jsonl"
}

check() {  # name, then the model's options
  local name=$1; shift
  local common="--epochs 1 --max-steps 1 --eval-batches 1 --workers 1 --threads 2 --log-every 100000 --seed 3"
  "$BUILD/anybit" train "$@" $common --out "$OUT/$name-cpu" > "$OUT/$name-cpu.log" 2>&1
  "$BUILD/anybit_emu" train "$@" $common --device cuda --out "$OUT/$name-gpu" > "$OUT/$name-gpu.log" 2>&1
  printf '%-22s CPU %-42s emulated GPU %s\n' "$name" "$(losses "$OUT/$name-cpu")" "$(losses "$OUT/$name-gpu")"
}

C=datasets/cifar10 V="--data $OUT/motion --model resnet20 --frames 4 --short-side 0 --video-crop 32 --video-augment none"
check lenet5 --data datasets/mnist --model lenet5 --bits 8,4,2 --weight-scale sat --batch-size 8
check resnet20 --data $C --model resnet20 --bits 8,4,2 --batch-size 8
check preact_resnet20 --data $C --model preact_resnet20 --bits 8,4,2 --batch-size 8
check resnet18 --data $C --model resnet18 --small-input 1 --bits 8,4 --batch-size 4
check resnet50 --data $C --model resnet50 --small-input 1 --bits 8,4 --batch-size 2
check mobilenetv2 --data $C --model mobilenetv2 --small-input 1 --width 0.5 --bits 8,4 --batch-size 4
check tsn $V --bits 8,4 --batch-size 4
check tsm $V --temporal-shift 1 --bits 8,4 --batch-size 4
check resnet20_lsq --data $C --model resnet20 --bits 8,4,2 --weight-quant lsq --act-quant lsq --batch-size 8
check resnet20_fp_adamw --data $C --model resnet20 --optimizer adamw --lr 0.001 --label-smoothing 0.1 --batch-size 8
