// run_helpers.h - what the tests that run the anybit program share: which program to run, mpirun,
// a small image folder to train on, and reading what a run wrote (its metrics and its tensors).
//
// The program under test is the one built with the same CUDA backend as the test binary:
// anybit_tests runs `anybit`; anybit_tests_emu (the tests on the emulated GPU, tensor/cuda/emu/)
// runs `anybit_emu`, so that `--device cuda` in a [cuda] case reaches the device the case checks.
// Read next: tests/test_distributed.cpp, tests/test_cuda_app.cpp.
#pragma once
#include <stb_image_write.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "nn/distributed.h"
#include "nn/json.h"
#include "tensor/random.h"
#include "tests/cuda_skip.h"
#include "tests/helpers.h"
#include "tests/skips.h"

namespace anybit::test {

// The anybit program beside this test binary, with the same CUDA backend (see above).
inline std::string anybit_program() {
  return std::string(ANYBIT_BINARY_DIR) + (on_cuda_emulator() ? "/anybit_emu" : "/anybit");
}

// Why the MPI runs cannot happen here, or "" when they can.
inline std::string why_no_mpi() {
  if (!nn::built_with_mpi())
    return "anybit was built without MPI (-DANYBIT_MPI=OFF, as make sanitize builds, or no libopenmpi-dev when "
           "configured: scripts/install-deps.sh installs it)";
  if (run_command("command -v mpirun", nullptr) != 0) return "no mpirun on PATH (apt-get install openmpi-bin)";
  return "";
}

// True when the MPI runs can happen here; otherwise records why the case skipped them (skips.h).
inline bool mpi_runs_here() {
  const std::string why = why_no_mpi();
  if (!why.empty()) skip_check("the MPI runs: " + why);
  return why.empty();
}

// mpirun for n processes, allowed as root (containers, CI) and on a machine with fewer cores.
inline std::string mpirun(int n) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "
         "timeout 300 mpirun --oversubscribe -np " +
         std::to_string(n) + " ";
}

// A 4-class image folder of side x side RGB PNGs (train/ and test/): class c is a bright square in
// quadrant c, plus noise.
inline void write_image_folder(const std::string& root, int per_class_train, int per_class_test, int side = 32) {
  Generator g(11);
  const int half = side / 2, margin = side / 8;
  for (const char* split : {"train", "test"})
    for (int c = 0; c < 4; ++c) {
      std::string dir = root + "/" + split + "/class" + std::to_string(c);
      REQUIRE(run_command("mkdir -p " + dir, nullptr) == 0);
      const int n = std::string(split) == "train" ? per_class_train : per_class_test;
      for (int i = 0; i < n; ++i) {
        std::vector<unsigned char> px(side * side * 3);
        for (int y = 0; y < side; ++y)
          for (int x = 0; x < side; ++x)
            for (int ch = 0; ch < 3; ++ch) {
              bool in = (y / half) * 2 + (x / half) == c && y % half >= margin && x % half >= margin;
              px[(y * side + x) * 3 + ch] = (unsigned char)((in ? 150 : 20) + g.below(80));
            }
        REQUIRE(stbi_write_png((dir + "/" + std::to_string(i) + ".png").c_str(), side, side, 3, px.data(), side * 3));
      }
    }
}

// A whole text file ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The last line of a run's metrics.jsonl.
inline nn::Json last_metrics(const std::string& run) {
  std::ifstream f(run + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(f, line))
    if (!line.empty()) last = line;
  REQUIRE(!last.empty());
  return nn::Json::parse(last);
}

// The per-bit-width training losses of a run's last metrics line ("fp32" for a plain model).
inline std::map<std::string, double> train_losses(const std::string& run) {
  nn::Json j = last_metrics(run);
  std::map<std::string, double> out;
  const nn::Json* train = j.find("train");
  REQUIRE(train);
  for (auto& [bits, v] : train->members()) out[bits] = v.find("loss")->as_double();
  return out;
}

// Every tensor of two safetensors files within rtol of the larger magnitude of its tensor,
// max |a - b| <= rtol * max |a|; returns the number of values compared.
inline int64_t require_same_tensors(const std::string& a, const std::string& b, double rtol) {
  nn::SafeTensors ta = nn::read_safetensors(a), tb = nn::read_safetensors(b);
  REQUIRE(ta.tensors.size() == tb.tensors.size());
  int64_t compared = 0;
  for (size_t i = 0; i < ta.tensors.size(); ++i) {
    auto& [name, x] = ta.tensors[i];
    REQUIRE(tb.tensors[i].first == name);
    auto va = x.to_vector<double>(), vb = tb.tensors[i].second.to_vector<double>();
    REQUIRE(va.size() == vb.size());
    double diff = 0, mag = 0;
    for (size_t k = 0; k < va.size(); ++k) {
      diff = std::max(diff, std::abs(va[k] - vb[k]));
      mag = std::max(mag, std::abs(va[k]));
    }
    INFO(name << ": max |a - b| " << diff << ", max |a| " << mag);
    REQUIRE(diff <= rtol * mag);
    compared += (int64_t)va.size();
  }
  return compared;
}

}  // namespace anybit::test
