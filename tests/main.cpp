// main.cpp - the Catch2 entry point of anybit_tests. Run `build/anybit_tests --list-tests` to
// see every test, `build/anybit_tests "[grad]"` to run one tag.
//
// Every CPU allocation in the tests starts as NaN (tensor/storage.h), so a kernel that leaves part
// of its output unwritten, or relies on zeroed memory, fails its test instead of passing by luck.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "tensor/storage.h"

int main(int argc, char* argv[]) {
  anybit::set_fill_new_allocations_with_nan(true);
  return Catch::Session().run(argc, argv);
}
