// main.cpp - the Catch2 entry point of anybit_tests. Run `build/anybit_tests --list-tests` to
// see every test, `build/anybit_tests "[grad]"` to run one tag.
//
// Every allocation in the tests, CPU and CUDA, starts as NaN (tensor/storage.h), so a kernel that
// leaves part of its output unwritten, or relies on zeroed memory, fails its test instead of
// passing by luck.
//
// CUDA test cases (tag [cuda], tests/cuda_skip.h) never pass without running. Where no GPU is
// usable (a CPU-only build, no driver, no device):
//   - a plain run (no test names or tags given) leaves them out (Catch then shows the filter
//     "~[.]~[cuda]"), and says so in one line before the run: "anybit_tests: <n> CUDA test cases
//     ([cuda]) skipped, not run and not counted as passed: <reason>";
//   - a run that selects some of them by name or tag runs them; each says "skipping: <reason>"
//     and returns, and one line after the run says how many did ("they ran no check").
// Test cases that read or write video through FFmpeg's libraries (tag [ffmpeg]) are left out the
// same way, with their own line, in a build without FFmpeg (cmake -DANYBIT_VIDEO=OFF, as
// scripts/gpu-check.sh builds): there they would only fail with "built without FFmpeg".
// A case that could not make one of its checks here (a missing tool, no shared MNIST copy:
// tests/skips.h) is listed after the run, "anybit_tests: <n> test cases passed without some of
// their checks", one line each with the reason; with ANYBIT_TESTS_STRICT=1 such a run fails.
// Otherwise Catch's exit code is returned unchanged. Listing (--list-tests, --list-tags, ...) and --help
// are left exactly as Catch does them.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <set>
#include <string>

#include "data/video_decode.h"
#include "tensor/cuda/cuda.h"
#include "tensor/storage.h"
#include "tests/cuda_skip.h"
#include "tests/skips.h"

namespace {

bool has_tag(const Catch::TestCaseInfo& tc, const std::string& lowercase_tag) {
  return std::find(tc.lcaseTags.begin(), tc.lcaseTags.end(), lowercase_tag) != tc.lcaseTags.end();
}

}  // namespace

int main(int argc, char* argv[]) {
  try {
    anybit::set_fill_new_allocations_with_nan(true);
    Catch::Session session;
    int rc = session.applyCommandLine(argc, argv);
    if (rc != 0) return rc;  // a bad command line: Catch has said why

    Catch::ConfigData& cfg = session.configData();
    const bool only_lists = cfg.listTests || cfg.listTestNamesOnly || cfg.listTags || cfg.listReporters ||
                            cfg.showHelp || cfg.libIdentify;
    // Our lines go to stdout next to Catch's text, but to stderr when a machine-readable report
    // (xml, junit, ...) is written to stdout, so as not to corrupt it.
    const bool report_on_stdout = cfg.outputFilename.empty() || cfg.outputFilename == "-";
    std::ostream& note =
        report_on_stdout && cfg.reporterName != "console" && cfg.reporterName != "compact" ? std::cerr : std::cout;

    const bool gpu = anybit::cuda::available(), video = anybit::data::video_available();
    const std::string reason = gpu ? "" : anybit::cuda::unavailable_reason();
    if ((!gpu || !video) && !only_lists && cfg.testsOrTags.empty()) {
      // "Everything but [cuda]" (and but [ffmpeg]). An exclusion alone would also select the
      // hidden cases ([.]), which a plain run leaves out, so exclude those too.
      cfg.testsOrTags.push_back(std::string("~[.]") + (gpu ? "" : "~[cuda]") + (video ? "" : "~[ffmpeg]"));
      int n_cuda = 0, n_video = 0;
      for (const Catch::TestCase& tc : Catch::getAllTestCasesSorted(session.config())) {
        if (tc.isHidden()) continue;
        if (has_tag(tc, "cuda")) ++n_cuda;
        else if (has_tag(tc, "ffmpeg")) ++n_video;
      }
      if (!gpu)
        note << "anybit_tests: " << n_cuda << " CUDA test cases ([cuda]) skipped, not run and not counted as passed: "
             << reason << std::endl;
      if (!video)
        note << "anybit_tests: " << n_video << " video test cases ([ffmpeg]) skipped, not run and not counted as passed: "
             << anybit::data::video_unavailable_reason() << std::endl;
    }

    rc = session.run();

    const int skipped = anybit::test::cuda_skipped_test_cases();
    if (skipped > 0)
      note << "anybit_tests: " << skipped << " selected CUDA test case" << (skipped == 1 ? "" : "s")
           << " skipped (" << reason << "); " << (skipped == 1 ? "it" : "they") << " ran no check" << std::endl;

    const std::vector<anybit::test::SkippedCheck>& partial = anybit::test::skipped_checks();
    if (!partial.empty()) {
      std::set<std::string> cases;
      for (const auto& s : partial) cases.insert(s.test_case);
      note << "anybit_tests: " << cases.size() << " test case" << (cases.size() == 1 ? "" : "s")
           << " passed without some of their checks (tests/skips.h):" << std::endl;
      for (const auto& s : partial) note << "  " << s.test_case << ": " << s.why << std::endl;
      const char* strict = std::getenv("ANYBIT_TESTS_STRICT");
      if (strict && std::string(strict) == "1") {
        note << "anybit_tests: ANYBIT_TESTS_STRICT=1, so this run fails" << std::endl;
        if (rc == 0) rc = 1;
      }
    }
    return rc;
  } catch (const std::exception& e) {
    std::cerr << "anybit_tests: " << e.what() << std::endl;
    return 1;
  }
}
