// bench_train.cpp - training and inference throughput of whole networks, in images/s, on random
// data: the figures compared with PyTorch by scripts/bench.sh (scripts/bench_pytorch.py runs the
// same workloads in PyTorch; docs/BENCHMARKS.md has the results).
//
// Workloads (all at 2 threads unless --threads says otherwise, fixed seeds):
//   resnet20_train    CIFAR ResNet-20, batch 128 of (3, 32, 32): forward, cross-entropy,
//                     backward, SGD step (momentum 0.9, weight decay 5e-4)
//   resnet20_infer    the same network in eval mode under NoGradGuard, batch 128
//   lenet5_train      LeNet-5, batch 256 of (1, 28, 28), the same step as resnet20_train
//   lenet5_infer      LeNet-5 inference, batch 256
//   joint_ce          quantized ResNet-20 over bit-widths {8, 6, 4, 2}: JointTrainer with teacher
//                     none and no block swapping (four forward + CE + backward passes, one SGD
//                     step): the work of PyTorch's reference joint step
//   joint_ours        the same with the default MethodConfig (collaborative teachers + KD,
//                     dynamic block swapping)
//   quant4_train      quantized ResNet-20 with bit set {4}: one forward + CE + backward + step;
//                     compared with resnet20_train it gives the cost of quantization itself
// Only with --only (the ImageNet ResNets take minutes per step here: the compute side of the
// data-parallel scaling model in docs/BENCHMARKS.md; the integer engine's, which scripts/bench.sh
// runs with ONLY=...):
//   resnet18_train    ImageNet ResNet-18, batch 32 of (3, 224, 224), the resnet20_train step
//   resnet50_train    ImageNet ResNet-50, batch 32 of (3, 224, 224)
//   mobilenetv2_train ImageNet MobileNetV2 (depthwise convs), batch 128 of (3, 224, 224)
//   mobilenetv2_cifar_train  MobileNetV2 with small_input (stem and first stage at stride 1),
//                     batch 128 of (3, 32, 32): small images, so per-call overheads weigh more
//   resnet20_infer_1  resnet20_infer at batch 1 (latency)
//   int<b>_infer      the integer engine (quant/int_engine.h) at b bits (8, 6, 4 or 2), batch 128:
//                     a quantized ResNet-20 {8,6,4,2} with LSQ weights and activations (the
//                     quantizers of the CIFAR `ours` checkpoint), random weights, exported to a
//                     temporary file and read back; int<b>_infer_1 the same at batch 1
//   pact<b>_infer     the same with DoReFa weights and PACT activations, the method's default
//                     quantizers: their weights are not symmetric about 0, so each conv's
//                     epilogue also adds its windows' code sums (int_engine.h); pact<b>_infer_1
//                     at batch 1
// Timing: `warmup` untimed steps, then `repeats` timed runs of `steps` steps each; the figure is
// batch * steps / time of the median run. With --interleave every workload is built and warmed
// first, and the timed runs take turns (run 1 of each workload, then run 2 of each, ...), so that
// a slow minute of a shared machine slows every workload alike; the step-time ratios to
// resnet20_train are then also given as the median of each round's own ratio.
//
// Output: one machine-readable line per workload, `name images_per_s` (scripts/bench.sh parses
// them), and a human table whose lines start with '#'.
// Usage: bench_train [--only NAME[,NAME...]] [--steps N] [--repeats N] [--warmup N] [--threads N]
//                    [--interleave]        (the workloads' timed runs take turns; see Timing)
//                    [--conv-direct 0|1]   (0: im2col + GEMM for every convolution, for comparison)
//                    [--int-kernel K]      (the integer product's kernel: portable, avx2 or vnni, of
//                                           those the build has; default the fastest)
//                    [--device cpu|cuda]   (cuda: the network workloads on the GPU, each timed run
//                                           closed by a device synchronisation; the int engine is CPU only)
//                    [--cuda-graph 0|1]    (with cuda: the FP steps' forward and backward, and the
//                                           inference, recorded once as a CUDA graph and replayed)
//                    [--cuda-tf32 0|1]     (with cuda: float32 GEMMs, so convolutions, in TF32 on the
//                                           tensor cores; default 0, plain float32: tensor/cuda/cuda.h)
//                    [--gpu-profile DIR]   (with cuda: after each workload's timed runs, one more step
//                                           with the GPU time of each kernel, GEMM and copy
//                                           (cuda::profile_begin, tensor/cuda/cuda.h), written to
//                                           DIR/<workload>.csv and summed up in the table:
//                                           scripts/gpu_profile.py names the kernels)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>
#include <unistd.h>

#include "autograd/autograd.h"
#include "nn/models.h"
#include "nn/captured_step.h"
#include "nn/optim.h"
#include "quant/export.h"
#include "quant/int_engine.h"
#include "quant/joint_trainer.h"
#include "quant/qmodel.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cpu/nn.h"
#include "tensor/cuda/cuda.h"
#include "tensor/ops.h"
#include "tensor/storage.h"

using namespace anybit;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Device g_device;         // --device: where the workloads' models and batches live
bool g_cuda_graph = false;  // --cuda-graph: FP steps and inference replayed as CUDA graphs
std::string g_profile_dir;  // --gpu-profile

struct Settings {
  int steps = 3, repeats = 3, warmup = 2, threads = 2;
  bool interleave = false;
  std::vector<std::string> only;  // empty: every workload
};

// A workload: a batch size and one step; setup happens in the factory that returns it.
struct Workload {
  int64_t batch = 0;
  std::function<void()> step;
};

// Random inputs x: (N, C, H, W) ~ N(0, 1) and labels y: (N) int64 in [0, classes).
Tensor random_images(int64_t n, const Shape& sample, Generator& g) {
  Shape s{n};
  s.insert(s.end(), sample.begin(), sample.end());
  return Tensor::randn(s, g);
}
Tensor random_labels(int64_t n, int64_t classes, Generator& g) {
  std::vector<int64_t> v(n);
  for (auto& e : v) e = (int64_t)g.below(classes);
  return Tensor::from_vector(v, {n});
}

// Full-precision training step: zero_grad, forward, CE, backward, SGD momentum step.
Workload fp_train(const std::string& arch, int64_t batch, const nn::ModelOptions& mo = {}) {
  Generator g(7);
  auto model = nn::make_model(arch, 10, mo, 1);
  model->to(g_device);
  auto opt = std::make_shared<nn::SGD>(model->named_parameters(), 0.01, 0.9, 5e-4);
  Tensor x = random_images(batch, nn::default_input_shape(arch, mo), g).to(g_device);
  Tensor y = random_labels(batch, 10, g).to(g_device);
  model->train();
  auto captured = std::make_shared<nn::CapturedStep>(
      [model](const Tensor& xb, const Tensor& yb) {
        Tensor loss = cross_entropy(model->forward(xb), yb);
        loss.backward();
        return std::vector<Tensor>{loss};
      },
      model->named_parameters(), g_cuda_graph);
  return {batch, [captured, opt, x, y] {
            captured->run(x, y);  // zeroes the gradients, forward, backward (a graph replay with --cuda-graph)
            opt->step();
          }};
}

// Inference: eval mode, no graph.
Workload fp_infer(const std::string& arch, int64_t batch) {
  Generator g(7);
  auto model = nn::make_model(arch, 10, {}, 1);
  model->to(g_device);
  Tensor x = random_images(batch, nn::default_input_shape(arch), g).to(g_device);
  model->eval();
  if (g_cuda_graph && g_device.is_cuda()) {
    for (int i = 0; i < 2; ++i) {  // warm the allocator's cache and cuBLAS before the capture
      NoGradGuard ng;
      model->forward(x);
    }
    auto graph = std::make_shared<cuda::Graph>();
    auto logits = std::make_shared<Tensor>();
    graph->capture([&] {
      NoGradGuard ng;
      *logits = model->forward(x);
    });
    return {batch, [graph, logits, model, x] { graph->replay(); }};
  }
  return {batch, [model, x] {
            NoGradGuard ng;
            Tensor logits = model->forward(x);
            (void)logits;
          }};
}

// The joint quantized step over {8, 6, 4, 2} (or a single bit-width when bit_set has one entry).
Workload quant_train(std::vector<int> bit_set, const quant::MethodConfig& cfg, int64_t batch) {
  Generator g(7);
  quant::QuantOptions qo;
  qo.bit_set = bit_set;
  auto model = std::make_shared<quant::QuantModel>("resnet20", 10, qo, 1);
  model->net().to(g_device);
  auto trainer = std::make_shared<quant::JointTrainer>(*model, cfg, 3);
  auto opt = std::make_shared<nn::SGD>(model->net().named_parameters(), 0.01, 0.9, 5e-4);
  Tensor x = random_images(batch, {3, 32, 32}, g).to(g_device), y = random_labels(batch, 10, g).to(g_device);
  model->net().train();
  return {batch, [model, trainer, opt, x, y] {
            trainer->accumulate_gradients(x, y, 0.0);  // progress 0: the swap probability is p0
            opt->step();
          }};
}

// The integer engine at `bits`, on an exported quantized ResNet-20 with the given weight and
// activation quantizers (see the list above).
Workload int_infer(int bits, int64_t batch, const std::string& weight_quant, const std::string& act_quant) {
  AB_CHECK(g_device.is_cpu(), "bench_train: the integer engine runs on the CPU only (drop --device cuda)");
  Generator g(7);
  quant::QuantOptions qo;
  qo.bit_set = {8, 6, 4, 2};
  qo.weight_quant = weight_quant;
  qo.act_quant = act_quant;
  quant::QuantModel model("resnet20", 10, qo, 1);
  Tensor x = random_images(batch, {3, 32, 32}, g);
  {
    NoGradGuard ng;
    Tensor init = random_images(16, {3, 32, 32}, g);
    for (int b : qo.bit_set) {  // LSQ's steps from a first batch, BN statistics off their defaults
      model.set_bits(b);
      model.forward(init);
    }
  }
  char path[] = "/tmp/anybit_bench_int_XXXXXX";
  int fd = mkstemp(path);
  AB_CHECK(fd >= 0, "bench_train: cannot create a temporary file in /tmp");
  close(fd);
  quant::export_model(model, qo.bit_set, path);
  auto engine = std::make_shared<quant::IntegerResNet>(nn::read_safetensors(path), bits);
  std::remove(path);
  return {batch, [engine, x] {
            Tensor logits = engine->forward(x);
            (void)logits;
          }};
}

quant::MethodConfig plain_joint_ce() {
  quant::MethodConfig c;
  c.teacher = quant::TeacherRule::None;
  c.swap = false;
  return c;
}

const std::vector<std::string>& workload_names() {
  static const std::vector<std::string> names{"resnet20_train", "resnet20_infer", "lenet5_train", "lenet5_infer",
                                              "joint_ce",       "joint_ours",     "quant4_train"};
  return names;
}
const std::vector<std::string>& extra_workload_names() {
  static const std::vector<std::string> names{
      "resnet18_train", "resnet50_train", "mobilenetv2_train", "mobilenetv2_cifar_train", "resnet20_infer_1", "int8_infer",   "int6_infer",
      "int4_infer",     "int2_infer",     "int8_infer_1",      "int6_infer_1",     "int4_infer_1", "int2_infer_1",
      "pact8_infer",    "pact6_infer",    "pact4_infer",       "pact2_infer",      "pact8_infer_1", "pact6_infer_1",
      "pact4_infer_1",  "pact2_infer_1"};
  return names;
}

Workload make_workload(const std::string& name) {
  if (name == "resnet20_train") return fp_train("resnet20", 128);
  if (name == "resnet20_infer") return fp_infer("resnet20", 128);
  if (name == "resnet20_infer_1") return fp_infer("resnet20", 1);
  for (int b : {8, 6, 4, 2}) {
    if (name == "int" + std::to_string(b) + "_infer") return int_infer(b, 128, "lsq", "lsq");
    if (name == "int" + std::to_string(b) + "_infer_1") return int_infer(b, 1, "lsq", "lsq");
    if (name == "pact" + std::to_string(b) + "_infer") return int_infer(b, 128, "dorefa", "pact");
    if (name == "pact" + std::to_string(b) + "_infer_1") return int_infer(b, 1, "dorefa", "pact");
  }
  if (name == "resnet18_train") return fp_train("resnet18", 32);
  if (name == "resnet50_train") return fp_train("resnet50", 32);
  if (name == "mobilenetv2_train") return fp_train("mobilenetv2", 128);
  if (name == "mobilenetv2_cifar_train") {
    nn::ModelOptions mo;
    mo.small_input = true;
    return fp_train("mobilenetv2", 128, mo);
  }
  if (name == "lenet5_train") return fp_train("lenet5", 256);
  if (name == "lenet5_infer") return fp_infer("lenet5", 256);
  if (name == "joint_ce") return quant_train({8, 6, 4, 2}, plain_joint_ce(), 128);
  if (name == "joint_ours") return quant_train({8, 6, 4, 2}, quant::MethodConfig{}, 128);
  if (name == "quant4_train") return quant_train({4}, plain_joint_ce(), 128);
  std::string valid;
  for (auto& n : workload_names()) valid += " " + n;
  for (auto& n : extra_workload_names()) valid += " " + n;
  AB_FAIL("bench_train: unknown workload '", name, "' (valid:", valid, ")");
}

// On the GPU a step returns once its kernels are queued: a run ends when the device is done.
void finish() {
  if (g_device.is_cuda()) cuda::synchronize();
}

void warm_up(Workload& w, const Settings& s) {
  for (int i = 0; i < s.warmup; ++i) w.step();
  finish();
}

// Seconds of one timed run of `steps` steps.
double timed_run(Workload& w, const Settings& s) {
  double t0 = now();
  for (int i = 0; i < s.steps; ++i) w.step();
  finish();
  return now() - t0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// images/s of the median timed run. *system_allocs: blocks the caching allocator had to request
// from the system during the timed runs (0 once the cache is warm: tensor/storage.h).
double measure(Workload& w, const Settings& s, size_t* system_allocs) {
  warm_up(w, s);
  size_t allocs0 = cpu_allocator_stats().system_allocs;
  std::vector<double> times;
  for (int r = 0; r < s.repeats; ++r) times.push_back(timed_run(w, s));
  *system_allocs = cpu_allocator_stats().system_allocs - allocs0;
  return (double)w.batch * s.steps / median(times);
}

// ---- --gpu-profile ------------------------------------------------------------------------------------
// One step of w under cuda::profile_begin/end, written to DIR/<name>.csv (one line per kernel, GEMM,
// copy or graph replay, in queue order) and summed up in '#' lines: how much of the timed step
// (step_ms, the median of the timed runs) the GPU was busy, and how that time divides between the GEMMs,
// the other kernels and the copies. A step that waits for the GPU (a copy to the host) cannot be
// queued ahead; the entries after such a wait are marked, and their times include the host's.
void profile_step(const std::string& name, Workload& w, double step_ms) {
  cuda::Profile p;
  double hold_ms = 100;
  for (int attempt = 0; attempt < 2; ++attempt) {
    cuda::profile_begin(hold_ms);
    w.step();
    p = cuda::profile_end();
    if (p.queue_ms < 0.8 * p.hold_ms) break;
    hold_ms = std::min(2 * p.queue_ms + 50, 2000.0);  // the host took longer than the hold: once more, longer
  }
  const std::string path = g_profile_dir + "/" + name + ".csv";
  std::FILE* f = std::fopen(path.c_str(), "w");
  AB_CHECK(f, "bench_train: --gpu-profile: cannot write ", path);
  std::fprintf(f, "index,site,detail,gpu_us,flops,bytes,in_time\n");
  double total = 0, gemm_ms = 0, gemm_flops = 0, copy_ms = 0, kernel_ms = 0;
  int gemms = 0, copies = 0, kernels = 0, in_time = 0;
  for (size_t i = 0; i < p.entries.size(); ++i) {
    const cuda::ProfileEntry& e = p.entries[i];
    std::fprintf(f, "%zu,%s,%s,%.3f,%.0f,%.0f,%d\n", i, e.site.c_str(), e.detail.c_str(), 1e3 * e.gpu_ms, e.flops,
                 e.bytes, e.in_time ? 1 : 0);
    total += e.gpu_ms;
    in_time += e.in_time;
    if (e.flops > 0) gemms++, gemm_ms += e.gpu_ms, gemm_flops += e.flops;
    else if (e.bytes > 0) copies++, copy_ms += e.gpu_ms;
    else kernels++, kernel_ms += e.gpu_ms;
  }
  std::fclose(f);
  std::printf("# gpu profile of %s (%s): %zu entries, %d queued in time%s; the host queued them in %.2f ms while "
              "the GPU was held %.2f ms\n",
              name.c_str(), path.c_str(), p.entries.size(), in_time, p.truncated ? " (truncated)" : "", p.queue_ms,
              p.hold_ms);
  std::printf("#   GPU time %.3f ms of the timed step's %.3f ms (the GPU busy %.0f%% of it)\n", total, step_ms,
              100 * total / step_ms);
  std::printf("#   %d GEMMs %.3f ms (%.1f TFLOP/s), %d other kernels %.3f ms (%.1f us each), %d copies %.3f ms\n",
              gemms, gemm_ms, gemm_ms > 0 ? gemm_flops / gemm_ms * 1e-9 : 0.0, kernels, kernel_ms,
              kernels ? 1e3 * kernel_ms / kernels : 0.0, copies, copy_ms);
  std::fflush(stdout);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int positive(const std::string& flag, const char* value) {
  int v = std::atoi(value);
  AB_CHECK(v > 0, "bench_train: ", flag, " needs a positive integer, got '", value, "'");
  return v;
}

// --int-kernel's names for the integer kernels.
const char* int_kernel_flag(quant::IntKernel k) {
  switch (k) {
    case quant::IntKernel::Portable: return "portable";
    case quant::IntKernel::Avx2: return "avx2";
    case quant::IntKernel::Vnni512: return "vnni";
  }
  return "?";
}

std::string int_kernel_flags() {
  std::string names;
  for (quant::IntKernel k : quant::IntMatmul::kernels())
    names += std::string(names.empty() ? "" : ", ") + int_kernel_flag(k);
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Settings s;
    bool tf32 = false;  // --cuda-tf32
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      bool has_value = i + 1 < argc;
      if (a == "--only" && has_value) s.only = split_commas(argv[++i]);
      else if (a == "--steps" && has_value) s.steps = positive(a, argv[++i]);
      else if (a == "--repeats" && has_value) s.repeats = positive(a, argv[++i]);
      else if (a == "--warmup" && has_value) s.warmup = std::atoi(argv[++i]);
      else if (a == "--threads" && has_value) s.threads = positive(a, argv[++i]);
      else if (a == "--interleave") s.interleave = true;
      else if (a == "--cuda-graph" && has_value) {
        std::string v = argv[++i];
        AB_CHECK(v == "0" || v == "1", "--cuda-graph needs 0 or 1, got '", v, "'");
        g_cuda_graph = v == "1";
      } else if (a == "--cuda-tf32" && has_value) {
        std::string v = argv[++i];
        AB_CHECK(v == "0" || v == "1", "bench_train: --cuda-tf32 needs 0 or 1, got '", v, "'");
        tf32 = v == "1";
      } else if (a == "--gpu-profile" && has_value) {
        g_profile_dir = argv[++i];
      } else if (a == "--device" && has_value) {
        g_device = Device::parse(argv[++i]);
        AB_CHECK(!g_device.is_cuda() || cuda::available(), "--device ", argv[i], ": ",
                 cuda::unavailable_reason());
      }
      else if (a == "--conv-direct" && has_value) {
        std::string v = argv[++i];
        AB_CHECK(v == "0" || v == "1", "bench_train: --conv-direct needs 0 or 1, got '", v, "'");
        cpu::set_conv_direct(v == "1");
      } else if (a == "--int-kernel" && has_value) {
        std::string v = argv[++i];
        bool found = false;
        for (quant::IntKernel k : quant::IntMatmul::kernels())
          if (v == int_kernel_flag(k)) quant::IntMatmul::use_kernel(k), found = true;
        AB_CHECK(found, "bench_train: --int-kernel '", v, "' is not one of this build's: ", int_kernel_flags());
      } else
        AB_FAIL("bench_train: unknown argument '", a,
                "' (usage: bench_train [--only NAME[,NAME...]] [--steps N] [--repeats N] [--warmup N] [--threads N] [--interleave] [--conv-direct 0|1] [--int-kernel K] [--device cpu|cuda] [--cuda-graph 0|1] [--cuda-tf32 0|1] [--gpu-profile DIR])");
    }
    cpu::set_num_threads(s.threads);
    AB_CHECK(!tf32 || g_device.is_cuda(), "bench_train: --cuda-tf32 1 needs --device cuda");
    if (g_device.is_cuda()) cuda::set_tf32(tf32);
    AB_CHECK(g_profile_dir.empty() || g_device.is_cuda(), "bench_train: --gpu-profile needs --device cuda");
    AB_CHECK(g_profile_dir.empty() || !s.interleave, "bench_train: --gpu-profile does not go with --interleave");
    if (!g_profile_dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(g_profile_dir, ec);
      AB_CHECK(!ec, "bench_train: --gpu-profile: cannot create the folder ", g_profile_dir, ": ", ec.message());
    }
    std::vector<std::string> run = s.only.empty() ? workload_names() : s.only;
    for (auto& n : run)  // check every name before spending minutes on the first workloads
      if (std::find(workload_names().begin(), workload_names().end(), n) == workload_names().end() &&
          std::find(extra_workload_names().begin(), extra_workload_names().end(), n) == extra_workload_names().end())
        make_workload(n);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    std::printf("# bench_train: %d threads, warm-up %d steps, median of %d runs of %d steps; OPENBLAS_CORETYPE=%s; "
                "direct convolution %s; integer kernel %s%s\n",
                s.threads, s.warmup, s.repeats, s.steps, coretype ? coretype : "(unset)",
                cpu::conv_direct() ? "on" : "off", quant::IntMatmul::kernel_name(quant::IntMatmul::kernel()),
                g_device.is_cuda() ? (tf32 ? "; device cuda, GEMMs in TF32" : "; device cuda, GEMMs in float32")
                                   : "");
    std::fflush(stdout);

    std::map<std::string, double> ips;
    std::map<std::string, size_t> allocs;
    std::map<std::string, int64_t> batch;
    std::map<std::string, std::vector<double>> round_ratio;  // --interleave: per round, step time / FP step time
    if (!s.interleave) {
      for (auto& name : run) {
        Workload w = make_workload(name);
        batch[name] = w.batch;
        ips[name] = measure(w, s, &allocs[name]);
        std::printf("%s %.1f\n", name.c_str(), ips[name]);
        std::fflush(stdout);
        if (!g_profile_dir.empty()) profile_step(name, w, 1e3 * w.batch / ips[name]);
      }
    } else {
      std::map<std::string, Workload> work;
      std::map<std::string, std::vector<double>> times;  // seconds per image of each timed run
      for (auto& name : run) {
        work[name] = make_workload(name);
        batch[name] = work[name].batch;
        warm_up(work[name], s);
      }
      const size_t allocs0 = cpu_allocator_stats().system_allocs;
      for (int r = 0; r < s.repeats; ++r) {
        for (auto& name : run) times[name].push_back(timed_run(work[name], s) / batch[name]);
        if (times.count("resnet20_train"))
          for (auto& name : run) round_ratio[name].push_back(times[name].back() / times["resnet20_train"].back());
      }
      const size_t all_allocs = cpu_allocator_stats().system_allocs - allocs0;  // not per workload here
      for (auto& name : run) {
        ips[name] = s.steps / median(times[name]);
        allocs[name] = all_allocs;
        std::printf("%s %.1f\n", name.c_str(), ips[name]);
      }
      std::fflush(stdout);
    }

    std::printf("#\n# %-24s %8s %12s %10s %14s\n", "workload", "batch", "images/s", "ms/step", "sys allocs");
    for (auto& name : run) {
      std::printf("# %-24s %8lld %12.1f %10.2f %14zu\n", name.c_str(), (long long)batch[name], ips[name],
                  1e3 * batch[name] / ips[name], allocs[name]);
    }
    // Step-time ratios against the full-precision step (how much the quantizers cost).
    if (ips.count("resnet20_train")) {
      for (const char* q : {"quant4_train", "joint_ce", "joint_ours"}) {
        if (!ips.count(q)) continue;
        if (round_ratio.count(q))
          std::printf("# %s / resnet20_train step time: %.2fx, median of the rounds' own ratios %.2fx\n", q,
                      ips["resnet20_train"] / ips[q], median(round_ratio[q]));
        else
          std::printf("# %s / resnet20_train step time: %.2fx\n", q, ips["resnet20_train"] / ips[q]);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    const std::string message = e.what();  // named once, whether or not the message names the program
    std::fprintf(stderr, "%s%s\n", message.rfind("bench_train: ", 0) == 0 ? "" : "bench_train: ", message.c_str());
    return 1;
  }
}
