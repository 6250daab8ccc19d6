// error.h - the one way anybit reports a problem: an exception that says what went wrong.
//
// AB_CHECK(cond, parts...) throws anybit::Error("parts...") when cond is false; with ANYBIT_DEBUG=1
// in the environment the message starts with the source "file:line: " (`anybit --verbose` sets it).
// Checks are never compiled out (STYLE.md rule 11). Read next: dtype.h, device.h, storage.h, tensor.h.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace anybit {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void fail(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace anybit

#define AB_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) ::anybit::detail::fail(__FILE__, __LINE__, ::anybit::detail::cat(__VA_ARGS__)); \
  } while (0)

#define AB_FAIL(...) ::anybit::detail::fail(__FILE__, __LINE__, ::anybit::detail::cat(__VA_ARGS__))
