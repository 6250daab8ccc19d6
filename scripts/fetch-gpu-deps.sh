#!/usr/bin/env bash
# fetch-gpu-deps.sh - prepares .deps/root for scripts/gpu-check.sh.
#
# The GPU machine has nvcc, CMake and g++ but none of the Debian -dev packages anybit builds
# against, and it cannot download anything. So here, where apt works, this script downloads the
# .deb files (apt-get download: no root needed, nothing is installed) and unpacks them with
# dpkg -x into .deps/root, which CMake is then pointed at with -DANYBIT_DEPS_ROOT=$PWD/.deps/root.
#
#   cblas.h, libopenblas.so   libopenblas-openmp-dev, libopenblas0-openmp (the OpenMP build)
#   libgfortran.so.5          libgfortran5, libquadmath0 (libopenblas needs them at run time)
#   stb_image.h               libstb-dev (header only: libstb0 is not needed)
#   catch2/catch.hpp          catch2 (Catch2 v2, header only)
#   zlib.h, libz.so           zlib1g-dev, zlib1g (libz.so points into zlib1g)
# libgomp comes with the GPU machine's g++. Static libraries, LAPACK, docs and the .debs are
# deleted afterwards to keep .deps small (it travels to the GPU machine: the limit there is 64 MiB
# for the whole working tree). .deps/ is in .gitignore.
#
# Usage (in the repo root, or anywhere: it finds the root itself):  scripts/fetch-gpu-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0 libstb-dev catch2 zlib1g-dev zlib1g)

rm -rf .deps/debs .deps/root
mkdir -p .deps/debs .deps/root
(cd .deps/debs && apt-get download "${PACKAGES[@]}")
for f in .deps/debs/*.deb; do
  dpkg -x "$f" .deps/root
done
rm -rf .deps/debs

# Absolute symlinks (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) would point outside
# .deps on the GPU machine: make them relative links inside .deps/root.
find .deps/root -type l | while read -r link; do
  target=$(readlink "$link")
  case "$target" in
    /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" ".deps/root$target")" "$link" ;;
  esac
done

# Only what the build and the tests use (libstb.so points into libstb0, which is not fetched).
find .deps/root -xtype l -delete
find .deps/root -name '*.a' -delete
rm -rf .deps/root/usr/share
rm -f .deps/root/usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so*

# Every header and library the build looks for must be there.
for f in usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
         usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so \
         usr/lib/x86_64-linux-gnu/libgfortran.so.5 \
         usr/include/stb/stb_image.h usr/include/catch2/catch.hpp \
         usr/include/zlib.h usr/lib/x86_64-linux-gnu/libz.so; do
  [ -e ".deps/root/$f" ] || { echo "fetch-gpu-deps.sh: missing .deps/root/$f" >&2; exit 1; }
done
echo "fetch-gpu-deps.sh: .deps/root ready ($(du -sh .deps | cut -f1))"
