// cuda_skip.h - how a CUDA test case steps aside where there is no usable GPU (STYLE.md rule 8).
//
// A test case that needs a GPU carries the tag [cuda] and starts with SKIP_WITHOUT_GPU(). Without
// a usable GPU (a CPU-only build, no driver, no device) the macro
//   - counts the case in cuda_skipped_test_cases(),
//   - warns "skipping: <reason>" (the reason from cuda::unavailable_reason()),
//   - and returns from the test case, which then ran no check.
// Catch 2.13 has no SKIP, so a returned case would look passed; tests/main.cpp keeps that from
// misleading anyone: on a machine without a GPU a plain run leaves every [cuda] case out and
// says how many, and a run that selected some says afterwards how many of them skipped.
// Read next: tests/main.cpp, tests/test_cuda_ops.cpp.
#pragma once
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "tensor/cuda/cuda.h"

namespace anybit::test {

// The number of test cases that returned through SKIP_WITHOUT_GPU in this process. One counter
// for the whole program (an inline function's static is shared by every translation unit).
inline int& cuda_skipped_test_cases() {
  static int n = 0;
  return n;
}

// True in anybit_tests_emu, the tests on the CUDA emulator (tensor/cuda/emu/): its "GPU" is the
// CPU, one thread at a time, so a case may leave out work that only a real GPU does in reasonable time.
inline bool on_cuda_emulator() {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").filename().string();
  return self.size() > 4 && self.compare(self.size() - 4, 4, "_emu") == 0;
}

}  // namespace anybit::test

#define SKIP_WITHOUT_GPU()                                                   \
  do {                                                                       \
    if (!::anybit::cuda::available()) {                                      \
      ++::anybit::test::cuda_skipped_test_cases();                           \
      WARN("skipping: " << ::anybit::cuda::unavailable_reason());            \
      return;                                                                \
    }                                                                        \
  } while (0)
