// test_configs.cpp - every published setting of configs/ runs: each configuration file below is
// trained for one or two steps on a tiny generated dataset (its model, bit set, method, optimizer,
// schedule and transforms as shipped; only the data, the sizes and the step count overridden),
// and `anybit info` prints its model. docs/RESULTS.md says what each one reproduces.
//
// The data are image folders of PNG files written here: a 10-class CIFAR-like folder of 16x16
// images, and a 100-class ImageNet-like folder whose images have varied sizes (40..90 pixels a
// side), so the ImageNet pipeline's random-resized crop, resize and centre crop really run.
// Tagged [smoke]; about 20 CPU seconds in all in a Release build (two threads).
//
// A hidden case, "[.][scale]", prints the scale of each bit-width's quantized weights in the
// Any-Precision model (the 1-bit scale question of docs/RESULTS.md); run it by its tag.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "nn/checkpoint.h"
#include "quant/qmodel.h"
#include "quant/quantizers.h"
#include "tests/helpers.h"

using namespace anybit;
using anybit::test::run_command;
using Catch::Matchers::Contains;

extern "C" int stbi_write_png(char const* filename, int w, int h, int comp, const void* data, int stride_in_bytes);

namespace {

// OpenMP threads that spin while they wait (libgomp's default) make a run on a machine busy with
// other jobs several times slower (a 2-core machine at load 10: 23 s instead of 6 s for the first
// case below); these checks are about function, so their runs wait passively.
const std::string kBin = "OMP_WAIT_POLICY=passive " + std::string(ANYBIT_BINARY_DIR) + "/anybit";
const std::string kConfigs = std::string(ANYBIT_SOURCE_DIR) + "/configs/";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string tmp_root() {
  static const std::string dir = "/tmp/anybit_configs_test_" + std::to_string(getpid());
  mkdir(dir.c_str(), 0755);  // again after a test case removed it (EEXIST otherwise)
  return dir;
}

// root/{train,test}/c<k>/<i>.png, `classes` classes, per_class train and test_per_class test
// images each; sizes in [lo, hi] pixels a side (varied per image when lo < hi). Class k is a
// colour ramp whose direction and hue depend on k, plus noise, so the labels mean something.
void write_folder(const std::string& root, int classes, int per_class, int test_per_class, int lo, int hi) {
  Generator g(17);
  for (const char* split : {"train", "test"}) {
    int n = std::string(split) == "train" ? per_class : test_per_class;
    for (int k = 0; k < classes; ++k) {
      char name[16];
      std::snprintf(name, sizeof name, "c%03d", k);
      std::string dir = root + "/" + split + "/" + name;
      REQUIRE(run_command("mkdir -p " + dir, nullptr) == 0);
      for (int i = 0; i < n; ++i) {
        int h = lo + (int)g.below(hi - lo + 1), w = lo + (int)g.below(hi - lo + 1);
        std::vector<unsigned char> px((size_t)h * w * 3);
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c) {
              int ramp = (k % 2 ? x * 255 / w : y * 255 / h);
              int v = (c == k % 3 ? ramp : 255 - ramp) / 2 + (k * 37 + c * 50) % 100 + (int)g.below(30);
              px[((size_t)y * w + x) * 3 + c] = (unsigned char)std::min(v, 255);
            }
        REQUIRE(stbi_write_png((dir + "/" + std::to_string(i) + ".png").c_str(), w, h, 3, px.data(), w * 3));
      }
    }
  }
}

// (Re)made on first use after any test case removed the temporary root.
bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

const std::string& cifar_like() {
  static std::string dir;
  if (dir.empty() || !is_dir(dir)) {
    dir = tmp_root() + "/cifar_like";
    write_folder(dir, 10, 2, 1, 16, 16);
  }
  return dir;
}

const std::string& imagenet_like() {
  static std::string dir;
  if (dir.empty() || !is_dir(dir)) {
    dir = tmp_root() + "/imagenet_like";
    write_folder(dir, 100, 2, 1, 40, 90);
  }
  return dir;
}

// The overrides that shrink any configuration to a few seconds: one epoch of 2 steps, small
// batches, one test batch, no mid-run logging.
const std::string kSmall =
    " --epochs 1 --max-steps 2 --eval-batches 1 --workers 1 --threads 2 --log-every 100000 --eval-every 0";

// Trains `cfg` (a file of configs/) with the tiny data and extra overrides; returns the output.
std::string train(const std::string& cfg, const std::string& data, const std::string& out, const std::string& extra) {
  std::string log;
  std::string cmd = kBin + " train --config " + kConfigs + cfg + " --data " + data + " --out " + out + kSmall + " " + extra;
  INFO(cmd);
  int rc = run_command(cmd, &log);
  INFO(log);
  REQUIRE(rc == 0);
  REQUIRE(slurp(out + "/report.json").find("\"results\"") != std::string::npos);
  return log;
}

std::string info(const std::string& cfg, const std::string& extra = "") {
  std::string log;
  int rc = run_command(kBin + " info --config " + kConfigs + cfg + " " + extra, &log);
  INFO(log);
  REQUIRE(rc == 0);
  return log;
}

}  // namespace

TEST_CASE("configs/cifar10_anyprec_paper.cfg: Any-Precision's PreAct ResNet-20 x5 at {32,8,4,2,1} runs", "[app][smoke]") {
  std::string out = tmp_root() + "/anyprec_paper";
  // 16x16 images: a quarter of the work of CIFAR's 32x32; the crop-and-flip augmentation as at 32.
  std::string log = train("cifar10_anyprec_paper.cfg", cifar_like(), out, "--batch-size 4 --augment crop_flip");
  std::string report = slurp(out + "/report.json");
  for (const char* b : {"W32A32", "W8A8", "W4A4", "W2A2", "W1A1"}) REQUIRE_THAT(report, Contains(b));
  std::string cfg = slurp(out + "/config.txt");
  REQUIRE_THAT(cfg, Contains("teacher = next") && Contains("student_ce = 0") && Contains("weight_scale = mean") &&
                        Contains("milestones = 100,150,180") && Contains("optimizer = adam") && Contains("width = 5"));
  // The students learnt from the next higher bit-width only: W1A1 from W2A2, W8A8 from W32A32.
  std::string metrics = slurp(out + "/metrics.jsonl");
  REQUIRE_THAT(metrics, Contains("\"W1A1\": {\"loss\"") && Contains("\"teachers\": {\"W2A2\": 8}") &&
                            Contains("\"teachers\": {\"W32A32\": 8}"));
  std::string inf = info("cifar10_anyprec_paper.cfg");
  // 80 / 160 / 320 channels; the FP stem and classifier; one row per bit-width.
  REQUIRE_THAT(inf, Contains("PreActResNet20") && Contains("320") && Contains("| W1A1 |") && Contains("| W32A32 |"));
}

TEST_CASE("configs/cifar10_ours_video_recipe.cfg: {32,4,2} from an FP checkpoint with a frozen FP teacher runs", "[app][smoke]") {
  std::string fp = tmp_root() + "/cifar10_fp";
  train("cifar10_fp.cfg", cifar_like(), fp, "--batch-size 4");
  std::string out = tmp_root() + "/video_recipe";
  std::string ckpt = fp + "/model.safetensors";
  std::string log = train("cifar10_ours_video_recipe.cfg", cifar_like(), out,
                          "--batch-size 4 --init " + ckpt + " --fp-teacher " + ckpt);
  REQUIRE_THAT(log, Contains("FP teacher of W32A32") && Contains("initialised from"));
  std::string report = slurp(out + "/report.json");
  for (const char* b : {"W32A32", "W4A4", "W2A2"}) REQUIRE_THAT(report, Contains(b));
  REQUIRE_THAT(slurp(out + "/config.txt"), Contains("clip_wd = 32:5e-4,4:5e-4,2:6e-2") && Contains("clip_lr = 32:0.1,4:0.1,2:0.01"));
  REQUIRE_THAT(info("cifar10_ours_video_recipe.cfg"), Contains("ResNet20") && Contains("| W32A32 |"));
}

TEST_CASE("configs/imagenet_resnet18_{fp,ours}.cfg run on a 100-class folder of varied image sizes", "[app][smoke]") {
  // crop 32 / resize 36 instead of 224 / 256: the same pipeline on images of 40..90 pixels.
  const std::string sizes = "--batch-size 8 --crop-size 32 --resize-size 36 --workers 2";
  std::string fp = tmp_root() + "/imagenet_fp";
  train("imagenet_resnet18_fp.cfg", imagenet_like(), fp, sizes);
  REQUIRE_THAT(slurp(fp + "/report.md"), Contains("top-5"));  // 100 classes: top-5 too
  std::string out = tmp_root() + "/imagenet_ours";
  // One joint step (four bit-widths of 11.7 M weights to quantize); the FP run above did two.
  std::string log =
      train("imagenet_resnet18_ours.cfg", imagenet_like(), out, sizes + " --max-steps 1 --init " + fp + "/model.safetensors");
  REQUIRE_THAT(log, Contains("100 classes"));
  std::string report = slurp(out + "/report.json");
  for (const char* b : {"W8A8", "W6A6", "W4A4", "W2A2"}) REQUIRE_THAT(report, Contains(b));
  REQUIRE_THAT(report, Contains("\"num_classes\": 100"));
  // The model as deployed on ImageNet: 1,000 classes, 224x224 inputs, about 1.8 G MACs.
  std::string inf = info("imagenet_resnet18_ours.cfg", "--classes 1000");
  REQUIRE_THAT(inf, Contains("ResNet18") && Contains("[3, 224, 224]") && Contains("MACs per sample") &&
                        Contains("| W2A2 |"));
  run_command("rm -rf " + tmp_root(), nullptr);
}

// Not a check: a measurement for docs/RESULTS.md. For the Any-Precision model (PreAct ResNet-20
// x5; ANYBIT_SCALE_WIDTH=1 for width 1), mean |w_q| of every quantized conv at each bit-width of
// {32,8,4,2,1}, against E = mean|w|, for a fresh model, or for the model of a run when
// ANYBIT_SCALE_RUN names its folder; ANYBIT_SCALE_MODE=mean for weight_scale = mean.
TEST_CASE("scale of the quantized weights per bit-width in the Any-Precision model", "[.][scale]") {
  quant::QuantOptions qo;
  qo.bit_set = {32, 8, 4, 2, 1};
  // ANYBIT_SCALE_MODE=mean: Any-Precision's rule (every bit-width times mean|w|), as
  // configs/cifar10_anyprec_paper.cfg runs; default none (DoReFa's +-1 at 1 bit).
  const char* mode = std::getenv("ANYBIT_SCALE_MODE");
  bool by_mean = mode && std::string(mode) == "mean";
  qo.weight.scale = by_mean ? quant::WeightScale::Mean : quant::WeightScale::None;
  nn::ModelOptions mo;
  const char* width = std::getenv("ANYBIT_SCALE_WIDTH");  // default 5, Any-Precision's
  mo.width = width ? std::atof(width) : 5;
  quant::QuantModel m("preact_resnet20", 10, qo, 1, mo);
  const char* run = std::getenv("ANYBIT_SCALE_RUN");
  if (run) nn::load_model(std::string(run) + "/model.safetensors", m.net());
  std::printf("%s, weight_scale %s\n| layer | E = mean|w| | W32 | W8 | W4 | W2 | W1 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
              run ? run : "fresh model (seed 1)", by_mean ? "mean" : "none");
  NoGradGuard ng;
  for (auto& [name, p] : m.net().named_parameters()) {
    if (p.dim() != 4 || name.rfind("conv1.", 0) == 0) continue;  // quantized convs only (not the stem)
    std::printf("| %s | %.4f |", name.c_str(), mean(abs(p)).item<double>());
    for (int b : {32, 8, 4, 2, 1})
      std::printf(" %.4f |", mean(abs(quant::quantize_weight(p, b, qo.weight))).item<double>());
    std::printf("\n");
  }
  // What the scales do where no BN follows: at each residual addition y + s of a pre-activation
  // block, mean|y| / mean|s| (the branch against the identity or the shortcut conv), per
  // bit-width, on 16 CIFAR-sized N(0, 1) inputs with batch statistics in the BNs.
  std::map<std::string, nn::ModulePtr> mods;
  for (auto& [name, mod] : m.net().named_modules()) mods[name] = mod;
  Tensor input = test::randn({16, 3, 32, 32}, 5, DType::F32);
  m.net().train();
  std::printf("\n| block: mean|branch| / mean|shortcut| | W32 | W8 | W4 | W2 | W1 |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
  std::map<std::string, std::vector<double>> ratio;
  std::vector<std::string> order;
  for (int b : {32, 8, 4, 2, 1}) {
    m.set_bits(b);
    Tensor x = mods.at("conv1")->forward(input);
    for (int st = 1; st <= 3; ++st)
      for (int k = 0; k < 3; ++k) {
        std::string blk = "layer" + std::to_string(st) + "." + std::to_string(k);
        Tensor o = relu(mods.at(blk + ".bn1")->forward(x));
        Tensor s = mods.count(blk + ".shortcut") ? mods.at(blk + ".shortcut")->forward(o) : x;
        Tensor y = mods.at(blk + ".conv2")->forward(relu(mods.at(blk + ".bn2")->forward(mods.at(blk + ".conv1")->forward(o))));
        if (b == 32) order.push_back(blk);
        ratio[blk].push_back(mean(abs(y)).item<double>() / mean(abs(s)).item<double>());
        x = y + s;
      }
  }
  for (auto& blk : order) {
    std::printf("| %s |", blk.c_str());
    for (double r : ratio[blk]) std::printf(" %.3f |", r);
    std::printf("\n");
  }
}

TEST_CASE("bn_lr and bn_wd put BN's gamma and beta of every BN set in a group of their own", "[app]") {
  // The video recipe's BN group: with lr 0 and no weight decay, gamma and beta keep their initial
  // 1 and 0 in every BN set while the convolutions learn.
  std::string out = tmp_root() + "/bn_group";
  train("cifar10_fp.cfg", cifar_like(), out, "--batch-size 4 --bits 8,4 --bn-lr 0 --bn-wd 0");
  int bn_params = 0, conv_weights = 0;
  nn::SafeTensors m = nn::read_safetensors(out + "/model.safetensors");
  for (auto& [name, t] : m.tensors) {
    auto v = t.to_vector<float>();
    bool bn_weight = name.find(".bn.") != std::string::npos && name.size() > 7 &&
                     name.compare(name.size() - 7, 7, ".weight") == 0;
    bool bn_bias = name.find(".bn.") != std::string::npos && name.size() > 5 &&
                   name.compare(name.size() - 5, 5, ".bias") == 0;
    if (bn_weight || bn_bias) {
      ++bn_params;
      INFO(name);
      for (float x : v) REQUIRE(x == (bn_weight ? 1.0f : 0.0f));
    } else if (name.find("conv") != std::string::npos && name.find(".weight") != std::string::npos) {
      ++conv_weights;
    }
  }
  REQUIRE(bn_params == 21 * 2 * 2);  // 21 BN layers (the stem's, 2 per block, 2 shortcuts) x 2 sets x gamma, beta
  REQUIRE(conv_weights == 1 + 18);  // the stem and the blocks' convs (shortcut convs are "shortcut.0")
  run_command("rm -rf " + tmp_root(), nullptr);
}
