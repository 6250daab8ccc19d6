#!/usr/bin/env bash
# install-deps.sh - installs the Debian packages anybit builds and tests with. Idempotent: it
# does nothing when everything is present. As root it runs apt-get; otherwise it prints the exact
# command to run and exits with an error.
#
#   build:  cmake g++ libopenblas-openmp-dev (OpenBLAS built with OpenMP: PERF-NOTES.md) libstb-dev
#           (PNG/BMP decoding) libturbojpeg0-dev (libjpeg-turbo's TurboJPEG API: JPEG decoding,
#           data/image_decode.cpp) zlib1g-dev pkg-config libavformat-dev libavcodec-dev
#           libswscale-dev libavutil-dev (FFmpeg's C libraries: video decoding and encoding,
#           data/video_decode.cpp) libopenmpi-dev openmpi-bin (Open MPI: data-parallel training
#           with mpirun, nn/distributed.h; the build works without it, single-process)
#   tests:  catch2; ffmpeg (the command-line tool: the video tests compare anybit's decoded frames
#           with its output); python3-torch and python3-numpy (Debian python3: the checkpoint test loads an
#           anybit checkpoint into PyTorch; the golden fixtures are regenerated with them);
#           python3-onnx (onnx.checker on the ONNX graphs of anybit export --format onnx)
#   data:   zstd (the CIFAR-10 archive), gzip
set -euo pipefail

PACKAGES=(cmake g++ make pkg-config libopenblas-openmp-dev libstb-dev libturbojpeg0-dev zlib1g-dev
          libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libopenmpi-dev openmpi-bin catch2 ffmpeg zstd gzip python3-torch python3-numpy python3-onnx)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps.sh: run as root:  apt-get update && $cmd" >&2
  exit 1
fi
echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
$cmd
