// error.h - the one way anybit reports a problem: an exception that names where and what.
//
// AB_CHECK(cond, parts...) throws anybit::Error with "file:line: parts..." when cond is false.
// Checks are never compiled out (STYLE.md rule 11): a wrong shape must fail loudly in a release
// build too. Read next: dtype.h, device.h, storage.h, tensor.h.
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
