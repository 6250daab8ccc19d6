#!/usr/bin/env bash
# gpu-check.sh - the one prepared check for a machine with an NVIDIA GPU: builds anybit with the
# CUDA backend for sm_90 (H100/H200) against the Debian packages unpacked in .deps/root, runs the
# [cuda] tests, then the whole suite, and leaves the logs in $OUT.
#
# That machine has nvcc, CMake and g++ but no Debian -dev packages and no network, so first, here:
#   scripts/fetch-gpu-deps.sh          # fills .deps/root (about 42 MiB; .deps/ is git-ignored)
# then on the GPU machine (device tool: carry .deps):
#   run(command="bash scripts/gpu-check.sh", carry=[".deps"], timeout_s=480)
#
# The [cuda] run sets CUDA_LAUNCH_BLOCKING=1 so that a failing kernel is reported at its own launch.
# Environment: OUT (log folder; default build-gpu/gpu-check-logs), BUILD (build folder; default build-gpu),
# ARCHS (CUDA architectures; default 90). Exit status: 0 only when everything built, the [cuda]
# tests really ran on a GPU (none skipped) and every test passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-gpu}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OUT=${OUT:-$BUILD/gpu-check-logs}
ARCHS=${ARCHS:-90}
DEPS=$ROOT/.deps/root
mkdir -p "$OUT"

say() { echo "gpu-check: $*" | tee -a "$OUT/summary.log"; }
fail() { say "FAILED: $*"; exit 1; }

[ -d "$DEPS" ] || fail "$DEPS is missing: run scripts/fetch-gpu-deps.sh before, and carry .deps"
export PATH="/usr/local/cuda/bin:$PATH"
export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu/openblas-openmp:$DEPS/usr/lib/x86_64-linux-gnu:$DEPS/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
  echo "== nvidia-smi -L"; nvidia-smi -L
  echo "== nvcc"; nvcc --version | tail -2
  echo "== cmake"; cmake --version | head -1
  echo "== g++"; g++ --version | head -1
  echo "== nproc"; nproc
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

say "configure ($BUILD, CUDA architectures $ARCHS)"
cmake -S . -B "$BUILD" -DANYBIT_DEPS_ROOT="$DEPS" -DANYBIT_CUDA=ON -DANYBIT_CUDA_ARCHS="$ARCHS" \
  > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; fail "cmake configure (configure.log)"; }
grep "anybit:" "$OUT/configure.log"

# The test program first (the library and the tests), the other programs after the tests.
say "build anybit_tests"
start=$(date +%s)
cmake --build "$BUILD" -j"$(nproc)" --target anybit_tests > "$OUT/build.log" 2>&1 ||
  { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; fail "build (build.log)"; }
say "built in $(( $(date +%s) - start )) s"

status=0
say "[cuda] tests"
CUDA_LAUNCH_BLOCKING=1 timeout 300 "$BUILD/anybit_tests" "[cuda]" > "$OUT/cuda-tests.log" 2>&1 || status=1
tail -60 "$OUT/cuda-tests.log"
if grep -q "skipping:" "$OUT/cuda-tests.log"; then
  say "the [cuda] tests skipped: the GPU was not usable (see cuda-tests.log)"
  status=1
fi

say "whole suite"
timeout 300 "$BUILD/anybit_tests" > "$OUT/all-tests.log" 2>&1 || status=1
tail -5 "$OUT/all-tests.log"

say "build everything else (programs, benchmarks)"
cmake --build "$BUILD" -j"$(nproc)" >> "$OUT/build.log" 2>&1 ||
  { grep -E "error|Error" -A3 "$OUT/build.log" | head -40; say "the full build failed (build.log)"; status=1; }

# GPU benchmarks: anybit's CUDA kernels, then the same operations in PyTorch on the same GPU.
if [ -x "$BUILD/bench_cuda" ]; then
  say "benchmarks (bench.log)"
  { "$BUILD/bench_cuda" --reps 50; echo; python3 scripts/bench_cuda_torch.py --reps 50; } > "$OUT/bench.log" 2>&1 ||
    say "a benchmark failed (bench.log)"
  cat "$OUT/bench.log"
fi

[ $status -eq 0 ] || fail "see summary.log, cuda-tests.log, all-tests.log, build.log"
say "OK: built with CUDA, [cuda] tests ran on the GPU, whole suite passed"
