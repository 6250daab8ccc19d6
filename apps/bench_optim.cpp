// bench_optim.cpp - the optimizer step as a memory-bound kernel: SGD (momentum) and AdamW on the
// parameters of a model of the zoo, in GB/s next to memcpy of the same parameter bytes.
//
// An SGD momentum step reads p, g, buf and writes p, buf: 5 x 4 bytes per float32 parameter;
// AdamW reads p, g, m, v and writes p, m, v: 7 x 4 bytes (the update itself allocates nothing:
// nn/optim.cpp).
// Usage: bench_optim [--model resnet50] [--reps 10]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nn/models.h"
#include "nn/optim.h"

#include "apps/bench_timing.h"

using namespace anybit;
using namespace anybit::nn;

namespace {

using bench::median_time;
using bench::now;

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string model = "resnet50";
    int reps = 10;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--model" && i + 1 < argc) model = argv[++i];
      else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
      else AB_FAIL("bench_optim: unknown argument '", a, "' (usage: bench_optim [--model NAME] [--reps N])");
    }
    ModulePtr m = make_model(model, model == "lenet5" || model.find("20") != std::string::npos ? 10 : 1000);
    NamedTensors params = m->named_parameters();
    int64_t n = count_parameters(*m);
    Generator g(1);
    for (auto& [name, p] : params) p.set_grad(Tensor::randn(p.shape(), g, 0, 1e-3));
    std::printf("%s: %lld parameters (%.1f MB float32), %d reps, median\n", model.c_str(), (long long)n,
                n * 4 / 1e6, reps);

    std::vector<char> src(n * 4, 1), dst(n * 4);
    double t_copy = median_time(reps, [&] { std::memcpy(dst.data(), src.data(), src.size()); });
    std::printf("  memcpy           %8.3f ms  %6.1f GB/s (read + write)\n", t_copy * 1e3, 2.0 * n * 4 / t_copy / 1e9);

    SGD sgd(params, 0.1, 0.9, 5e-4);
    double t_sgd = median_time(reps, [&] { sgd.step(); });
    std::printf("  SGD momentum     %8.3f ms  %6.1f GB/s (5 x 4 B / param)\n", t_sgd * 1e3, 5.0 * n * 4 / t_sgd / 1e9);

    AdamW adamw(params, 1e-3, 1e-2);
    double t_adam = median_time(reps, [&] { adamw.step(); });
    std::printf("  AdamW            %8.3f ms  %6.1f GB/s (7 x 4 B / param)\n", t_adam * 1e3,
                7.0 * n * 4 / t_adam / 1e9);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_optim: %s\n", e.what());
    return 1;
  }
}
