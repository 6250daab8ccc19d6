// int_engine.h - integer inference of an exported model (`anybit eval --engine int`).
//
//   nn::SafeTensors file = nn::read_safetensors("runs/cifar10_ours/export.safetensors");
//   quant::IntegerResNet net(file, 4);     // the network at 4 bits, in integer form
//   Tensor logits = net.forward(images);   // (N, 3, 32, 32) normalised float images
//
// What runs in integers. Every quantized convolution of the export file (export.h) at bit-width b
// multiplies unsigned activation codes u (the layer's own activation quantizer: PACT or LSQ, b
// bits) by signed weight codes q and accumulates in int32:
//
//   acc[p][m] = sum_k u[p][k] * q[m][k]      (p: an output pixel, m: an output channel,
//                                             k: (ky, kx, c) of the 3x3 or 1x1 window)
//
// The file stores the weights at b as w = S t + offset, t = 0 .. 2^n - 1 unsigned (n bits,
// usually n = b). Shifting t by its midpoint z = 2^(n-1) gives the signed code q = t - z, in
// [-2^(n-1), 2^(n-1) - 1] (one signed byte for n <= 8), and w = S q + O with O = offset + S z.
// With the activation step D (u = x / D rounded), the layer's output before BN is then
//
//   conv[p][m] = D S acc[p][m] + D O sum_k u[p][k]
//
// where sum_k u[p][k], the window's code sum, is counted while the window is gathered (DoReFa's
// weights are symmetric about a non-zero midpoint, so O = S / 2 there; LSQ's O is 0). The folded
// BN of b (scale g, shift h per channel) and the next layer's quantizer are applied in the same
// pass over acc (the "epilogue"): a conv followed by BN and ReLU writes the next layer's
// codes directly, u8, never a float tensor.
//
// What stays float. The FP stem conv and the classifier (as in training), and the residual
// stream: a block's output relu(BN2(conv2) + shortcut) is float32, because in the trained network
// the identity shortcut carries the unquantized activation (METHOD.md's networks quantize a
// conv's input, not the block's output); each conv that reads it quantizes it with its own
// quantizer (conv1 and a 1x1 shortcut conv have different clips). Rounding that stream to
// integers would change the network it was trained as, so it is not done.
//
// The integer product (IntMatmul). The codes are gathered into rows of K bytes (im2col, NHWC),
// K padded with zeros to a multiple of 4. With AVX2: vpmaddubsw multiplies 32 unsigned by 32
// signed bytes and adds neighbouring pairs into 16 int16; those are summed in int16 for as many
// steps as cannot overflow (`flush`, from the code ranges), then widened to int32 with vpmaddwd.
// vpmaddubsw saturates a pair sum above 32767: 2 * 255 * 128 exceeds it, so at 8-bit weights and
// 8-bit activations the weights are split as q = 16 hi + lo (lo in 0..15, hi in -8..7) and the
// two halves are multiplied separately. With AVX-512 VNNI (built with -march=native on a CPU that
// has it): vpdpbusd multiplies 64 unsigned by 64 signed bytes and adds each 4 products into an
// int32 lane in one instruction, exactly, so every bit pair takes one pass over the weights, in
// blocks of 16 channels. The portable path (no AVX2, or ANYBIT_PORTABLE) is a plain int32 loop;
// tests check every kernel the build has against a 64-bit scalar reference at every bit pair,
// the extreme codes included.
//
// Equality with the fake-quantized network. The integer sums are exact; the float parts differ
// from the training graph's only in the order of float operations, so a code of the next layer
// can differ where x / D sits within a rounding error of a half-integer (see
// docs/RESULTS.md for how often that changes a prediction).
//
// Supported: the zoo's CIFAR ResNet (resnet20: BasicBlocks with 1x1 projection shortcuts, any input
// size; the reader walks layer<s>.<i> as the file has them, so deeper CIFAR ResNets need only their
// name accepted), bit-widths 1..8 with weight codes of at most 8 bits, PACT or LSQ activations,
// DoReFa or LSQ weights. Anything else (LeNet-5, the ImageNet ResNets, TSM video models) is
// refused with a message naming it.
// Read next: int_engine.cpp, tests/test_int_engine.cpp, apps/anybit/eval.cpp (--engine int).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "tensor/tensor.h"

namespace anybit::quant {

// acc (P x M, int32, row-major) = x (P x padded_k() bytes, unsigned codes < 2^act_bits, zero
// beyond K) times w^T (w: M x K signed codes in [-2^(weight_bits-1), 2^(weight_bits-1) - 1]).
// The implementations of the product: a plain int32 loop, AVX2 (vpmaddubsw), AVX-512 VNNI (vpdpbusd).
enum class IntKernel { Portable, Avx2, Vnni512 };

class IntMatmul {
 public:
  IntMatmul() = default;
  IntMatmul(const std::vector<int8_t>& w, int64_t M, int64_t K, int weight_bits, int act_bits);
  void run(const uint8_t* x, int64_t P, int32_t* acc) const;
  // The same product with rows read in place: row p's 4-byte group g (K bytes 4g .. 4g + 3) is
  // at rows[p] + goff[g], for g < padded_k() / 4. An NHWC map with a zero border gives every
  // window this way without copying it (run_conv), as long as a tap's C bytes hold whole groups.
  void run_rows(const uint8_t* const* rows, const int32_t* goff, int64_t P, int32_t* acc) const;
  int64_t rows() const { return M_; }
  int64_t depth() const { return K_; }
  int64_t padded_k() const { return Kp_; }
  // The kernels this build has (portable first, the fastest last, which is the one used unless
  // use_kernel picks another: for the tests and benchmarks; process-wide).
  static std::vector<IntKernel> kernels();
  static void use_kernel(IntKernel k);
  static IntKernel kernel();
  static const char* kernel_name(IntKernel k);

 private:
  int64_t M_ = 0, K_ = 0, Kp_ = 0, Mp_ = 0;  // Mp_: M rounded up to 8 (one vector of int32)
  int flush_ = 1;                            // 4-byte steps summed in int16 before widening
  // The weights, one or two planes (8-bit x 8-bit: hi and lo), each with its multiplier, in
  // the AVX2 kernel's order: [M / 8][Kp / 4][8 channels][4 bytes].
  std::vector<std::vector<int8_t>> planes_;
  std::vector<int32_t> plane_mult_;
  std::vector<int8_t> plain_;  // M x Kp, row-major: the portable loop's
  std::vector<int8_t> vnni_;   // the AVX-512 VNNI kernel's: [M / 16][Kp / 4][16 channels][4 bytes]
};

// The 64-bit scalar reference of IntMatmul::run (x: P x K, no padding).
std::vector<int64_t> int_matmul_reference(const std::vector<uint8_t>& x, const std::vector<int8_t>& w, int64_t P,
                                          int64_t M, int64_t K);

// An activation quantizer in integer form: code(x), and the step D of a code.
struct ActCodes {
  bool lsq = false;
  float clip = 0, levels = 0;  // PACT: x clamped to [0, clip], times levels / clip, rounded
  float step = 0;              // LSQ: x / step clamped to [0, levels], rounded
  float unit = 0;              // D: one code's value (PACT clip / levels, LSQ step)
  uint8_t code(float x) const;
  void codes(const float* x, int64_t n, uint8_t* out) const;  // out[i] = code(x[i])
};

// One quantized conv of the network with the BN after it, in integer form.
struct IntConv {
  std::string name;                        // the layer's name in the file, e.g. "layer2.0.conv1"
  int64_t cin = 0, cout = 0, kernel = 1, stride = 1, pad = 0;
  ActCodes act;                            // the quantizer of its input
  IntMatmul matmul;                        // its weight codes, K in the order (ky, kx, c)
  // The epilogue: BN(conv)[p][m] = alpha[m] acc[p][m] + beta[m] codesum[p] + gamma[m].
  std::vector<float> alpha, beta, gamma;
  // What those came from (the ONNX writer, onnx_export.h, uses them): the signed weight codes q
  // in the file's order (m, c, ky, kx) with w = scale q + offset, their bits, the folded BN.
  std::vector<int8_t> codes;
  double weight_scale = 0, weight_offset = 0;
  int weight_bits = 0;
  std::vector<float> bn_scale, bn_shift, bias;
};

// BN(conv(codes)) of one conv, float, NHWC (n, oh, ow, cout), from its input codes (n, h, w, cin):
// what the network's forward does inside, for the tests. border > 0: the codes are first placed in
// a map with that many zero pixels around each image, as the forward's own maps, so that a conv
// whose padding the border covers reads its windows in place; 0: the windows are copied out.
std::vector<float> int_conv_bn(const IntConv& c, const uint8_t* codes, int64_t n, int64_t h, int64_t w,
                               int64_t border = 0);

struct IntBlock {                          // a BasicBlock: relu(BN2(conv2(relu(BN1(conv1 x)))) + shortcut x)
  IntConv conv1, conv2, shortcut;
  bool has_shortcut = false;               // a 1x1 projection (else the identity)
};

class IntegerResNet {
 public:
  // file: an export file (anybit-export-1) of a CIFAR ResNet; bits: one of its exported bit-widths.
  IntegerResNet(const nn::SafeTensors& file, int bits);
  // images: (N, 3, H, W) float32, normalised as in training -> logits (N, classes), float32.
  // Not for two threads at once on one engine: the activation maps are reused (maps_ below).
  Tensor forward(const Tensor& images);
  // A large batch goes through forward() in groups of a few images, a thread to a group (true,
  // the default), or whole, each conv shared out among the threads (false; what a small batch
  // always does). The results are the same either way.
  void set_grouping(bool on) { grouping_ = on; }
  int bits() const { return bits_; }
  int64_t num_classes() const { return fc_w_.size(0); }
  const std::vector<IntBlock>& blocks() const { return blocks_; }
  // The float parts: the stem conv (weight, bias: undefined if none) with its folded BN, the classifier.
  const Tensor& stem_weight() const { return stem_w_; }
  const Tensor& stem_bias() const { return stem_b_; }
  const std::vector<float>& stem_bn_scale() const { return stem_scale_; }
  const std::vector<float>& stem_bn_shift() const { return stem_shift_; }
  const Tensor& fc_weight() const { return fc_w_; }
  const Tensor& fc_bias() const { return fc_b_; }

 private:
  int bits_ = 0;
  Tensor stem_w_, stem_b_, fc_w_, fc_b_;
  std::vector<float> stem_scale_, stem_shift_;  // the stem's folded BN at bits_
  std::vector<IntBlock> blocks_;
  // The activation maps of forward(), one set per thread, kept from one call to the next: fresh
  // memory costs a page fault per 4 KiB every call (tensor/storage.h).
  struct Maps {
    std::vector<float> x, sc, out;
    std::vector<uint8_t> u1, us, u2, next1, nexts;
  };
  std::vector<Maps> maps_;
  bool grouping_ = true;
  // The network after the stem's conv for `count` images (stem: their conv output, NCHW), with
  // the maps `maps`, to their average-pooled features (pooled: `count` rows).
  void forward_images(const float* stem, int64_t count, int64_t channels, int64_t height, int64_t width, Maps& maps,
                      float* pooled) const;
};

}  // namespace anybit::quant
