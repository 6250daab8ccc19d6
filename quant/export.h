// export.h - a trained multi-bit-width model as one deployment file (`anybit export`).
//
// The file is safetensors (nn/checkpoint.h writes and reads it), metadata "format" =
// "anybit-export-1". Per quantized layer L (QConv2d, QLinear) and exported bit-width b < 32:
//   L.codes               uint8, the weights' unsigned integer codes of c bits as c bit planes,
//                         the most significant first: plane k is ceil(n / 8) bytes holding bit
//                         c - 1 - k of code i at bit i % 8 of byte i / 8 (n codes, in the order of
//                         the weights' elements; L.shape, int64, is their shape)
//   L.code_bits           int64 [1]: c
//   L.b<b>.scale, L.b<b>.offset   float64 [1]: weights at b = scale * (top << shift) + offset
//   L.b<b>.shift          int64 [1]: top = the codes' first c - shift planes (codes >> shift)
// One code set serves every bit-width that is the top bits of it (DoReFa with weight_store =
// truncate: c = B, shift = B - b): running at b reads only its first b planes, b / B of the set.
// Otherwise each bit-width has its own set, under L.b<b>.codes, L.b<b>.code_bits (shift 0). A b = 32 member stores L.b32.weight (float32, what the layer
// uses). L.bias stays float32; the activation quantizer's parameters of b are stored as they are
// (L.clip_b<b> for PACT, L.act_step_b<b> for LSQ), its name in the metadata ("act_quant").
// Per BN layer M (one BN set per bit-width in training) the set of b folded for inference:
//   M.b<b>.scale = gamma / sqrt(running_var + eps),  M.b<b>.shift = beta - running_mean * scale
// Everything else (the FP stem and classifier) is stored as float32 under its own name.
//
// export_model() checks what it wrote: it reads the file back, rebuilds every quantized layer's
// weights at every exported bit-width from the codes and compares them with the layer's own
// fake-quantized weights (a mismatch is an error naming the layer).
// Read next: apps/anybit/export.cpp (the command), tests/test_export.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "quant/qmodel.h"

namespace anybit::quant {

// Unsigned codes (each < 2^bits, bits in 1..16) as bit planes, the most significant first (see
// above). unpack_codes reads the first `planes` planes (default: all), i.e. codes >> (bits - planes).
std::vector<uint8_t> pack_codes(const std::vector<int64_t>& codes, int bits);
std::vector<int64_t> unpack_codes(const uint8_t* bytes, size_t nbytes, int64_t count, int bits, int planes = -1);

struct ExportSizes {
  int bits = 0;
  // Bytes needed to run at `bits`: the code planes it reads, its scales, shifts and activation
  // parameters, its folded BN, and the float tensors.
  double bytes = 0;
};

// Writes `model` at the bit-widths `bits` (each in its bit set) to `path` (atomically), with
// `metadata` added to the file's; returns the sizes per bit-width.
std::vector<ExportSizes> export_model(QuantModel& model, const std::vector<int>& bits, const std::string& path,
                                      const nn::Metadata& metadata = {});

// The weights of quantized layer `layer` at bit-width b, rebuilt from an export file's tensors.
Tensor exported_weights(const nn::SafeTensors& file, const std::string& layer, int bits);

}  // namespace anybit::quant
