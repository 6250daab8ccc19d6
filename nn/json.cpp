// json.cpp - the JSON parser (recursive descent over RFC 8259) and writer. See json.h.
#include "nn/json.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tensor/error.h"

namespace anybit::nn {

Json Json::boolean(bool b) {
  Json j;
  j.kind_ = Kind::Bool;
  j.b_ = b;
  return j;
}
Json Json::number(int64_t v) { return number_text(std::to_string(v)); }
Json Json::number_text(const std::string& text) {
  Json j;
  j.kind_ = Kind::Number;
  j.s_ = text;
  return j;
}
Json Json::string(const std::string& s) {
  Json j;
  j.kind_ = Kind::String;
  j.s_ = s;
  return j;
}
Json Json::array() {
  Json j;
  j.kind_ = Kind::Array;
  return j;
}
Json Json::object() {
  Json j;
  j.kind_ = Kind::Object;
  return j;
}

const char* Json::kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    case Kind::Object: return "an object";
  }
  return "?";
}

#define JSON_EXPECT(k) AB_CHECK(kind_ == (k), "json: expected ", kind_name(k), ", got ", kind_name(kind_))

bool Json::as_bool() const {
  JSON_EXPECT(Kind::Bool);
  return b_;
}

int64_t Json::as_int() const {
  JSON_EXPECT(Kind::Number);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s_.c_str(), &end, 10);
  AB_CHECK(errno == 0 && end && *end == '\0', "json: expected an integer that fits in int64, got ", s_);
  return (int64_t)v;
}

double Json::as_double() const {
  JSON_EXPECT(Kind::Number);
  return std::strtod(s_.c_str(), nullptr);
}

const std::string& Json::as_string() const {
  JSON_EXPECT(Kind::String);
  return s_;
}

const std::vector<Json>& Json::items() const {
  JSON_EXPECT(Kind::Array);
  return items_;
}

const std::vector<std::pair<std::string, Json>>& Json::members() const {
  JSON_EXPECT(Kind::Object);
  return members_;
}

const Json* Json::find(const std::string& key) const {
  JSON_EXPECT(Kind::Object);
  for (auto& m : members_)
    if (m.first == key) return &m.second;
  return nullptr;
}

Json& Json::push_back(Json v) {
  JSON_EXPECT(Kind::Array);
  items_.push_back(std::move(v));
  return items_.back();
}

Json& Json::set(const std::string& key, Json v) {
  JSON_EXPECT(Kind::Object);
  for (auto& m : members_)
    if (m.first == key) return m.second = std::move(v);
  members_.emplace_back(key, std::move(v));
  return members_.back().second;
}

// ---- writer ------------------------------------------------------------------------------------

void json_quote(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {  // other control characters must be escaped
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += (char)c;  // UTF-8 bytes pass through
        }
    }
  }
  out += '"';
}

static void dump_to(const Json& j, std::string& out, bool spaced) {
  const char* item_sep = spaced ? ", " : ",";
  const char* key_sep = spaced ? ": " : ":";
  switch (j.kind()) {
    case Json::Kind::Null: out += "null"; break;
    case Json::Kind::Bool: out += j.as_bool() ? "true" : "false"; break;
    case Json::Kind::Number: out += j.number_source(); break;
    case Json::Kind::String: json_quote(j.as_string(), out); break;
    case Json::Kind::Array: {
      out += '[';
      for (size_t k = 0; k < j.items().size(); ++k) {
        if (k) out += item_sep;
        dump_to(j.items()[k], out, spaced);
      }
      out += ']';
      break;
    }
    case Json::Kind::Object: {
      out += '{';
      for (size_t k = 0; k < j.members().size(); ++k) {
        if (k) out += item_sep;
        json_quote(j.members()[k].first, out);
        out += key_sep;
        dump_to(j.members()[k].second, out, spaced);
      }
      out += '}';
      break;
    }
  }
}

std::string Json::dump(bool spaced) const {
  std::string out;
  dump_to(*this, out, spaced);
  return out;
}

const std::string& Json::number_source() const {
  JSON_EXPECT(Kind::Number);
  return s_;
}

// ---- parser ------------------------------------------------------------------------------------

namespace {

struct Parser {
  const std::string& t;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string& what) const {
    std::string near = t.substr(i, 20);
    AB_FAIL("json: ", what, " at byte ", i, i < t.size() ? " (near '" + near + "')" : " (at the end of the text)");
  }
  void ws() {
    while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < t.size() && t[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c, const char* what) {
    if (!eat(c)) fail(std::string("expected ") + what);
  }
  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (t.compare(i, n, word) == 0) {
      i += n;
      return true;
    }
    return false;
  }

  static void put_utf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
      out += (char)cp;
    } else if (cp < 0x800) {
      out += (char)(0xC0 | (cp >> 6));
      out += (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += (char)(0xE0 | (cp >> 12));
      out += (char)(0x80 | ((cp >> 6) & 0x3F));
      out += (char)(0x80 | (cp & 0x3F));
    } else {
      out += (char)(0xF0 | (cp >> 18));
      out += (char)(0x80 | ((cp >> 12) & 0x3F));
      out += (char)(0x80 | ((cp >> 6) & 0x3F));
      out += (char)(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (i + 4 > t.size()) fail("expected 4 hex digits after \\u");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = t[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("expected a hex digit in a \\u escape");
    }
    return v;
  }

  std::string str() {
    ws();
    if (i >= t.size() || t[i] != '"') fail("expected a string");
    ++i;
    std::string out;
    while (true) {
      if (i >= t.size()) fail("unterminated string");
      unsigned char c = t[i++];
      if (c == '"') break;
      if (c < 0x20) fail("control character inside a string");
      if (c != '\\') {
        out += (char)c;
        continue;
      }
      if (i >= t.size()) fail("unterminated escape");
      char e = t[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair encodes one code point
            if (!(literal("\\u"))) fail("expected the low half of a surrogate pair");
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(cp, out);
          break;
        }
        default: fail(std::string("unknown escape \\") + e);
      }
    }
    return out;
  }

  Json num() {
    size_t start = i;
    if (i < t.size() && t[i] == '-') ++i;
    auto digits = [&] {
      size_t s = i;
      while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
      return i > s;
    };
    if (!digits()) fail("expected a value");
    if (i < t.size() && t[i] == '.') {
      ++i;
      if (!digits()) fail("expected digits after '.'");
    }
    if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
      ++i;
      if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
      if (!digits()) fail("expected digits in an exponent");
    }
    return Json::number_text(t.substr(start, i - start));
  }

  Json value() {
    if (++depth > 64) fail("nesting deeper than 64 levels");
    ws();
    if (i >= t.size()) fail("expected a value");
    Json out;
    char c = t[i];
    if (c == '{') {
      ++i;
      out = Json::object();
      if (!eat('}')) {
        do {
          std::string k = str();
          expect(':', "':' after an object key");
          Json v = value();
          if (out.find(k)) fail("duplicate key \"" + k + "\"");
          out.set(k, std::move(v));
        } while (eat(','));
        expect('}', "',' or '}' in an object");
      }
    } else if (c == '[') {
      ++i;
      out = Json::array();
      if (!eat(']')) {
        do out.push_back(value());
        while (eat(','));
        expect(']', "',' or ']' in an array");
      }
    } else if (c == '"') {
      out = Json::string(str());
    } else if (literal("true")) {
      out = Json::boolean(true);
    } else if (literal("false")) {
      out = Json::boolean(false);
    } else if (literal("null")) {
      out = Json();
    } else {
      out = num();
    }
    --depth;
    return out;
  }
};

}  // namespace

Json Json::parse(const std::string& text) {
  Parser p{text};
  Json v = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("unexpected text after the JSON value");
  return v;
}

}  // namespace anybit::nn
