// config.h - the run configuration: a `key = value` file with command-line overrides.
//
// Format (docs/CONFIG.md): one `key = value` per line; `#` starts a comment; blank lines are
// ignored. Every key can also be given on the command line as `--key value` or `--key=value`,
// which overrides the file. Keys are checked against the list of known options (a typo is an
// error that names it), and typed getters name the option and the bad value.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace anybit::app {

struct OptionInfo {
  std::string key, default_value, help;
};

class Config {
 public:
  explicit Config(std::vector<OptionInfo> known);
  void load_file(const std::string& path);  // errors name the file and line
  // Parses argv-style `--key value` pairs (`--config FILE` loads a file first, wherever it
  // stands: the other options override it); returns the positional arguments left over.
  std::vector<std::string> parse_args(const std::vector<std::string>& args);
  void set(const std::string& key, const std::string& value);

  std::string str(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  double number(const std::string& key) const;
  bool flag(const std::string& key) const;  // 1/0, true/false, yes/no, on/off
  bool given(const std::string& key) const { return values_.count(key) > 0; }

  std::string dump() const;  // every option with its value, in `key = value` form
  // One line per option: --key, its help and its default. only: just these keys (empty: all).
  std::string help(const std::vector<std::string>& only = {}) const;

 private:
  void check_known(const std::string& key, const std::string& where) const;
  std::vector<OptionInfo> known_;
  std::map<std::string, std::string> values_;
};

}  // namespace anybit::app
