#!/usr/bin/env bash
# Runs every benchmark program of a build folder (make bench). Usage: scripts/bench.sh [build]
# Leaves the environment as it is (OPENBLAS_CORETYPE included); the programs print what they use.
set -euo pipefail
BUILD="${1:-build}"
shopt -s nullglob
progs=("$BUILD"/bench_*)
if [ ${#progs[@]} -eq 0 ]; then
  echo "bench.sh: no bench_* programs in $BUILD (run make first)" >&2
  exit 1
fi
for p in "${progs[@]}"; do
  [ -x "$p" ] || continue
  echo "== $p"
  "$p"
done
