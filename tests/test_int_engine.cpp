// test_int_engine.cpp - integer inference (quant/int_engine.h): the int8 product against a
// 64-bit reference at every bit pair, in both the AVX2 and the portable path; activation codes
// against the fake quantizers; the whole network against the fake-quantized one.
#include <algorithm>
#include <cmath>
#include <map>

#include "quant/export.h"
#include "quant/int_engine.h"
#include "quant/joint_trainer.h"
#include "quant/lsq.h"
#include "quant/quantizers.h"
#include "tests/helpers.h"
#include "tests/quant_model_helpers.h"

using namespace anybit;
using anybit::test::randn;

namespace {

// Restores the default kernel (the fastest) whatever a test does.
struct KernelSwitch {
  ~KernelSwitch() { quant::IntMatmul::use_kernel(quant::IntMatmul::kernels().back()); }
};

}  // namespace

TEST_CASE("IntMatmul: the int8 product equals a 64-bit reference at every bit pair, extremes included", "[int]") {
  KernelSwitch restore;
  Generator gen(7);
  // K = 37 and 300: not multiples of 32 (zero padding); M = 13: a partial block of 8 (AVX2) or 16
  // (VNNI) channels; M = 72: two pairs of 16-channel blocks, then a partial one; P = 11 and 19: not
  // multiples of the kernels' 4 or 8 rows; P = 4: fewer rows than VNNI's 8.
  for (auto [P, M, K] :
       {std::tuple<int64_t, int64_t, int64_t>{11, 13, 37}, {9, 16, 300}, {4, 8, 576}, {19, 72, 40}})
    for (int wb = 1; wb <= 8; ++wb)
      for (int ab = 1; ab <= 8; ++ab) {
        const int32_t wlo = -(1 << (wb - 1)), whi = (1 << (wb - 1)) - 1, umax = (1 << ab) - 1;
        for (int pattern = 0; pattern < 3; ++pattern) {
          // 0: random codes; 1: every code at its maximum, weights at their minimum (the largest
          // negative sums: where an int16 sum would overflow); 2: maxima against maxima.
          std::vector<uint8_t> x(P * K);
          std::vector<int8_t> w(M * K);
          for (auto& v : x) v = uint8_t(pattern == 0 ? gen.below(umax + 1) : umax);
          for (auto& v : w) v = int8_t(pattern == 0 ? wlo + (int32_t)gen.below(whi - wlo + 1) : (pattern == 1 ? wlo : whi));
          quant::IntMatmul mm(w, M, K, wb, ab);
          std::vector<uint8_t> padded(P * mm.padded_k(), 0);
          for (int64_t p = 0; p < P; ++p) std::copy(x.begin() + p * K, x.begin() + (p + 1) * K, padded.begin() + p * mm.padded_k());
          auto ref = quant::int_matmul_reference(x, w, P, M, K);
          for (quant::IntKernel kernel : quant::IntMatmul::kernels()) {
            INFO("P " << P << " M " << M << " K " << K << ", " << wb << "-bit weights, " << ab << "-bit codes, pattern "
                      << pattern << ", " << quant::IntMatmul::kernel_name(kernel));
            quant::IntMatmul::use_kernel(kernel);
            std::vector<int32_t> acc(P * M, -1);
            mm.run(padded.data(), P, acc.data());
            for (int64_t i = 0; i < P * M; ++i)
              if (acc[i] != ref[i]) FAIL("acc[" << i << "] = " << acc[i] << ", the reference " << ref[i]);
          }
        }
      }
  REQUIRE_THROWS_WITH(quant::IntMatmul(std::vector<int8_t>{8}, 1, 1, 4, 4), Catch::Contains("is not a 4-bit signed code"));
  REQUIRE_THROWS_WITH(quant::IntMatmul(std::vector<int8_t>{1}, 1, 1, 9, 4), Catch::Contains("each must be in 1..8"));
}

TEST_CASE("ActCodes: the codes of PACT and LSQ are the fake quantizers', bit for bit", "[int]") {
  // Values around every rounding boundary, beyond the clip and negative.
  Tensor x = randn({20000}, 3, DType::F32);
  x = mul(x, Tensor::from_vector(std::vector<float>{1.7f}, {1}));
  auto xv = x.to_vector<float>();
  for (int bits : {8, 6, 4, 2, 1}) {
    INFO(bits << " bits");
    const float levels = float((1 << bits) - 1);
    quant::ActCodes pact;
    pact.clip = 2.3f, pact.levels = levels, pact.unit = pact.clip / levels;
    auto yp = quant::pact_quantize(x, Tensor::from_vector(std::vector<float>{2.3f}, {1}), bits, false).to_vector<float>();
    quant::ActCodes lsq;
    lsq.lsq = true, lsq.step = 0.173f, lsq.levels = levels, lsq.unit = lsq.step;
    auto yl = quant::lsq_quantize(x, Tensor::from_vector(std::vector<float>{lsq.step}, {1}), 0, (int64_t)levels, x.numel())
                  .to_vector<float>();
    std::vector<uint8_t> many_pact(xv.size()), many_lsq(xv.size());  // the vectorised loop, all at once
    pact.codes(xv.data(), (int64_t)xv.size(), many_pact.data());
    lsq.codes(xv.data(), (int64_t)xv.size(), many_lsq.data());
    for (size_t i = 0; i < xv.size(); ++i) {
      REQUIRE(float(pact.code(xv[i])) * pact.unit == yp[i]);
      REQUIRE(float(lsq.code(xv[i])) * lsq.unit == yl[i]);
      REQUIRE(float(many_pact[i]) * pact.unit == yp[i]);
      REQUIRE(float(many_lsq[i]) * lsq.unit == yl[i]);
    }
  }
}

namespace {

// The random quantized ResNet-20 of quant_model_helpers.h, in evaluation mode.
std::unique_ptr<quant::QuantModel> trained_like_model(const quant::QuantOptions& opt) {
  auto m = test::random_quant_resnet20(opt, 8);
  m->net().eval();
  return m;
}

}  // namespace

TEST_CASE("IntegerResNet: every conv, and the whole network, against the fake-quantized network", "[int][export]") {
  KernelSwitch restore;
  test::ScratchDir tmp("anybit_int_engine");
  struct Case {
    const char* what;
    std::string wq, aq;
    quant::WeightStore store;
  };
  for (const Case& c : {Case{"dorefa truncate + pact", "dorefa", "pact", quant::WeightStore::Truncate},
                        Case{"lsq + lsq", "lsq", "lsq", quant::WeightStore::Round}}) {
    quant::QuantOptions opt;
    opt.bit_set = {8, 6, 4, 2};
    opt.weight_quant = c.wq;
    opt.act_quant = c.aq;
    opt.weight.store = c.store;
    opt.weight.store_bits = 8;
    auto m = trained_like_model(opt);
    const std::string path = tmp / (c.wq + ".safetensors");
    quant::export_model(*m, opt.bit_set, path);
    nn::SafeTensors f = nn::read_safetensors(path);
    std::map<std::string, nn::Module*> mods;
    for (auto& [name, mod] : m->net().named_modules()) mods[name] = mod.get();
    Tensor x = randn({6, 3, 32, 32}, 21, DType::F32), big = randn({42, 3, 32, 32}, 22, DType::F32);
    NoGradGuard ng;
    for (int b : opt.bit_set) {
      m->set_bits(b);
      quant::IntegerResNet net(f, b);
      REQUIRE(net.blocks().size() == 9);
      for (quant::IntKernel kernel : quant::IntMatmul::kernels()) {
        INFO(c.what << " at " << b << " bits, " << quant::IntMatmul::kernel_name(kernel));
        quant::IntMatmul::use_kernel(kernel);
        // Each conv with its BN, from the same codes: the fake layer sums floats, the engine
        // integers, so they differ by the float sum's rounding only.
        int convs = 0;
        for (const quant::IntBlock& blk : net.blocks())
          for (const quant::IntConv* conv : {&blk.conv1, &blk.conv2, blk.has_shortcut ? &blk.shortcut : nullptr}) {
            if (!conv) continue;
            INFO(conv->name);
            const std::string bn_name = conv == &blk.shortcut ? conv->name.substr(0, conv->name.size() - 1) + "1"
                                                              : conv->name.substr(0, conv->name.size() - 5) + "bn" +
                                                                    conv->name.substr(conv->name.size() - 1);
            REQUIRE((mods.count(conv->name) && mods.count(bn_name)));
            Tensor in = abs(randn({2, conv->cin, 8, 8}, 30 + convs, DType::F32));
            in = mul(in, Tensor::from_vector(std::vector<float>{2 * conv->act.levels * conv->act.unit / 3}, {1}));
            Tensor want = mods[bn_name]->forward(mods[conv->name]->forward(in)).permute({0, 2, 3, 1}).contiguous();
            auto iv = in.permute({0, 2, 3, 1}).contiguous().to_vector<float>();
            std::vector<uint8_t> codes(iv.size());
            for (size_t i = 0; i < iv.size(); ++i) codes[i] = conv->act.code(iv[i]);
            auto got = quant::int_conv_bn(*conv, codes.data(), 2, 8, 8);
            // read in place from a map with a zero border (as the forward does): the same integer
            // sums, so the same floats
            REQUIRE(quant::int_conv_bn(*conv, codes.data(), 2, 8, 8, std::max<int64_t>(1, conv->pad)) == got);
            auto wv = want.to_vector<float>();
            REQUIRE(got.size() == wv.size());
            double diff = 0, mag = 0;
            for (size_t i = 0; i < wv.size(); ++i)
              diff = std::max(diff, (double)std::abs(got[i] - wv[i])), mag = std::max(mag, (double)std::abs(wv[i]));
            INFO("largest difference " << diff << " in outputs up to " << mag);
            REQUIRE(diff <= 1e-4 * mag);
            ++convs;
          }
        REQUIRE(convs == 20);

        // The whole network. Where the float rounding above moves an activation across a
        // rounding boundary, one code differs and the difference travels on; in this random,
        // untrained network (logits of tens) that shows, so the logits are compared loosely here
        // and the predictions exactly. LSQ's small steps make such flips rare and small (none with
        // the im2col float path, one at 6 bits with the direct one: 5e-4 of the largest logit);
        // DoReFa/PACT's differences are larger.
        Tensor got = net.forward(x), want = m->forward(x);
        REQUIRE(got.shape() == want.shape());
        auto g = got.to_vector<float>(), w = want.to_vector<float>();
        double diff = 0, mag = 0;
        for (size_t i = 0; i < g.size(); ++i)
          diff = std::max(diff, (double)std::abs(g[i] - w[i])), mag = std::max(mag, (double)std::abs(w[i]));
        INFO("largest logit difference " << diff << " in logits up to " << mag);
        REQUIRE(diff <= (c.wq == "lsq" ? 1e-2 : 0.05) * mag);
        REQUIRE(quant::predicted_classes(got) == quant::predicted_classes(want));

        // A batch large enough to go through in groups of images, a thread to a group (42: the
        // last group short), equals the same batch run whole, each conv shared out among the
        // threads: bit for bit. (The FP stem runs on the whole batch either way; its conv and the
        // classifier may round otherwise for another batch size.)
        net.set_grouping(false);
        Tensor whole = net.forward(big);
        net.set_grouping(true);
        test::require_close(net.forward(big), whole, 0, 0, "a batch in groups of images");
      }
    }
  }
}

TEST_CASE("IntegerResNet: files it cannot run are refused, naming what is wrong", "[int][export]") {
  test::ScratchDir tmp("anybit_int_engine_bad");
  quant::QuantOptions opt;
  opt.bit_set = {8, 4};
  auto m = trained_like_model(opt);
  const std::string path = tmp / "m.safetensors";
  quant::export_model(*m, {8}, path);  // 4 bits not exported
  nn::SafeTensors f = nn::read_safetensors(path);
  REQUIRE_THROWS_WITH(quant::IntegerResNet(f, 4), Catch::Contains("4 bits: the file holds 8"));
  nn::SafeTensors g = f;
  g.metadata["arch"] = "lenet5";
  REQUIRE_THROWS_WITH(quant::IntegerResNet(g, 8), Catch::Contains("the model is lenet5"));
  nn::SafeTensors h = f;
  h.metadata.erase("format");
  REQUIRE_THROWS_WITH(quant::IntegerResNet(h, 8), Catch::Contains("not an anybit export file"));
  Tensor x = randn({1, 1, 32, 32}, 1, DType::F32);
  REQUIRE_THROWS_WITH(quant::IntegerResNet(f, 8).forward(x), Catch::Contains("expected images (N, 3, H, W)"));
}
