// bits.h - which bit-width is active, for the whole model and for each block.
//
// METHOD.md section 2: the active bit-width is a property of the whole model, with per-block
// overrides for dynamic block swapping (section 5). A BitState is shared by every quantized layer
// of a model; each block (a residual block, or one layer in a network without blocks) has a
// BlockBits that its layers read. While a block runs at an overridden bit-width inside a student
// pass, its BN set must not update its running statistics (freeze_bn_stats).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace anybit::quant {

constexpr int kFullPrecision = 32;  // b = 32 means "full precision member": no rounding

struct BitState {
  std::vector<int> bit_set;  // in the order the user gave, e.g. {8, 6, 4, 2}
  int active = kFullPrecision;

  // Index of b in bit_set: selects the BN set and the clip value of bit-width b.
  int index_of(int b) const {
    for (size_t i = 0; i < bit_set.size(); ++i)
      if (bit_set[i] == b) return (int)i;
    AB_FAIL("bit-width ", b, " is not in the model's bit set");
  }
};

struct BlockBits {
  std::string name;                // "layer1.0"
  std::shared_ptr<BitState> model;
  int override_bits = 0;           // 0: follow the model
  bool freeze_bn_stats = false;    // set while swapped in a student pass

  int bits() const { return override_bits ? override_bits : model->active; }
};

// "8,6,4,2" -> {8, 6, 4, 2}; checks each is in [1, 8] or 32 and that none repeats.
std::vector<int> parse_bit_set(const std::string& s);
std::string bit_set_str(const std::vector<int>& bits);

}  // namespace anybit::quant
