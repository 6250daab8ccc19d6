// onnx_export.h - an exported network at one bit-width as a standard ONNX QDQ graph
// (`anybit export --format onnx`), runnable by ONNX Runtime and any other ONNX tool.
//
//   quant::IntegerResNet net(nn::read_safetensors("runs/r/export.safetensors"), 4);
//   quant::write_onnx(net, "runs/r/export.b4.onnx");
//
// The graph (opset 13) is the network the integer engine (int_engine.h) runs, written with
// QuantizeLinear / DequantizeLinear pairs as quantization tools (Brevitas, NNCF) export low-bit
// models:
//   activations  Clip(x, 0, D (2^b - 1)) -> QuantizeLinear(D, zero point 0, uint8) ->
//                DequantizeLinear(D): the codes are restricted to the 2^b levels of b bits by the
//                Clip, since QuantizeLinear itself saturates at 255 only;
//   weights      int8 initializers of the signed codes q -> DequantizeLinear(S). DoReFa's weights
//                are symmetric about a non-zero midpoint (w = S q + S / 2): they are stored as the
//                odd integers 2q + 1 with scale S / 2 (int8 up to 7 bits, int32 at 8); any other
//                offset O is added after the DequantizeLinear;
//   BN           folded, as Mul and Add by per-channel constants after each Conv;
//   the rest     the FP stem Conv, Relu, the residual Add, GlobalAveragePool, Flatten, Gemm.
// Input "images" (N, 3, H, W) float32, normalised as in training (N, H, W free); output "logits".
//
// The file is written by the small protobuf encoder below (onnx.proto's field numbers; no
// dependency): a ModelProto with ir_version 7 and one GraphProto, initializers as raw_data.
// What checks it: tests/test_onnx_export.cpp runs onnx.checker (Debian's python3-onnx) and ONNX
// Runtime (scripts/check_onnx.js, the npm package onnxruntime-node installed by
// scripts/install-check-tools.sh into .checks/) where they are available.
#pragma once
#include <string>

#include "quant/int_engine.h"

namespace anybit::quant {

void write_onnx(const IntegerResNet& net, const std::string& path);

}  // namespace anybit::quant
