#!/usr/bin/env bash
# profile_train.sh WORKLOAD [BUILD] [THREADS] - where a bench_train step spends its time, by
# category, from `perf record` (sampling, user and kernel symbols of the process alone).
#
# Runs build/bench_train --only WORKLOAD under perf with enough steps that set-up and the first
# step's page faults weigh little, then sums perf's self time per symbol into categories:
#   conv direct kernels     tensor/cpu/conv_direct.cpp (forward, input and weight gradients, padded copies)
#   conv GEMM (OpenBLAS)    sgemm_* kernels and packing routines
#   conv im2col / col2im    im2col, the conv backward loop (col2im, bias), memcpy/memset of rows
#   batch norm              train_fwd / bwd of tensor/cpu/norm.cpp
#   quantizers              anybit::quant::* (PACT fwd/bwd), tanhf/expm1f of DoReFa
#   elementwise, reductions binary_loop / unary_loop / reduce_* / strided_copy / softmax
#   OpenMP runtime          libgomp (threads waiting at barriers: large when the machine is loaded)
#   page faults (kernel)    first touch of memory (set-up and the first step; see `sys allocs`)
# Usage: scripts/profile_train.sh resnet20_train build 1     (THREADS defaults to 2)
# Needs perf (linux-perf) and kernel.perf_event_paranoid <= 2.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: profile_train.sh WORKLOAD [BUILD] [THREADS]}
BUILD=${2:-build}
THREADS=${3:-2}
DATA=$(mktemp /tmp/profile_train.XXXXXX)
trap 'rm -f "$DATA"' EXIT
perf record -q -o "$DATA" "$BUILD/bench_train" --only "$W" --threads "$THREADS" --warmup 2 --steps 6 --repeats 1 | grep -v '^#'
perf report -i "$DATA" --no-children --sort dso,sym --stdio 2>/dev/null | awk -v w="$W" -v t="$THREADS" '
  /^ +[0-9.]+%/ {
    p = $1; sub(/%/, "", p); line = $0
    if (line ~ /direct_block|direct_dw|direct_conv|padded_block|pad_input|lanes_dw|transpose8x8/) c = "conv direct kernels (conv_direct.cpp)"
    else if (line ~ /sgemm|cblas_/) c = "conv GEMM (OpenBLAS)"
    else if (line ~ /im2col|col2im|backward_impl|conv2d|memmove|memcpy|memset/) c = "conv im2col / col2im / copies"
    else if (line ~ /train_fwd|::bwd<|batch_norm|eval_fwd/) c = "batch norm"
    else if (line ~ /quant::|tanh|expm1/) c = "quantizers"
    else if (line ~ /binary|unary|reduce|strided_copy|softmax|log_softmax|cross_entropy|pool/) c = "elementwise, reductions, pooling"
    else if (line ~ /libgomp/) c = "OpenMP runtime (waiting)"
    else if (line ~ /\[k\]/) c = "kernel (page faults, scheduling)"
    else c = "other"
    sum[c] += p
  }
  END {
    printf "profile of %s, %s thread(s): share of samples\n", w, t
    fflush()
    for (k in sum) printf "  %6.1f%%  %s\n", sum[k], k | "sort -rn"
    close("sort -rn")
  }'
