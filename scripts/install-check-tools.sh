#!/usr/bin/env bash
# install-check-tools.sh - the tools that only check anybit's output, never part of the product:
# the npm package onnxruntime-node (ONNX Runtime for scripts/check_onnx.js), installed with
# --ignore-scripts into .checks/node_modules (ignored by git). `make test` calls this script; when
# npm is missing or the registry cannot be reached it says so and exits 0, and the ONNX Runtime
# test case says "skipped". (onnx.checker comes from Debian's python3-onnx: scripts/install-deps.sh.)
#
#   scripts/install-check-tools.sh            # once; later calls find it installed and return
set -uo pipefail
cd "$(dirname "$0")/.."
VERSION=1.30.0
if [ -f .checks/node_modules/onnxruntime-node/package.json ] &&
   grep -q "\"version\": \"$VERSION\"" .checks/node_modules/onnxruntime-node/package.json; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install-check-tools.sh: npm is not installed; the ONNX Runtime check will be skipped"
  exit 0
fi
mkdir -p .checks
echo "install-check-tools.sh: npm install --ignore-scripts onnxruntime-node@$VERSION into .checks/"
if ! (cd .checks && timeout 600 npm install --ignore-scripts --no-audit --no-fund --loglevel=error \
        "onnxruntime-node@$VERSION" >/dev/null); then
  echo "install-check-tools.sh: npm install failed; the ONNX Runtime check will be skipped"
fi
exit 0
