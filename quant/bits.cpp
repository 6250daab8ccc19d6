// bits.cpp - parsing and printing bit sets.
#include "quant/bits.h"

#include <algorithm>
#include <sstream>

namespace anybit::quant {

std::vector<int> parse_bit_set(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int b = 0;
    try {
      size_t used = 0;
      b = std::stoi(item, &used);
      AB_CHECK(used == item.size(), "");
    } catch (...) {
      AB_FAIL("--bits: '", item, "' in '", s, "' is not a number (expected a list such as 8,6,4,2)");
    }
    AB_CHECK((b >= 1 && b <= 8) || b == 32, "--bits: bit-width ", b, " in '", s,
             "' must be between 1 and 8, or 32 for full precision");
    AB_CHECK(std::find(out.begin(), out.end(), b) == out.end(), "--bits: bit-width ", b,
             " appears twice in '", s, "'");
    out.push_back(b);
  }
  AB_CHECK(!out.empty(), "--bits: empty bit set");
  return out;
}

std::string bit_set_str(const std::vector<int>& bits) {
  std::string r;
  for (size_t i = 0; i < bits.size(); ++i) r += (i ? "," : "") + std::to_string(bits[i]);
  return r;
}

}  // namespace anybit::quant
