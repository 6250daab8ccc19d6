// test_cuda_train.cpp - training on the GPU as a whole: batches reach the device through the
// prefetching copy (data/device_batches.h), a few steps of the FP and the joint trainer repeat
// bit for bit run to run on one GPU, the FP steps match the CPU's, a step replayed as a CUDA
// graph (nn/captured_step.h) gives the eager step's numbers bit for bit, and a joint step of every
// model of the zoo matches the CPU's in float64.
//
// The [cuda] cases skip, saying so, without a usable GPU (tests/cuda_skip.h); the CPU half of the
// DeviceBatches test runs everywhere. [steps] marks the cases that run whole training steps of
// models: `make test` leaves them out of the race check, which is 8 times slower than the plain
// emulated run (`make racecheck` runs them).
#include "data/device_batches.h"
#include "nn/captured_step.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "quant/joint_trainer.h"
#include "quant/qmodel.h"
#include "tensor/cuda/cuda.h"
#include "tests/cuda_skip.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::data;
using namespace anybit::test;

namespace {

const Device kCuda(Device::CUDA);

// n tiny RGB images whose pixels depend on the index; label i % 3.
struct TinyImages : Dataset {
  std::vector<std::string> names{"a", "b", "c"};
  int64_t n;
  explicit TinyImages(int64_t count) : n(count) {}
  int64_t size() const override { return n; }
  Example get(int64_t i) const override {
    Image img(8, 8, 3);
    for (size_t k = 0; k < img.pixels.size(); ++k) img.pixels[k] = uint8_t((i * 37 + k * 11) % 256);
    Example e;
    e.image = img;
    e.label = i % 3;
    return e;
  }
  const std::vector<std::string>& class_names() const override { return names; }
  std::string describe() const override { return "tiny"; }
};

std::vector<Batch> epoch_of(DataLoader& loader, DeviceBatches& batches, int64_t epoch) {
  loader.set_epoch(epoch);
  batches.restart();
  std::vector<Batch> out;
  Batch b;
  while (batches.next(b)) out.push_back(b);
  return out;
}

void check_device_batches(Device dev) {
  auto ds = std::make_shared<TinyImages>(22);
  LoaderOptions opt;
  opt.batch_size = 5;
  opt.seed = 3;
  opt.num_workers = 2;
  DataLoader plain(ds, Pipeline{}, opt), loader(ds, Pipeline{}, opt);
  DeviceBatches batches(loader, dev);
  for (int64_t epoch : {0, 1}) {
    INFO("epoch " << epoch << " on " << dev.str());
    plain.set_epoch(epoch);
    std::vector<Batch> want;
    Batch b;
    while (plain.next(b)) want.push_back(b);
    std::vector<Batch> got = epoch_of(loader, batches, epoch);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("batch " << i);
      REQUIRE(got[i].images.device() == dev);
      REQUIRE(got[i].labels.device() == dev);
      REQUIRE(got[i].indices == want[i].indices);
      REQUIRE(got[i].images.to_vector<float>() == want[i].images.to_vector<float>());
      REQUIRE(got[i].labels.to_vector<int64_t>() == want[i].labels.to_vector<int64_t>());
    }
  }
  // an epoch abandoned half way, then a restart: the new epoch's batches from the first
  loader.set_epoch(2);
  batches.restart();
  Batch first;
  REQUIRE(batches.next(first));
  std::vector<Batch> again = epoch_of(loader, batches, 2);
  REQUIRE(again.front().indices == first.indices);
}

// `steps` SGD steps of a ResNet-20 from the same initialisation on `dev`; the parameters after
// (and the running statistics). Without `graph`, the plain eager step (zero_grad, forward,
// backward); with it, the same step through a CapturedStep (on a GPU a CUDA graph after 2 eager
// steps; on the CPU its own eager path). `odd_batch` runs step 3 on a smaller batch (eager, the
// graph's shape differs). `dtype`: the model's and the batch's.
std::vector<std::vector<double>> fp_steps(Device dev, int steps, bool graph = false, bool odd_batch = false,
                                          DType dtype = DType::F32) {
  auto model = nn::make_model("resnet20", 10, {}, 1);
  model->to(dtype);
  model->to(dev);
  model->train();
  nn::SGD opt(model->named_parameters(), 0.05, 0.9, 5e-4, true);
  Generator g(11);
  Tensor x = Tensor::randn({8, 3, 32, 32}, g).to(dtype).to(dev);
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {8}).to(dev);
  nn::CapturedStep captured(
      [&](const Tensor& xb, const Tensor& yb) {
        Tensor loss = cross_entropy(model->forward(xb), yb, 0.1);
        loss.backward();
        return std::vector<Tensor>{loss};
      },
      model->named_parameters(), graph);
  for (int s = 0; s < steps; ++s) {
    const bool odd = odd_batch && s == 3;
    Tensor xs = odd ? x.slice(0, 0, 4) : x, ys = odd ? y.slice(0, 0, 4) : y;
    if (graph) {
      captured.run(xs, ys);
    } else {
      opt.zero_grad();
      cross_entropy(model->forward(xs), ys, 0.1).backward();
    }
    opt.step();
  }
  std::vector<std::vector<double>> out;
  for (auto& [name, p] : model->named_parameters()) out.push_back(p.to_vector<double>());
  for (auto& [name, b] : model->named_buffers())
    if (b.defined()) out.push_back(b.to_vector<double>());
  return out;
}

// `steps` joint steps of a quantized ResNet-20 {4, 2} with the method's defaults (collaborative
// teachers, distillation, block swapping) on the GPU; the parameters after.
std::vector<std::vector<double>> joint_steps(int steps) {
  quant::QuantOptions qo;
  qo.bit_set = {4, 2};
  quant::QuantModel model("resnet20", 10, qo, 1);
  model.net().to(kCuda);
  model.net().train();
  quant::JointTrainer trainer(model, quant::MethodConfig{}, 5);
  nn::SGD opt(model.net().named_parameters(), 0.05, 0.9, 5e-4);
  Generator g(12);
  Tensor x = Tensor::randn({8, 3, 32, 32}, g).to(kCuda);
  Tensor y = Tensor::from_vector(std::vector<int64_t>{7, 6, 5, 4, 3, 2, 1, 0}, {8}).to(kCuda);
  for (int s = 0; s < steps; ++s) {
    trainer.accumulate_gradients(x, y, 0.5);
    opt.step();
  }
  std::vector<std::vector<double>> out;
  for (auto& [name, p] : model.net().named_parameters()) out.push_back(p.to_vector<double>());
  return out;
}

// One model of the zoo, as the joint-step comparison below builds it.
struct ZooModel {
  std::string arch;
  nn::ModelOptions options;
  std::vector<int64_t> input;  // (N, C, H, W); a video model's N is clips x segments
  std::string weight_quant = "dorefa", act_quant = "pact";
};

// One joint step of `m` at {8, 4} (collaborative teachers, distillation, block swapping at p = 0.5)
// in float64 on `dev`, from the same weights and batch wherever it runs: the loss sum of each
// bit-width, then every parameter's gradient.
std::vector<std::vector<double>> zoo_joint_step(const ZooModel& m, Device dev) {
  quant::QuantOptions qo;
  qo.bit_set = {8, 4};
  qo.weight_quant = m.weight_quant;
  qo.act_quant = m.act_quant;
  quant::QuantModel model(m.arch, 4, qo, 7, m.options);
  // Every BN's scale and shift drawn away from their initial 1 and 0 (see the test case below):
  // scales from [0.5, 1.5], shifts from [-0.5, 0.5]. A BN set's parameters are "<layer>.bn.<i>.weight"
  // and ".bias" (quant/qlayers.h); LeNet-5 has none.
  Generator bn_gen(3);
  int64_t drawn = 0;
  for (auto& [name, p] : model.net().named_parameters()) {
    if (name.find(".bn.") == std::string::npos) continue;
    const bool shift = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    NoGradGuard ng;
    p.copy_(Tensor::rand(p.shape(), bn_gen, shift ? -0.5 : 0.5, shift ? 0.5 : 1.5));
    ++drawn;
  }
  REQUIRE((drawn > 0) == (m.arch != "lenet5"));
  model.net().to(DType::F64);
  model.net().to(dev);
  model.net().train();
  quant::JointTrainer trainer(model, quant::MethodConfig{}, 5);
  Generator g(12);
  Tensor x = Tensor::randn(m.input, g).to(DType::F64).to(dev);
  const int64_t n = m.input[0] / m.options.segments;
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 4;
  trainer.accumulate_gradients(x, Tensor::from_vector(labels, {n}).to(dev), 0.5);
  std::vector<std::vector<double>> out;
  for (auto& [bits, s] : trainer.stats()) out.push_back({(double)bits, s.loss_sum, (double)s.correct});
  for (auto& [name, p] : model.net().named_parameters())
    out.push_back(p.grad().defined() ? p.grad().to_vector<double>() : std::vector<double>{});
  return out;
}

}  // namespace

TEST_CASE("DeviceBatches hands out the loader's batches in order (CPU)", "[data]") { check_device_batches(Device()); }

TEST_CASE("DeviceBatches: batches reach the GPU through the prefetching copy, unchanged", "[cuda]") {
  SKIP_WITHOUT_GPU();
  check_device_batches(kCuda);
}

TEST_CASE("cuda: FP training steps repeat bit for bit on one GPU and match the CPU", "[cuda][steps]") {
  SKIP_WITHOUT_GPU();
  auto a = fp_steps(kCuda, 3), b = fp_steps(kCuda, 3);
  REQUIRE(a == b);  // deterministic: no atomics, fixed-order sums, cuBLAS on one stream
  // Against the CPU in float64. In float32 the two sides round differently (other GEMMs, other
  // orders of summation), so a pre-activation within rounding of zero can fall on the other side
  // of a ReLU: its gradient then passes on one side and not on the other, which moves the
  // gradients of every layer below by far more than rounding (found by the CUDA emulator: one
  // element of 8192 in layer1.2 moved layer1.2.bn2.bias by 0.6%), and 3 steps amplify that.
  // In float64 the roundings are 1e-16 apart and no pre-activation of these inputs is that close.
  auto gpu64 = fp_steps(kCuda, 3, false, false, DType::F64), cpu64 = fp_steps(Device(), 3, false, false, DType::F64);
  REQUIRE(gpu64.size() == cpu64.size());
  for (size_t i = 0; i < gpu64.size(); ++i) {
    INFO("tensor " << i);
    require_close(Tensor::from_vector(gpu64[i], {(int64_t)gpu64[i].size()}),
                  Tensor::from_vector(cpu64[i], {(int64_t)cpu64[i].size()}), 1e-9, 1e-12);
  }
}

TEST_CASE("cuda: joint steps of the method repeat bit for bit on one GPU", "[cuda][steps]") {
  SKIP_WITHOUT_GPU();
  REQUIRE(joint_steps(3) == joint_steps(3));
}

// A label out of range stops a joint step with cross_entropy's message on either device: on the
// CPU at once, on a GPU at the first wait after the loss kernel found it (the teachers' votes),
// before the teacher choice could call the sample's logits non-finite. The next good step runs.
TEST_CASE("cuda: a label out of range stops the joint step with cross_entropy's message", "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (const Device& dev : {Device(), kCuda}) {
    INFO(dev.str());
    quant::QuantOptions qo;
    qo.bit_set = {4, 2};
    quant::QuantModel model("lenet5", 10, qo, 1);
    model.net().to(dev);
    model.net().train();
    quant::JointTrainer trainer(model, quant::MethodConfig{}, 5);  // collaborative teachers
    Generator g(3);
    Tensor x = Tensor::randn({4, 1, 28, 28}, g).to(dev);
    auto labels = [&](std::vector<int64_t> v) { return Tensor::from_vector(v, {4}).to(dev); };
    REQUIRE_THROWS_WITH(trainer.accumulate_gradients(x, labels({0, 1, 12, 3}), 0.5),
                        Catch::Contains("cross_entropy: label 12 (at index 2) is out of range [0, K = 10)"));
    REQUIRE_NOTHROW(trainer.accumulate_gradients(x, labels({0, 1, 2, 3}), 0.5));
    REQUIRE(std::isfinite(trainer.stats().at(2).loss_sum));
  }
}

TEST_CASE("CapturedStep on the CPU is the plain step", "[nn]") {
  REQUIRE(fp_steps(Device(), 3, true) == fp_steps(Device(), 3, false));
}

TEST_CASE("cuda: a training step replayed as a CUDA graph gives the eager steps' numbers bit for bit", "[cuda][steps]") {
  SKIP_WITHOUT_GPU();
  // 6 steps: 2 eager, the capture (run by its first replay), 3 replays; then with a smaller
  // batch as step 4, run eagerly between replays.
  REQUIRE(fp_steps(kCuda, 6, true) == fp_steps(kCuda, 6, false));
  REQUIRE(fp_steps(kCuda, 6, true, true) == fp_steps(kCuda, 6, false, true));
}

TEST_CASE("cuda: inference replayed as a CUDA graph gives the eager logits", "[cuda]") {
  SKIP_WITHOUT_GPU();
  auto model = nn::make_model("resnet20", 10, {}, 1);
  model->to(kCuda);
  model->eval();
  Generator g(13);
  Tensor x = Tensor::randn({4, 3, 32, 32}, g).to(kCuda);
  NoGradGuard ng;
  Tensor eager = model->forward(x);
  cuda::Graph graph;
  Tensor logits;
  graph.capture([&] { logits = model->forward(x); });
  graph.replay();
  REQUIRE(logits.to_vector<float>() == eager.to_vector<float>());
  x.copy_(Tensor::randn({4, 3, 32, 32}, g).to(kCuda));  // new input in place: the replay sees it
  graph.replay();
  REQUIRE(logits.to_vector<float>() == model->forward(x).to_vector<float>());
}

TEST_CASE("cuda: a joint step of every model of the zoo matches the CPU in float64", "[cuda][steps]") {
  SKIP_WITHOUT_GPU();
  // Every architecture and both quantizer families, so that each op a model uses (depthwise and
  // 1x1 convs, bottlenecks, pre-activation, max-pool, the temporal shift and the clip averaging of
  // TSN / TSM, LSQ's steps) runs on the GPU inside a real network. In float64, where the two
  // devices' roundings (1e-16) cannot move a value across a quantizer's rounding boundary, as they
  // do in float32 (docs/RESULTS.md, "The program on the CUDA emulator").
  // Float64 alone is not enough: at 4 bits and below, a quantized conv's outputs lie on a coarse
  // grid, and one can equal its channel's batch mean exactly. With BN's initial shift 0 the BN
  // output there is 0 in exact arithmetic, and each device's rounding of x * scale + shift leaves
  // it at +-1e-17, so a ReLU after it passes the gradient on one device and not on the other (found
  // here: one element of ResNet-20's layer1.2 moved every gradient below it by 0.6%). Random BN
  // shifts (and scales) take those outputs off zero.
  // The tolerance, 1e-7 of each tensor's largest value, is float64's rounding after the deepest
  // stages' BNs, which normalise 2 values a channel at these sizes and cancel most digits of the
  // gradient (measured up to 2e-8); a gradient one such ReLU moved is off by 1e-3. Plus 1e-9:
  // gradients that are 0 in exact arithmetic (a BN's shift when a conv and another BN follow, whose
  // batch mean removes it) come out as rounding noise, up to 3e-11 here.
  nn::ModelOptions small;
  small.small_input = true;
  nn::ModelOptions mobile = small;
  mobile.width = 0.5;
  nn::ModelOptions tsn;
  tsn.segments = 4;
  nn::ModelOptions tsm = tsn;
  tsm.temporal_shift = true;
  tsm.shift_div = 4;
  const std::vector<ZooModel> zoo = {
      {"lenet5", {}, {4, 1, 28, 28}},
      {"resnet20", {}, {4, 3, 8, 8}},
      {"resnet20", {}, {4, 3, 8, 8}, "lsq", "lsq"},
      {"preact_resnet20", {}, {4, 3, 8, 8}},
      {"resnet18", {}, {2, 3, 16, 16}},  // the ImageNet stem: 7x7 stride 2 and the max-pool
      {"resnet50", small, {2, 3, 16, 16}},
      {"mobilenetv2", mobile, {2, 3, 8, 8}},
      {"resnet20", tsn, {8, 3, 8, 8}},
      {"resnet20", tsm, {8, 3, 8, 8}},
  };
  for (const ZooModel& m : zoo) {
    if (m.arch == "resnet50" && on_cuda_emulator() && !std::getenv("ANYBIT_EMU_SLOW")) {
      WARN("resnet50 left out on the CUDA emulator (40 s there for its 23.5 M weights; ANYBIT_EMU_SLOW=1 "
           "runs it); a GPU runs it");
      continue;
    }
    INFO(m.arch << (m.options.temporal_shift ? " TSM" : m.options.segments > 1 ? " TSN" : "") << ", "
                << m.weight_quant << " / " << m.act_quant);
    auto gpu = zoo_joint_step(m, kCuda), cpu = zoo_joint_step(m, Device());
    REQUIRE(gpu.size() == cpu.size());
    for (size_t i = 0; i < gpu.size(); ++i) {
      INFO((i < 2 ? std::string("loss sum and correct count of a bit-width") : "gradient of parameter " + std::to_string(i - 2)));
      REQUIRE(gpu[i].size() == cpu[i].size());
      double diff = 0, mag = 0;
      for (size_t k = 0; k < cpu[i].size(); ++k) {
        diff = std::max(diff, std::abs(gpu[i][k] - cpu[i][k]));
        mag = std::max(mag, std::abs(cpu[i][k]));
      }
      INFO("max |gpu - cpu| " << diff << ", max |cpu| " << mag);
      REQUIRE(diff <= 1e-7 * mag + 1e-9);
    }
  }
}
