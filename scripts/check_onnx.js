#!/usr/bin/env node
// check_onnx.js PREFIX - runs anybit's ONNX graphs (PREFIX.b<bits>.onnx, written by
// `anybit export --format onnx --out PREFIX --check-images N`) in ONNX Runtime and compares them
// with anybit's fake-quantized network on the same images (PREFIX.check/: images.f32, labels.i64,
// logits.b<bits>.f32, meta.json).
//
// Per bit-width it prints: top-1 of anybit and of ONNX Runtime, the predictions that differ, and
// how close the logits are: an image's relative difference is the largest difference of its
// logits over its largest |logit|; "within 1e-3" counts the images where that is <= 1e-3, and
// the median and largest are shown. Two float programs sum a conv's products in different orders,
// so an activation that lies within a rounding error of a code boundary can take the neighbouring
// code in one of them; at 8 bits (small steps, many boundaries) most images have a few such codes,
// which moves their logits by about 1e-3 to 1e-2. So the check is: top-1 within 0.1 point, at
// most 1% of the predictions different, and the median image within 1e-3 (--median-tol T sets
// another bound: the tests' random, untrained networks amplify such a code much more than a
// trained one). Exit 1 when it fails, 2 on bad input.
//
// Needs the npm package onnxruntime-node, installed by scripts/install-check-tools.sh into
// .checks/node_modules (never part of the product), or anywhere on NODE_PATH.
"use strict";
const fs = require("fs");
const path = require("path");

function fail(msg) {
  console.error(`check_onnx.js: ${msg}`);
  process.exit(2);
}

let ort;
try {
  ort = require(path.join(__dirname, "..", ".checks", "node_modules", "onnxruntime-node"));
} catch (e) {
  try {
    ort = require("onnxruntime-node");
  } catch (e2) {
    fail("onnxruntime-node is not installed (scripts/install-check-tools.sh installs it into .checks/)");
  }
}

function readArray(file, Type) {
  if (!fs.existsSync(file)) fail(`${file} does not exist`);
  const b = fs.readFileSync(file);
  return new Type(b.buffer, b.byteOffset, b.byteLength / Type.BYTES_PER_ELEMENT);
}

function argmax(a, off, n) {
  let best = 0;
  for (let j = 1; j < n; ++j) if (a[off + j] > a[off + best]) best = j;
  return best;
}

async function main() {
  const args = process.argv.slice(2);
  let medianTol = 1e-3;
  const t = args.indexOf("--median-tol");
  if (t >= 0) {
    medianTol = Number(args[t + 1]);
    if (!(medianTol > 0)) fail(`--median-tol: expected a positive number, got '${args[t + 1]}'`);
    args.splice(t, 2);
  }
  const prefix = args[0];
  if (!prefix || args.length !== 1)
    fail("usage: node scripts/check_onnx.js [--median-tol T] PREFIX (the --out of anybit export --format onnx)");
  const check = `${prefix}.check`;
  if (!fs.existsSync(`${check}/meta.json`)) fail(`${check}/meta.json does not exist (export with --check-images N)`);
  const meta = JSON.parse(fs.readFileSync(`${check}/meta.json`, "utf8"));
  const n = meta.images, K = meta.classes, sample = meta.shape.reduce((a, b) => a * b, 1);
  const images = readArray(`${check}/images.f32`, Float32Array);
  const labels = readArray(`${check}/labels.i64`, BigInt64Array);
  if (images.length !== n * sample || labels.length !== n) fail(`${check}: sizes do not match meta.json`);
  let ok = true;
  console.log(`ONNX Runtime ${ort.env.versions ? ort.env.versions.common : ""} on ${n} images of ${check}`);
  console.log("| bits | anybit top-1 | ONNX Runtime top-1 | predictions that differ | images with logits within 1e-3 | median relative difference | largest |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const b of meta.bits) {
    const want = readArray(`${check}/logits.b${b}.f32`, Float32Array);
    if (want.length !== n * K) fail(`${check}/logits.b${b}.f32: ${want.length} values, expected ${n * K}`);
    const session = await ort.InferenceSession.create(`${prefix}.b${b}.onnx`, { intraOpNumThreads: 2 });
    const batch = 250;
    let rightA = 0, rightO = 0, differ = 0, close = 0;
    const rels = [];
    for (let s = 0; s < n; s += batch) {
      const m = Math.min(batch, n - s);
      const x = new ort.Tensor("float32", images.subarray(s * sample, (s + m) * sample), [m, ...meta.shape]);
      const got = (await session.run({ images: x })).logits.data;
      for (let i = 0; i < m; ++i) {
        const off = (s + i) * K;
        const pa = argmax(want, off, K), po = argmax(got, i * K, K), y = Number(labels[s + i]);
        rightA += pa === y;
        rightO += po === y;
        differ += pa !== po;
        let mag = 0, diff = 0;
        for (let j = 0; j < K; ++j) {
          mag = Math.max(mag, Math.abs(want[off + j]));
          diff = Math.max(diff, Math.abs(want[off + j] - got[i * K + j]));
        }
        const rel = diff / Math.max(mag, 1e-12);
        rels.push(rel);
        close += rel <= 1e-3;
      }
    }
    rels.sort((a, b) => a - b);
    const median = rels[Math.floor(n / 2)], worst = rels[n - 1];
    const ta = (100 * rightA) / n, to = (100 * rightO) / n;
    console.log(`| W${b}A${b} | ${ta.toFixed(2)} | ${to.toFixed(2)} | ${differ} | ${close} of ${n} | ${median.toExponential(2)} | ${worst.toExponential(2)} |`);
    if (Math.abs(ta - to) > 0.1 + 1e-9 || differ > 0.01 * n || median > medianTol) ok = false;
  }
  console.log(ok ? "check_onnx.js: agree" : "check_onnx.js: DISAGREE (top-1 off by more than 0.1 point, over 1% of the predictions different, or the median image's logits off by more than the bound)");
  process.exit(ok ? 0 : 1);
}

main().catch((e) => fail(e.message));
