// main.cpp - the Catch2 entry point of anybit_tests. Run `build/anybit_tests --list-tests` to
// see every test, `build/anybit_tests "[grad]"` to run one tag.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
