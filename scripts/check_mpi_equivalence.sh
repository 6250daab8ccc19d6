#!/usr/bin/env bash
# check_mpi_equivalence.sh [BUILD] - data-parallel training against one process (docs/RESULTS.md,
# "Data-parallel training with MPI"). For each configuration, ResNet-20 on CIFAR-10
# ($DATA/cifar10) for STEPS steps of a global batch of 32 from the same seed, synchronised BN:
#   1 process x 2 threads  against  `mpirun -np 2`, 1 thread each   (the data-parallel difference)
#   1 process x 2 threads  against  1 process x 1 thread             (the same model summed in
#                                                                     another order: the yardstick)
# and prints scripts/compare_runs.py's figures for both pairs. Runs go to runs/dp_equiv/.
# Environment: STEPS (3), DATA (datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}" STEPS="${STEPS:-3}" DATA="${DATA:-datasets}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=runs/dp_equiv
for c in "fp32|--lr 0.1" "8,6,4,2 lr 1e-3|--bits 8,6,4,2 --lr 0.001" "8,6,4,2 lr 1e-2|--bits 8,6,4,2 --lr 0.01" \
         "8,6,4 lr 1e-2|--bits 8,6,4 --lr 0.01"; do
  label=${c%%|*} extra=${c#*|} name=$(echo "${c%%|*}" | tr -c 'a-z0-9\n' '_')
  args="train --model resnet20 --data $DATA/cifar10 --epochs 1 --max-steps $STEPS --batch-size 32 --eval-batches 1
        --workers 1 --log-every 100000 --seed 1 --sync-bn 1 $extra"
  "$BUILD/anybit" $args --threads 2 --out "$OUT/$name-1x2" > /dev/null 2>&1
  "$BUILD/anybit" $args --threads 1 --out "$OUT/$name-1x1" > /dev/null 2>&1
  mpirun -np 2 "$BUILD/anybit" $args --threads 1 --out "$OUT/$name-2x1" > /dev/null 2>&1
  echo "== $label ($extra): 1 process x 2 threads against 2 processes x 1 thread"
  /usr/bin/python3 scripts/compare_runs.py "$OUT/$name-1x2" "$OUT/$name-2x1" || true
  echo "-- the same against 1 process x 1 thread"
  /usr/bin/python3 scripts/compare_runs.py "$OUT/$name-1x2" "$OUT/$name-1x1" || true
done
