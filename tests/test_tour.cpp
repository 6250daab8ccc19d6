// test_tour.cpp - docs/TOUR.md cannot go stale: every `file: function` it names must still exist,
// the file in the tree and the function defined or declared in that file.
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/helpers.h"

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("every `file: function` named in docs/TOUR.md exists", "[docs]") {
  const std::string root = ANYBIT_SOURCE_DIR;
  std::string tour = read_text(root + "/docs/TOUR.md");
  REQUIRE(!tour.empty());
  // `quant/joint_trainer.cpp: JointTrainer::accumulate_gradients` -> file, function
  std::regex ref("`([A-Za-z0-9_/]+\\.(?:cpp|h|cu)): ([A-Za-z0-9_:~]+)`");
  int checked = 0;
  for (auto it = std::sregex_iterator(tour.begin(), tour.end(), ref); it != std::sregex_iterator(); ++it) {
    std::string file = (*it)[1], fn = (*it)[2];
    INFO("docs/TOUR.md names `" << file << ": " << fn << "`");
    std::string src = read_text(root + "/" + file);
    REQUIRE(!src.empty());  // the file exists
    // The function: its (qualified) name followed by '(' somewhere in the file, as a definition,
    // declaration or call site of that file (a member defined in a class body appears unqualified).
    std::string unqualified = fn.substr(fn.rfind(':') == std::string::npos ? 0 : fn.rfind(':') + 1);
    bool found = src.find(fn + "(") != std::string::npos ||
                 (src.find(unqualified + "(") != std::string::npos && fn.find("::") != std::string::npos &&
                  src.find("class " + fn.substr(0, fn.find("::"))) != std::string::npos);
    REQUIRE(found);
    ++checked;
  }
  REQUIRE(checked >= 20);  // the tour names at least the twenty stops of one training step
}
