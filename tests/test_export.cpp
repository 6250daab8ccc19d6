// test_export.cpp - the deployment file (quant/export.h): bit-packing, the integer form of every
// weight quantizer and store, folded BN, and the file sizes of shared and separate code sets.
#include <sys/stat.h>

#include "quant/export.h"
#include "quant/quantizers.h"
#include <stb_image_write.h>
#include "tests/helpers.h"
#include "tests/quant_model_helpers.h"

using namespace anybit;
using anybit::test::randn;

TEST_CASE("pack_codes and unpack_codes: bit planes, every width from 1 to 16 bits", "[export]") {
  Generator g(3);
  for (int bits = 1; bits <= 16; ++bits) {
    std::vector<int64_t> codes(37);  // not a multiple of 8: the last byte is partly used
    for (auto& c : codes) c = (int64_t)g.below(uint64_t(1) << bits);
    auto packed = quant::pack_codes(codes, bits);
    REQUIRE(packed.size() == 5 * (size_t)bits);  // one plane of ceil(37 / 8) bytes per bit
    REQUIRE(quant::unpack_codes(packed.data(), packed.size(), 37, bits) == codes);
    // the first p planes are the top p bits of every code
    for (int p = 1; p <= bits; ++p) {
      auto top = quant::unpack_codes(packed.data(), packed.size(), 37, bits, p);
      for (size_t i = 0; i < codes.size(); ++i) REQUIRE(top[i] == codes[i] >> (bits - p));
    }
  }
  // codes 1, 2, 3 of 2 bits: plane 0 (high bits 0, 1, 1) = 0b110, plane 1 (low bits 1, 0, 1) = 0b101
  REQUIRE(quant::pack_codes({1, 2, 3}, 2) == std::vector<uint8_t>{0x06, 0x05});
  REQUIRE_THROWS_WITH(quant::pack_codes({4}, 2), Catch::Contains("does not fit in 2 bits"));
}

namespace {

int64_t file_size(const std::string& p) {
  struct stat st;
  REQUIRE(stat(p.c_str(), &st) == 0);
  return st.st_size;
}

}  // namespace

TEST_CASE("export: every weight quantizer and store is rebuilt exactly from its integer codes", "[export]") {
  test::ScratchDir tmp("anybit_export");
  struct Case {
    const char* what;
    std::vector<int> bits;
    std::string wq, aq;
    quant::WeightStore store;
    quant::WeightScale scale;
  };
  const std::vector<Case> cases = {
      {"dorefa round", {8, 4, 2}, "dorefa", "pact", quant::WeightStore::Round, quant::WeightScale::None},
      {"dorefa truncate + sat (AdaBits' scale)", {8, 6, 4, 2}, "dorefa", "pact", quant::WeightStore::Truncate,
       quant::WeightScale::Sat},
      {"dorefa truncate + mean, with a 32-bit member", {32, 8, 4, 2}, "dorefa", "pact", quant::WeightStore::Truncate,
       quant::WeightScale::Mean},
      {"lsq", {8, 4, 2}, "lsq", "lsq", quant::WeightStore::Round, quant::WeightScale::None},
  };
  int64_t round_size = 0, truncate_size = 0;
  for (auto& c : cases) {
    INFO(c.what);
    quant::QuantOptions opt;
    opt.bit_set = c.bits;
    opt.weight_quant = c.wq;
    opt.act_quant = c.aq;
    opt.weight.store = c.store;
    opt.weight.scale = c.scale;
    opt.weight.store_bits = 8;
    auto m = test::random_quant_resnet20(opt, 4);
    const std::string path = tmp / (std::string(c.wq) + std::to_string(c.bits.size()) + ".safetensors");
    // export_model checks every layer at every bit-width itself; check again here, independently
    auto sizes = quant::export_model(*m, c.bits, path);
    REQUIRE(sizes.size() == c.bits.size());
    nn::SafeTensors f = nn::read_safetensors(path);
    REQUIRE(f.metadata.at("format") == "anybit-export-1");
    int layers = 0;
    for (auto& [name, mod] : m->net().named_modules()) {
      auto* q = dynamic_cast<quant::QuantizedLayer*>(mod.get());
      if (!q) continue;
      ++layers;
      for (int b : c.bits)
        test::require_close(quant::exported_weights(f, name, b), q->quantized_weight(b), 1e-5, 1e-6,
                            name + " at " + std::to_string(b) + " bits");
      // truncate: one code set of 8 bits for the layer; round: one set per bit-width
      const bool shared = f.find(name + ".codes") != nullptr;
      REQUIRE(shared == (c.store == quant::WeightStore::Truncate));
    }
    REQUIRE(layers == 20);  // ResNet-20: 18 3x3 and 2 shortcut convolutions (stem and classifier stay FP)
    // each bit-width needs fewer bytes than the one above it (a shared set: fewer of its planes)
    for (size_t i = 1; i < sizes.size(); ++i)
      if (sizes[i - 1].bits < 32) REQUIRE(sizes[i].bytes < sizes[i - 1].bytes);
    if (c.bits == std::vector<int>{8, 4, 2} && c.wq == "dorefa") round_size = file_size(path);
    if (c.bits == std::vector<int>{8, 6, 4, 2}) truncate_size = file_size(path);
  }
  // Four bit-widths from one 8-bit code set take less room than three separate code sets.
  REQUIRE(truncate_size < round_size);
}

TEST_CASE("export: BN folded per bit-width gives the BN set's evaluation output", "[export]") {
  test::ScratchDir tmp("anybit_export_bn");
  quant::QuantOptions opt;
  opt.bit_set = {8, 4};
  auto m = test::random_quant_resnet20(opt, 4);
  const std::string path = tmp / "m.safetensors";
  quant::export_model(*m, {8, 4}, path);
  nn::SafeTensors f = nn::read_safetensors(path);
  int checked = 0;
  for (auto& [name, mod] : m->net().named_modules()) {
    auto* mb = dynamic_cast<quant::MultiBatchNorm2d*>(mod.get());
    if (!mb) continue;
    for (int b : {8, 4}) {
      nn::BatchNorm2d& bn = mb->set(b);
      bn.eval();
      const int64_t C = bn.channels();
      Tensor x = randn({2, C, 3, 3}, 11, DType::F32);
      Tensor y = bn.forward(x);
      const Tensor* s = f.find(name + ".b" + std::to_string(b) + ".scale");
      const Tensor* t = f.find(name + ".b" + std::to_string(b) + ".shift");
      REQUIRE((s && t));
      Tensor folded = add(mul(x, s->reshape({1, C, 1, 1})), t->reshape({1, C, 1, 1}));
      test::require_close(folded, y, 1e-5, 1e-5, name);
      ++checked;
    }
  }
  REQUIRE(checked == 2 * 21);  // ResNet-20's 21 BN layers (the stem's, 18 in blocks, 2 shortcut), two sets each
}

TEST_CASE("anybit export: a trained run, its sizes, and clear errors", "[export][app]") {
  const std::string anybit = std::string(ANYBIT_BINARY_DIR) + "/anybit";
  test::ScratchDir tmp("anybit_export_app");
  // a 2-class folder of 28x28 grey PNGs (class a dark, class b bright, with noise; read as RGB)
  Generator g(4);
  for (const char* split : {"train", "test"})
    for (const char* cls : {"a", "b"}) {
      std::string dir = tmp / (std::string("data/") + split + "/" + cls);
      REQUIRE(test::run_command("mkdir -p " + dir, nullptr) == 0);
      for (int i = 0; i < 8; ++i) {
        std::vector<unsigned char> px(28 * 28);
        for (auto& p : px) p = (unsigned char)((cls[0] == 'a' ? 30 : 180) + g.below(60));
        REQUIRE(stbi_write_png((dir + "/" + std::to_string(i) + ".png").c_str(), 28, 28, 1, px.data(), 28));
      }
    }
  std::string out;
  const std::string train = anybit + " train --model resnet20 --data " + (tmp / "data") +
                            " --epochs 1 --max-steps 2 --batch-size 8 --workers 1 --threads 2 --log-every 100000";
  const int trained = test::run_command(train + " --bits 8,4,2 --weight-store truncate --out " + (tmp / "q"), &out);
  INFO(out);
  REQUIRE(trained == 0);
  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "q"), &out) == 0);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("| W8A8 |") && Catch::Contains("| W2A2 |") && Catch::Contains("checked"));
  nn::SafeTensors f = nn::read_safetensors(tmp / "q/export.safetensors");
  REQUIRE(f.metadata.at("export_bits") == "8,4,2");
  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "q") + " --bits 4 --out " + (tmp / "q4.safetensors"), &out) == 0);
  REQUIRE(nn::read_safetensors(tmp / "q4.safetensors").metadata.at("export_bits") == "4");

  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "q") + " --bits 3", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("3 bits is not in the model's bit set"));
  // --format onnx: the anybit file and one graph per bit-width, with the reference for check_onnx.js
  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "q") + " --format onnx --check-images 5", &out) == 0);
  for (const char* b : {"8", "4", "2"}) {
    struct stat st;
    REQUIRE(stat((tmp / "q/export.b") .append(b).append(".onnx").c_str(), &st) == 0);
  }
  REQUIRE_THAT(out, Catch::Contains("5 test images with the fake-quantized logits"));
  REQUIRE(file_size(tmp / "q/export.check/images.f32") == 5 * 3 * 28 * 28 * 4);  // this folder's images: 28x28
  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "q") + " --format tflite", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--format: expected anybit or onnx"));
  REQUIRE(test::run_command(train + " --out " + (tmp / "fp"), &out) == 0);
  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "fp"), &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("full-precision run"));
  REQUIRE(test::run_command(anybit + " export --run " + (tmp / "nowhere"), &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("nowhere") && Catch::Contains("config.txt"));
}
