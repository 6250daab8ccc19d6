#!/usr/bin/env bash
# bench.sh [BUILD] - what `make bench` runs: every benchmark of docs/BENCHMARKS.md, in about 10 min.
#
#   1. build/bench_kernels   conv2d and elementwise kernels (GFLOP/s, GB/s)
#   2. build/bench_data      the data loader on CIFAR-10 (fetched with scripts/get-data.sh into
#                            $DATA/cifar10 first; skipped, saying so, when it cannot be had);
#      build/bench_video     video decoding against the ffmpeg tool and the video loader, on
#                            EgoGestAR ($DATA/egogestar, likewise)
#   3. build/bench_optim     the optimizer step (GB/s); build/bench_cuda, the CUDA kernels, when
#                            built (it says so and exits 0 without a GPU)
#   4. training throughput against PyTorch: build/bench_train and scripts/bench_pytorch.py, run
#      ALTERNATELY (anybit, pytorch, anybit, pytorch, ...) REPEATS times each, because the noise of
#      these shared 2-core machines drifts over minutes; prints each run, then per workload the
#      median images/s of each side, the ratio anybit / pytorch of the medians, and the median of
#      each round's own ratio (the steadier of the two when the machine drifts). PyTorch's side is
#      skipped, saying so, when /usr/bin/python3 cannot import torch.
#
# Environment: BASELINE (another build folder, e.g. one of an older commit: its bench_train joins
# each alternation and the summary adds its medians and the speed-up of BUILD over it),
# BASELINE_ARGS (extra arguments of the baseline's bench_train: BASELINE=build
# BASELINE_ARGS="--conv-direct 0" compares the direct convolution with im2col + GEMM), REPEATS
# (alternations, default 3), STEPS (timed steps per run, default 3), DATA
# (dataset folder, default datasets), ONLY (comma-separated workloads for step 4), SKIP (any of
# kernels,data,optim,cuda,train to leave out). The environment is left as it is (OPENBLAS_CORETYPE
# included); every program prints what it runs with. The load average is printed before and after
# step 4: figures taken under load are not comparable with figures taken without.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
REPEATS="${REPEATS:-3}"
STEPS="${STEPS:-3}"
DATA="${DATA:-datasets}"
ONLY="${ONLY:-}"
SKIP="${SKIP:-}"
PYTHON=/usr/bin/python3

say() { echo "bench.sh: $*"; }
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }
need() { [ -x "$BUILD/$1" ] || { echo "bench.sh: $BUILD/$1 is missing (run make first)" >&2; exit 1; }; }

say "build $BUILD; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

if ! skipped kernels; then
  need bench_kernels
  echo "== $BUILD/bench_kernels"
  "$BUILD/bench_kernels"
fi

if ! skipped data; then
  need bench_data
  echo "== $BUILD/bench_data"
  if scripts/get-data.sh cifar10 "$DATA/cifar10"; then
    "$BUILD/bench_data" --data "$DATA/cifar10" --epochs 2
  else
    say "skipping bench_data: CIFAR-10 could not be had (scripts/get-data.sh cifar10 $DATA/cifar10 failed)"
  fi
  need bench_video
  echo "== $BUILD/bench_video"
  if scripts/get-data.sh egogestar "$DATA/egogestar"; then
    "$BUILD/bench_video" --data "$DATA/egogestar"
  else
    say "skipping bench_video: EgoGestAR could not be had (scripts/get-data.sh egogestar $DATA/egogestar failed)"
  fi
fi

if ! skipped optim; then
  need bench_optim
  echo "== $BUILD/bench_optim"
  "$BUILD/bench_optim"
fi

if ! skipped cuda && [ -x "$BUILD/bench_cuda" ]; then
  echo "== $BUILD/bench_cuda"
  "$BUILD/bench_cuda"
fi

skipped train && exit 0
need bench_train
echo "== training throughput: $BUILD/bench_train vs scripts/bench_pytorch.py, alternating, $REPEATS runs each"
have_torch=1
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  have_torch=0
  say "skipping PyTorch: $PYTHON cannot import torch (Debian: apt-get install python3-torch)"
fi
args=(--steps "$STEPS")
[ -n "$ONLY" ] && args+=(--only "$ONLY")
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
for ((i = 1; i <= REPEATS; ++i)); do
  echo "-- run $i/$REPEATS: anybit (load $(cut -d' ' -f1 /proc/loadavg))"
  "$BUILD/bench_train" "${args[@]}" | tee "$LOGS/anybit.$i"
  if [ -n "${BASELINE:-}" ]; then
    echo "-- run $i/$REPEATS: baseline $BASELINE (load $(cut -d' ' -f1 /proc/loadavg))"
    # shellcheck disable=SC2086  # BASELINE_ARGS is a list of words
    "$BASELINE/bench_train" "${args[@]}" ${BASELINE_ARGS:-} | tee "$LOGS/baseline.$i"
  fi
  if [ "$have_torch" = 1 ]; then
    echo "-- run $i/$REPEATS: pytorch (load $(cut -d' ' -f1 /proc/loadavg))"
    "$PYTHON" scripts/bench_pytorch.py "${args[@]}" | tee "$LOGS/pytorch.$i"
  fi
done

# The summary: the median over runs of each side's images/s, per workload (lines `name value`).
say "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v repeats="$REPEATS" '
  function median_of(v, n,    i, j, t) {
    if (n == 0) return -1
    for (i = 2; i <= n; ++i) for (j = i; j > 1 && v[j - 1] > v[j]; --j) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  function median(side, name,    n, i, v) {
    n = count[side, name]
    for (i = 1; i <= n; ++i) v[i] = val[side, name, i]
    return median_of(v, n)
  }
  # The median over rounds of side a / side b within each round: the two ran in the same minutes,
  # so a drift of the machine speed between rounds cancels out (the ratio of the two medians can
  # pair a slow round of one side with a fast round of the other).
  function round_ratio(a, b, name,    n, i, v) {
    n = count[a, name] < count[b, name] ? count[a, name] : count[b, name]
    for (i = 1; i <= n; ++i) v[i] = val[a, name, i] / val[b, name, i]
    return median_of(v, n)
  }
  FNR == 1 { side = FILENAME; sub(/.*\//, "", side); sub(/\..*/, "", side) }
  /^#/ || NF != 2 { next }
  {
    if (!(($1) in seen)) { seen[$1] = 1; order[++names] = $1 }
    val[side, $1, ++count[side, $1]] = $2
  }
  END {
    printf "\n%-24s %16s %16s %16s %16s\n", "workload", "anybit img/s", "pytorch img/s", "anybit/pytorch",
           "per-round ratio"
    for (k = 1; k <= names; ++k) {
      a = median("anybit", order[k]); p = median("pytorch", order[k])
      printf "%-24s %16s %16s %16s %16s\n", order[k], a < 0 ? "-" : sprintf("%.1f", a), p < 0 ? "-" : sprintf("%.1f", p),
             (a < 0 || p < 0) ? "-" : sprintf("%.2fx", a / p),
             (a < 0 || p < 0) ? "-" : sprintf("%.2fx", round_ratio("anybit", "pytorch", order[k]))
    }
    for (k = 1; k <= names; ++k) {
      a = median("anybit", order[k]); b = median("baseline", order[k])
      if (b > 0 && a > 0)
        printf "%-24s baseline %.1f img/s, this build %.2fx the baseline (per-round ratio %.2fx)\n", order[k], b, a / b,
               round_ratio("anybit", "baseline", order[k])
    }
    printf "(medians of %d alternating runs each, and the median of each round'"'"'s own ratio; > 1: anybit is faster)\n", repeats
    # The integer engine against FP32 inference at the same batch (int4_infer and pact4_infer:
    # resnet20_infer, int4_infer_1: resnet20_infer_1), anybit'"'"'s and PyTorch'"'"'s.
    for (k = 1; k <= names; ++k) {
      q = order[k]
      if (q !~ /^(int|pact)[0-9]_infer/) continue
      ref = q; sub(/^(int|pact)[0-9]_infer/, "resnet20_infer", ref)
      a = median("anybit", q); fa = median("anybit", ref); fp = median("pytorch", ref)
      printf "%s speed / FP32 %s: anybit %s, pytorch %s\n", q, ref,
             (a > 0 && fa > 0) ? sprintf("%.2fx", a / fa) : "-", (a > 0 && fp > 0) ? sprintf("%.2fx", a / fp) : "-"
    }
    # Step time of the quantized workloads relative to the fp32 step of the same side.
    for (k = 1; k <= names; ++k) {
      q = order[k]
      if (q != "quant4_train" && q != "joint_ce" && q != "joint_ours") continue
      a = median("anybit", q); fa = median("anybit", "resnet20_train")
      p = median("pytorch", q); fp = median("pytorch", "resnet20_train")
      printf "%s step time / resnet20_train step time: anybit %s, pytorch %s\n", q,
             (a > 0 && fa > 0) ? sprintf("%.2fx", fa / a) : "-", (p > 0 && fp > 0) ? sprintf("%.2fx", fp / p) : "-"
    }
  }' "$LOGS"/anybit.* $( [ -n "${BASELINE:-}" ] && echo "$LOGS"/baseline.* ) $( [ "$have_torch" = 1 ] && echo "$LOGS"/pytorch.* )
