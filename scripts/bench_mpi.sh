#!/usr/bin/env bash
# bench_mpi.sh [BUILD] - data-parallel training throughput on this machine (docs/BENCHMARKS.md,
# "Data-parallel training with MPI"): the same training run as one process with THREADS threads
# and as `mpirun -np RANKS` processes of THREADS/RANKS threads each, alternately, REPEATS times.
#
# Each run is `anybit train` for STEPS steps of a global batch of BATCH on CIFAR-10
# ($DATA/cifar10; scripts/get-data.sh cifar10), ResNet-20, full precision (fp) and the method at
# {8,6,4,2} (joint), the 2-process one with per-process BN (the default) and with --sync-bn 1.
# From each run's metrics.jsonl: images/s over the steps (training only, the first step's
# warm-up included) and, for the MPI runs, the seconds spent summing gradients per step (the
# MPI_Allreduce calls, waiting for the slower rank included). Prints every run, then the medians.
#
# Environment: RANKS (2), THREADS (2), REPEATS (3), STEPS (20), BATCH (128), DATA (datasets),
# ONLY (fp or joint).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
RANKS="${RANKS:-2}" THREADS="${THREADS:-2}" REPEATS="${REPEATS:-3}" STEPS="${STEPS:-20}" BATCH="${BATCH:-128}"
DATA="${DATA:-datasets}" ONLY="${ONLY:-}"
[ -x "$BUILD/anybit" ] || { echo "bench_mpi.sh: $BUILD/anybit is missing (run make first)" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "bench_mpi.sh: no mpirun (apt-get install openmpi-bin)" >&2; exit 1; }
[ -d "$DATA/cifar10/train" ] || { echo "bench_mpi.sh: no $DATA/cifar10 (scripts/get-data.sh cifar10 $DATA/cifar10)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=$(mktemp -d /tmp/bench_mpi_XXXXXX)
trap 'rm -rf "$OUT"' EXIT
echo "bench_mpi.sh: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $STEPS steps of batch $BATCH," \
     "1 process x $THREADS threads against $RANKS processes x $((THREADS / RANKS)) threads; $(mpirun --version | head -1)"

# run NAME LAUNCHER THREADS WORKERS EXTRA...: one training run; prints "NAME img/s comm-s/step"
run() {
  local name=$1 launch=$2 threads=$3 workers=$4; shift 4
  local dir="$OUT/$name"
  rm -rf "$dir"
  $launch "$BUILD/anybit" train --model resnet20 --data "$DATA/cifar10" --out "$dir" --epochs 1 \
    --max-steps "$STEPS" --batch-size "$BATCH" --eval-batches 1 --threads "$threads" --workers "$workers" \
    --log-every 100000 "$@" > "$dir.log" 2>&1 || { echo "bench_mpi.sh: $name failed:"; tail -5 "$dir.log"; exit 1; }
  python3 - "$dir/metrics.jsonl" "$name" "$STEPS" <<'PY'
import json, sys
m = json.loads(open(sys.argv[1]).readline())
comm = m.get("comm_seconds")
print(f"{sys.argv[2]:<28} {m['images_per_s']:9.1f} img/s  " +
      (f"comm {1000 * comm / int(sys.argv[3]):7.1f} ms/step" if comm is not None else ""))
PY
}

results=()
for r in $(seq 1 "$REPEATS"); do
  for w in fp joint; do
    [ -n "$ONLY" ] && [ "$ONLY" != "$w" ] && continue
    extra=(--lr 0.01)
    [ $w = joint ] && extra+=(--bits 8,6,4,2)
    results+=("$(run "$w-1x$THREADS" "" "$THREADS" 2 "${extra[@]}")")
    results+=("$(run "$w-${RANKS}x$((THREADS / RANKS))" "mpirun -np $RANKS" $((THREADS / RANKS)) 1 "${extra[@]}")")
    results+=("$(run "$w-${RANKS}x$((THREADS / RANKS))-syncbn" "mpirun -np $RANKS" $((THREADS / RANKS)) 1 "${extra[@]}" --sync-bn 1)")
    printf '%s\n' "${results[@]: -3}"
  done
done
echo "bench_mpi.sh: medians over $REPEATS rounds (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics, collections
rows = collections.OrderedDict()
for line in sys.stdin:
    f = line.split()
    rows.setdefault(f[0], []).append((float(f[1]), float(f[4]) if len(f) > 4 else None))
for name, v in rows.items():
    ips = statistics.median(x[0] for x in v)
    comm = [x[1] for x in v if x[1] is not None]
    print(f"{name:<28} {ips:9.1f} img/s" + (f"  comm {statistics.median(comm):7.1f} ms/step" if comm else ""))
'
