// skips.h - a check that a test case could not make on this machine, said where it happens and
// said again after the whole run, so that a green run never hides what it left out.
//
// Some cases need what a machine may lack: a tool (the ffmpeg program, mpirun, /usr/bin/python3
// with onnx, node with onnxruntime-node) or the shared MNIST copy (tests never download). Where
// such a case has to give up a check it calls
//
//     if (!have_ffmpeg_tool()) {
//       test::skip_check("the ffmpeg tool is not installed (scripts/install-deps.sh installs it)");
//       return;
//     }
//
// which warns "skipped: <why>" and records the case. The case then returns, or goes on without
// that part. Catch 2.13 has no SKIP, so Catch counts the case as passed; tests/main.cpp therefore
// lists every recorded case after the run ("anybit_tests: <n> test cases passed without some of
// their checks: ..."), and with ANYBIT_TESTS_STRICT=1 in the environment it makes the run fail.
// (A case that needs a GPU steps aside through SKIP_WITHOUT_GPU instead: tests/cuda_skip.h.)
// Read next: tests/main.cpp.
#pragma once
#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace anybit::test {

struct SkippedCheck {
  std::string test_case;  // the test case's name
  std::string why;        // what was left out, and why
};

// Every check skipped in this process, in the order they happened. One list for the whole program
// (an inline function's static is shared by every translation unit).
inline std::vector<SkippedCheck>& skipped_checks() {
  static std::vector<SkippedCheck> list;
  return list;
}

// Records that the running test case left out a check, and why; warns with the reason.
inline void skip_check(std::string why) {
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();  // a tool's output, say
  const std::string name = Catch::getResultCapture().getCurrentTestName();
  bool seen = false;  // a case with sections, or a loop, may give up the same check more than once
  for (const SkippedCheck& s : skipped_checks()) seen = seen || (s.test_case == name && s.why == why);
  if (!seen) skipped_checks().push_back({name, why});
  WARN("skipped: " << why);
}

}  // namespace anybit::test
