// json.h - a small JSON value, parser and writer (for safetensors headers; no third-party code).
//
// Json holds one of null, bool, number, string, array or object. Objects keep their keys in
// insertion order (a safetensors header lists tensors in file order, and a writer should produce
// the same bytes for the same input). Numbers keep their source text as well as a double, so an
// int64 such as a data offset above 2^53 round-trips exactly (as_int() parses the text).
//
// parse() throws anybit::Error naming the byte offset and what was expected; callers prefix the
// file name. Read next: nn/checkpoint.h (the safetensors reader and writer that use it).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace anybit::nn {

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Json() = default;
  static Json boolean(bool b);
  static Json number(int64_t v);
  static Json number_text(const std::string& text);  // a number as written in the source
  static Json string(const std::string& s);
  static Json array();
  static Json object();

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }
  static const char* kind_name(Kind k);

  // Accessors throw (naming what was expected) when the kind is wrong.
  bool as_bool() const;
  int64_t as_int() const;  // the number must be an integer that fits in int64
  double as_double() const;
  const std::string& number_source() const;  // the number as written
  const std::string& as_string() const;
  const std::vector<Json>& items() const;                           // array
  const std::vector<std::pair<std::string, Json>>& members() const;  // object, in order
  const Json* find(const std::string& key) const;                   // object; null when absent

  // Building.
  Json& push_back(Json v);                        // array
  Json& set(const std::string& key, Json v);      // object: appends, or replaces an existing key

  // Keys in insertion order. Compact by default; spaced: ", " and ": " between items, the layout of
  // Python's json.dumps (metrics.jsonl).
  std::string dump(bool spaced = false) const;
  // Parses one JSON document (surrounding whitespace allowed, nothing else after it).
  static Json parse(const std::string& text);

 private:
  Kind kind_ = Kind::Null;
  bool b_ = false;
  std::string s_;  // string value, or the number's text
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

// Appends s as a quoted JSON string with escapes.
void json_quote(const std::string& s, std::string& out);

}  // namespace anybit::nn
