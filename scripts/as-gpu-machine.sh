#!/usr/bin/env bash
# as-gpu-machine.sh CMD [ARG...] - runs CMD here as if on the GPU machine that scripts/gpu-check.sh
# is written for, as far as libraries go. That machine has nvcc, CMake and g++ but none of the
# Debian packages anybit builds against; gpu-check.sh finds them in .deps/root
# (scripts/fetch-gpu-deps.sh). Here they are installed, so a package that fetch-gpu-deps.sh forgot
# would go unnoticed until the GPU's few minutes are spent on a failed configure. So CMD runs in a
# private mount namespace where /usr is overlaid with a layer that deletes (overlayfs "whiteouts")
# every file of the packages below: the -dev packages, the runtime libraries that .deps brings,
# FFmpeg, and Open MPI with the libraries it needs. Nothing outside CMD sees any change.
#
#   scripts/fetch-gpu-deps.sh
#   OUT=/tmp/gc_out scripts/as-gpu-machine.sh bash scripts/gpu-check.sh
#
# Without a GPU here, gpu-check.sh then configures, builds and runs the suite as it would there,
# and reports "no usable CUDA GPU" at each GPU step (exit status 1). Needs root (unshare, mount)
# and a kernel with overlayfs.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARG...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "as-gpu-machine.sh: needs root (it mounts an overlay in a private namespace)" >&2; exit 1; }

HIDDEN=(libopenblas-openmp-dev libopenblas0-openmp libopenblas-pthread-dev libopenblas0-pthread libopenblas-dev
        libopenblas0 libgfortran5 libquadmath0 libstb-dev libstb0 catch2 zlib1g-dev libturbojpeg0-dev
        libturbojpeg0 libjpeg62-turbo-dev libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
        libswresample-dev libavformat59 libavcodec59 libswscale6 libavutil57 libswresample4 ffmpeg
        libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libevent-core-2.1-7
        libevent-pthreads-2.1-7 libfabric1 libhwloc15 libhwloc-plugins libibverbs1 ibverbs-providers libmunge2
        libnl-route-3-200 libnl-3-200 libnuma1 libpsm-infinipath1 libpsm2-2 librdmacm1 libucx0
        pkgconf pkgconf-bin pkg-config)
# The packages of scripts/install-deps.sh that stay visible: the GPU machine has its own compilers,
# CMake and make, and its own Python with PyTorch; the data tools only unpack what travels.
NOT_HIDDEN=(cmake g++ make zstd gzip python3-torch python3-numpy python3-onnx)

# Each package install-deps.sh installs must be in one of the two lists, so that a dependency added
# there cannot slip past this rehearsal (as TurboJPEG and FFmpeg once did).
eval "$(sed -n '/^PACKAGES=(/,/)$/p' "$(dirname "$0")/install-deps.sh")"
for p in "${PACKAGES[@]}"; do
  case " ${HIDDEN[*]} ${NOT_HIDDEN[*]} " in
    *" $p "*) ;;
    *) echo "as-gpu-machine.sh: scripts/install-deps.sh installs $p, which is in neither HIDDEN nor NOT_HIDDEN" \
            "here: hide it (and make scripts/fetch-gpu-deps.sh carry it if the build needs it), or say why not" >&2
       exit 1 ;;
  esac
done

LAYER=$(mktemp -d /tmp/as-gpu-machine.XXXXXX)
trap 'rm -rf "$LAYER"' EXIT
mkdir -p "$LAYER/upper" "$LAYER/work"
# One whiteout (a 0/0 character device in the upper layer) per file of the installed packages, made
# in one Python process: a shell loop over two thousand files takes minutes on a busy machine.
{ dpkg-query -W -f='${Package} ${Status}\n' "${HIDDEN[@]}" 2>/dev/null || true; } | awk '/ installed$/ {print $1}' |
  xargs -r dpkg -L | python3 -c '
import os, stat, sys
upper, hidden = sys.argv[1], 0
for path in sys.stdin.read().split("\n"):
    if path.startswith(("/lib/", "/bin/", "/sbin/")):
        path = "/usr" + path  # merged /usr: /lib/x86_64-linux-gnu/... is /usr/lib/x86_64-linux-gnu/...
    if not path.startswith("/usr/") or not os.path.lexists(path):
        continue
    if os.path.isdir(path) and not os.path.islink(path):
        continue  # directories are shared with other packages
    out = os.path.join(upper, path[len("/usr/"):])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if not os.path.lexists(out):
        os.mknod(out, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        hidden += 1
print("as-gpu-machine.sh: %d files of the packages below hidden" % hidden, file=sys.stderr)
' "$LAYER/upper"
echo "as-gpu-machine.sh: packages: ${HIDDEN[*]} (those installed); running: $*" >&2
# The alternatives links (/usr/lib/x86_64-linux-gnu/libopenblas.so.0 -> /etc/alternatives/...)
# are not in any package's list; they dangle once their targets are gone, which is what the GPU
# machine shows too: no such library.
unshare -m bash -c 'mount -t overlay overlay -o "lowerdir=/usr,upperdir=$1/upper,workdir=$1/work" /usr && shift && exec "$@"' \
  as-gpu-machine "$LAYER" "$@"
