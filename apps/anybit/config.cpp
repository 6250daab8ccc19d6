// config.cpp - parsing and typed access for run configurations. See config.h.
#include "apps/anybit/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace anybit::app {

static std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

Config::Config(std::vector<OptionInfo> known) : known_(std::move(known)) {}

void Config::check_known(const std::string& key, const std::string& where) const {
  for (auto& o : known_)
    if (o.key == key) return;
  std::string close;
  for (auto& o : known_)
    if (o.key.find(key) != std::string::npos || key.find(o.key) != std::string::npos) close += " " + o.key;
  AB_FAIL(where, ": unknown option '", key, "'", close.empty() ? "" : " (did you mean:" + close + "?)",
          "; `anybit help` lists the options");
}

void Config::set(const std::string& key, const std::string& value) {
  check_known(key, "--" + key);
  values_[key] = value;
}

void Config::load_file(const std::string& path) {
  std::ifstream in(path);
  AB_CHECK(in, "--config: cannot open '", path, "'");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    auto hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    auto eq = line.find('=');
    AB_CHECK(eq != std::string::npos, path, ":", n, ": expected `key = value`, got '", line, "'");
    std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    check_known(key, path + ":" + std::to_string(n));
    values_[key] = value;
  }
}

std::vector<std::string> Config::parse_args(const std::vector<std::string>& args) {
  // Two passes, so that the command line overrides the file wherever --config stands.
  std::vector<std::pair<std::string, std::string>> pairs;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      rest.push_back(a);
      continue;
    }
    std::string key = a.substr(2), value;
    auto eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      AB_CHECK(i + 1 < args.size(), "--", key, ": missing value");
      value = args[++i];
    }
    std::replace(key.begin(), key.end(), '-', '_');
    if (key == "config")
      load_file(value);
    else
      pairs.emplace_back(key, value);
  }
  for (auto& [key, value] : pairs) set(key, value);
  return rest;
}

std::string Config::str(const std::string& key) const {
  check_known(key, "config");
  auto it = values_.find(key);
  if (it != values_.end()) return it->second;
  for (auto& o : known_)
    if (o.key == key) return o.default_value;
  return "";
}

int64_t Config::integer(const std::string& key) const {
  std::string v = str(key);
  try {
    size_t used = 0;
    int64_t r = std::stoll(v, &used);
    if (used == v.size()) return r;
  } catch (...) {
  }
  AB_FAIL("--", key, ": '", v, "' is not an integer");
}

double Config::number(const std::string& key) const {
  std::string v = str(key);
  try {
    size_t used = 0;
    double r = std::stod(v, &used);
    if (used == v.size()) return r;
  } catch (...) {
  }
  AB_FAIL("--", key, ": '", v, "' is not a number");
}

bool Config::flag(const std::string& key) const {
  std::string v = str(key);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) return false;
  AB_FAIL("--", key, ": '", v, "' is not a boolean (use 1/0, true/false, yes/no, on/off)");
}

std::string Config::dump() const {
  std::ostringstream os;
  for (auto& o : known_) os << o.key << " = " << str(o.key) << "\n";
  return os.str();
}

std::string Config::help(const std::vector<std::string>& only) const {
  std::ostringstream os;
  for (auto& o : known_) {
    if (!only.empty() && std::find(only.begin(), only.end(), o.key) == only.end()) continue;
    std::string k = "--" + o.key;
    std::replace(k.begin(), k.end(), '_', '-');
    os << "  " << k << std::string(k.size() < 22 ? 22 - k.size() : 1, ' ') << o.help
       << (o.default_value.empty() ? "" : " [" + o.default_value + "]") << "\n";
  }
  return os.str();
}

}  // namespace anybit::app
