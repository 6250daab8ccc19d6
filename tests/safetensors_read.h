// safetensors_read.h - a minimal, test-only reader of .safetensors files (the golden fixtures).
//
// Format: an 8-byte little-endian header length n, n bytes of JSON
//   {"name": {"dtype": "F64", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the raw little-endian data; offsets count from the end of the header. Only F32, F64 and
// I64 are read (what scripts/make_golden.py writes). The real checkpoint reader and writer live in
// nn/; this one exists so the golden test depends on nothing but the tensor library.
#pragma once
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace anybit::test {

namespace detail {

// Just enough JSON for a safetensors header: objects, arrays, strings without escapes, integers.
struct Json {
  enum Kind { Object, Array, String, Number } kind = Number;
  std::map<std::string, Json> obj;
  std::vector<Json> arr;
  std::string str;
  int64_t num = 0;
};

struct JsonParser {
  const std::string& s;
  size_t i = 0;
  std::string where;  // file name for errors

  void ws() {
    while (i < s.size() && std::isspace((unsigned char)s[i])) ++i;
  }
  void expect(char c) {
    ws();
    AB_CHECK(i < s.size() && s[i] == c, "safetensors_read: ", where, ": expected '", c, "' at byte ", i,
             " of the header");
    ++i;
  }
  std::string string() {
    expect('"');
    size_t j = s.find('"', i);
    AB_CHECK(j != std::string::npos, "safetensors_read: ", where, ": unterminated string in the header");
    std::string r = s.substr(i, j - i);
    i = j + 1;
    return r;
  }
  Json value() {
    ws();
    AB_CHECK(i < s.size(), "safetensors_read: ", where, ": truncated header");
    Json v;
    if (s[i] == '{') {
      v.kind = Json::Object;
      ++i;
      ws();
      if (s[i] == '}') return ++i, v;
      for (;;) {
        std::string k = string();
        expect(':');
        v.obj[k] = value();
        ws();
        if (s[i] == ',') { ++i; continue; }
        expect('}');
        return v;
      }
    }
    if (s[i] == '[') {
      v.kind = Json::Array;
      ++i;
      ws();
      if (s[i] == ']') return ++i, v;
      for (;;) {
        v.arr.push_back(value());
        ws();
        if (s[i] == ',') { ++i; continue; }
        expect(']');
        return v;
      }
    }
    if (s[i] == '"') {
      v.kind = Json::String;
      v.str = string();
      return v;
    }
    size_t end = i;
    while (end < s.size() && (std::isdigit((unsigned char)s[end]) || s[end] == '-')) ++end;
    AB_CHECK(end > i, "safetensors_read: ", where, ": unexpected '", s[i], "' at byte ", i, " of the header");
    v.num = std::stoll(s.substr(i, end - i));
    i = end;
    return v;
  }
};

}  // namespace detail

// Loads every tensor of a .safetensors file by name (CPU tensors). Little-endian host assumed.
inline std::map<std::string, Tensor> safetensors_read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  AB_CHECK(f, "safetensors_read: cannot open ", path, "; hint: run /usr/bin/python3 scripts/make_golden.py");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  AB_CHECK(bytes.size() >= 8, "safetensors_read: ", path, " is too short (", bytes.size(), " bytes)");
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | (unsigned char)bytes[k];
  AB_CHECK(8 + n <= bytes.size(), "safetensors_read: ", path, ": header length ", n, " exceeds the file");
  std::string header = bytes.substr(8, n);
  detail::JsonParser p{header, 0, path};
  detail::Json root = p.value();
  AB_CHECK(root.kind == detail::Json::Object, "safetensors_read: ", path, ": the header is not an object");
  const char* data = bytes.data() + 8 + n;
  const uint64_t data_size = bytes.size() - 8 - n;

  std::map<std::string, Tensor> out;
  for (const auto& [name, e] : root.obj) {
    if (name == "__metadata__") continue;
    const std::string& dt = e.obj.at("dtype").str;
    DType dtype = dt == "F32" ? DType::F32 : dt == "F64" ? DType::F64 : dt == "I64" ? DType::I64 : DType::U8;
    AB_CHECK(dt == "F32" || dt == "F64" || dt == "I64", "safetensors_read: ", path, ": tensor ", name,
             " has dtype ", dt, "; only F32, F64 and I64 are supported");
    Shape shape;
    for (const auto& d : e.obj.at("shape").arr) shape.push_back(d.num);
    const auto& off = e.obj.at("data_offsets").arr;
    AB_CHECK(off.size() == 2, "safetensors_read: ", path, ": tensor ", name, " has bad data_offsets");
    uint64_t begin = off[0].num, end = off[1].num;
    Tensor t = Tensor::empty(shape, dtype);
    uint64_t nbytes = t.numel() * dtype_size(dtype);
    AB_CHECK(end >= begin && end - begin == nbytes && end <= data_size, "safetensors_read: ", path, ": tensor ",
             name, " ", shape_str(shape), " ", dt, " has data_offsets [", begin, ", ", end, ") for ", nbytes,
             " bytes in a data section of ", data_size);
    if (nbytes) std::memcpy(t.raw_data(), data + begin, nbytes);
    out[name] = t;
  }
  return out;
}

}  // namespace anybit::test
