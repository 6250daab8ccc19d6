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
#   turbojpeg.h, libturbojpeg libturbojpeg0-dev, libturbojpeg0 (JPEG decoding, data/image_decode.cpp)
#   mpicxx, mpirun, libmpi    libopenmpi-dev, openmpi-bin, libopenmpi3, openmpi-common and the
#                             libraries Open MPI loads (PMIx, hwloc, libevent, UCX, libfabric, ...):
#                             data-parallel training on the GPU (issue 13). Open MPI finds its own
#                             files under $OPAL_PREFIX, which gpu-check.sh points at .deps/root/usr
#                             (and PMIx its plugins through PMIX_MCA_mca_base_component_path).
# libgomp comes with the GPU machine's g++. FFmpeg is not fetched: its libraries need dozens of
# codec libraries at run time, far more than travels, so gpu-check.sh builds with -DANYBIT_VIDEO=OFF
# (no video; data/video_without_ffmpeg.cpp). Static libraries, LAPACK, docs and the .debs are
# deleted afterwards to keep .deps small (it travels to the GPU machine: the limit there is 64 MiB
# for the whole working tree). .deps/ is in .gitignore.
#
# What travels (the device tool's carry): .deps/carry, holding .deps/root packed (root.tar.gz:
# 75 MB of libraries is 22 MB packed) and CIFAR-10's JPEG tree from datasets/cifar10
# (cifar10-jpeg.tar.gz, 20 MB; scripts/get-data.sh puts it there), and datasets/mnist (11 MB).
# gzip, not zstd or xz: tar can unpack it anywhere. gpu-check.sh unpacks both there.
#
# Usage (in the repo root, or anywhere: it finds the root itself):  scripts/fetch-gpu-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0 libstb-dev catch2 zlib1g-dev zlib1g
          libturbojpeg0-dev libturbojpeg0
          libopenmpi-dev openmpi-bin libopenmpi3 openmpi-common libpmix2 libevent-core-2.1-7 libevent-pthreads-2.1-7
          libfabric1 libhwloc15 libibverbs1 ibverbs-providers libmunge2 libnl-route-3-200 libnl-3-200 libnuma1
          libpsm-infinipath1 libpsm2-2 librdmacm1 libucx0 libatomic1)

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

# The names Debian gives through its alternatives system (links made at install time, in no
# package): mpirun, mpicxx, and the PSM library one of Open MPI's plugins loads.
ln -sfn mpirun.openmpi .deps/root/usr/bin/mpirun
ln -sfn mpicxx.openmpi .deps/root/usr/bin/mpicxx
ln -sfn ../libpsm1/libpsm_infinipath.so.1.16 .deps/root/usr/lib/x86_64-linux-gnu/libpsm_infinipath.so.1

# Only what the build and the tests use (libstb.so points into libstb0, which is not fetched).
# Of usr/share, Open MPI's help texts and its compiler wrappers' data (usr/share/openmpi).
find .deps/root -xtype l -delete
find .deps/root -name '*.a' -delete
find .deps/root/usr/share -mindepth 1 -maxdepth 1 ! -name openmpi -exec rm -rf {} +
rm -rf .deps/root/usr/lib/x86_64-linux-gnu/openmpi/lib/*java* .deps/root/usr/share/openmpi/*java*
rm -f .deps/root/usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so*

# Every header and library the build looks for must be there.
for f in usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
         usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so \
         usr/lib/x86_64-linux-gnu/libgfortran.so.5 \
         usr/include/stb/stb_image.h usr/include/catch2/catch.hpp \
         usr/include/zlib.h usr/lib/x86_64-linux-gnu/libz.so \
         usr/include/turbojpeg.h usr/lib/x86_64-linux-gnu/libturbojpeg.so \
         usr/bin/mpirun usr/bin/mpicxx usr/share/openmpi/mpicxx-wrapper-data.txt \
         usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so usr/lib/x86_64-linux-gnu/pmix2/lib/pmix; do
  [ -e ".deps/root/$f" ] || { echo "fetch-gpu-deps.sh: missing .deps/root/$f" >&2; exit 1; }
done
echo "fetch-gpu-deps.sh: .deps/root ready ($(du -sh .deps/root | cut -f1))"

# The packed copies that travel.
rm -rf .deps/carry
mkdir -p .deps/carry
tar czf .deps/carry/root.tar.gz -C .deps root
scripts/get-data.sh mnist datasets/mnist
scripts/get-data.sh cifar10 datasets/cifar10
if [ -d datasets/cifar10/train ] && [ -d datasets/cifar10/test ]; then
  tar czf .deps/carry/cifar10-jpeg.tar.gz -C datasets/cifar10 train test
else  # the binary form (downloaded, 184 MB) does not fit in what travels
  echo "fetch-gpu-deps.sh: datasets/cifar10 is not the JPEG tree: gpu-check.sh will leave out its CIFAR-10 run" >&2
fi
echo "fetch-gpu-deps.sh: .deps/carry ready ($(du -sh .deps/carry | cut -f1)); with datasets/mnist" \
     "($(du -sh datasets/mnist | cut -f1)) it travels: carry=[\".deps/carry\", \"datasets/mnist\"]"
