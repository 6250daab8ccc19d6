// checkpoint.cpp - the safetensors writer and reader, and the model / training-state files built
// on them. See checkpoint.h for the format.
#include "nn/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "autograd/autograd.h"
#include "nn/json.h"

namespace anybit::nn {

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
  }
  return "?";
}

bool parse_st_dtype(const std::string& s, DType& out) {
  for (DType t : {DType::F32, DType::F64, DType::I32, DType::I64, DType::U8, DType::I8})
    if (s == st_dtype(t)) {
      out = t;
      return true;
    }
  return false;
}

bool little_endian_host() {
  uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

std::string sys_error() { return std::strerror(errno); }

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

const Tensor* SafeTensors::find(const std::string& name) const {
  for (auto& t : tensors)
    if (t.first == name) return &t.second;
  return nullptr;
}

// ---- writer --------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  AB_CHECK(little_endian_host(), "write_safetensors: safetensors is little-endian; this host is not");
  // 1. Contiguous CPU copies (no copy when a tensor already is one) and the header.
  NamedTensors data;
  data.reserve(tensors.size());
  std::set<std::string> seen;
  Json header = Json::object();
  int64_t offset = 0;
  for (auto& [name, t] : tensors) {
    AB_CHECK(!name.empty() && name != "__metadata__", "write_safetensors: '", path, "': invalid tensor name '",
             name, "'");
    AB_CHECK(seen.insert(name).second, "write_safetensors: '", path, "': tensor name '", name, "' appears twice");
    AB_CHECK(t.defined(), "write_safetensors: '", path, "': tensor '", name, "' is undefined");
    Tensor c = t.detach().to(Device()).contiguous();
    int64_t nbytes = c.numel() * (int64_t)dtype_size(c.dtype());
    Json entry = Json::object();
    entry.set("dtype", Json::string(st_dtype(c.dtype())));
    Json shape = Json::array();
    for (int64_t d : c.shape()) shape.push_back(Json::number(d));
    entry.set("shape", shape);
    Json offs = Json::array();
    offs.push_back(Json::number(offset));
    offs.push_back(Json::number(offset + nbytes));
    entry.set("data_offsets", offs);
    header.set(name, entry);
    offset += nbytes;
    data.emplace_back(name, c);
  }
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (auto& [k, v] : metadata) meta.set(k, Json::string(v));
    header.set("__metadata__", meta);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';  // the data starts 8-byte aligned

  // 2. Write to a temporary file, flush it to the disk, then rename it into place.
  std::string tmp = path + ".tmp." + std::to_string((long)getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  AB_CHECK(f, "write_safetensors: cannot create '", tmp, "': ", sys_error(),
           " (hint: does the directory exist and is it writable?)");
  auto fail = [&](const std::string& what) {
    std::string err = sys_error();
    std::fclose(f);
    std::remove(tmp.c_str());
    AB_FAIL("write_safetensors: ", what, " '", tmp, "': ", err);
  };
  uint64_t n = text.size();
  unsigned char len[8];
  for (int k = 0; k < 8; ++k) len[k] = (unsigned char)(n >> (8 * k));
  if (std::fwrite(len, 1, 8, f) != 8) fail("cannot write");
  if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) fail("cannot write");
  for (auto& [name, c] : data) {
    size_t nbytes = c.numel() * dtype_size(c.dtype());
    if (nbytes && std::fwrite(c.raw_data(), 1, nbytes, f) != nbytes) fail("cannot write");
  }
  if (std::fflush(f) != 0) fail("cannot flush");
  if (fsync(fileno(f)) != 0) fail("cannot fsync");
  if (std::fclose(f) != 0) {
    std::string err = sys_error();
    std::remove(tmp.c_str());
    AB_FAIL("write_safetensors: cannot close '", tmp, "': ", err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = sys_error();
    std::remove(tmp.c_str());
    AB_FAIL("write_safetensors: cannot rename '", tmp, "' to '", path, "': ", err);
  }
  // The rename is durable once the directory entry is on the disk.
  int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY);
  AB_CHECK(dfd >= 0, "write_safetensors: cannot open the directory of '", path, "' to fsync it: ", sys_error());
  int rc = fsync(dfd);
  std::string err = rc != 0 ? sys_error() : "";
  ::close(dfd);
  AB_CHECK(rc == 0, "write_safetensors: cannot fsync the directory of '", path, "': ", err);
}

// ---- reader --------------------------------------------------------------------------------------

SafeTensors read_safetensors(const std::string& path) {
  AB_CHECK(little_endian_host(), "read_safetensors: safetensors is little-endian; this host is not");
  struct stat st;
  AB_CHECK(::stat(path.c_str(), &st) == 0, "read_safetensors: cannot open '", path, "': ", sys_error());
  AB_CHECK(S_ISREG(st.st_mode), "read_safetensors: '", path, "' is not a regular file");
  FILE* f = std::fopen(path.c_str(), "rb");
  AB_CHECK(f, "read_safetensors: cannot open '", path, "': ", sys_error());
  struct Closer {
    FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  uint64_t file_size = (uint64_t)st.st_size;
  const std::string where = "read_safetensors: '" + path + "': ";

  AB_CHECK(file_size >= 8, where, "truncated file: ", file_size,
           " bytes, too short for the 8-byte header length");
  unsigned char len[8];
  AB_CHECK(std::fread(len, 1, 8, f) == 8, where, "cannot read the header length: ", sys_error());
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) n |= (uint64_t)len[k] << (8 * k);
  AB_CHECK(n <= file_size - 8, where, "truncated file or not a safetensors file: the header length is ", n,
           " bytes but only ", file_size - 8, " bytes follow it");
  std::string text(n, '\0');
  AB_CHECK(n == 0 || std::fread(&text[0], 1, n, f) == n, where, "cannot read the header: ", sys_error());
  Json header;
  try {
    header = Json::parse(text);
  } catch (const Error& e) {
    AB_FAIL(where, "the header is not valid JSON: ", e.what());
  }
  AB_CHECK(header.is_object(), where, "the header must be a JSON object, got ", Json::kind_name(header.kind()));
  uint64_t data_size = file_size - 8 - n;

  SafeTensors out;
  for (auto& [name, entry] : header.members()) {
    if (name == "__metadata__") {
      AB_CHECK(entry.is_object(), where, "__metadata__ must be an object of strings");
      for (auto& [k, v] : entry.members()) {
        AB_CHECK(v.is_string(), where, "__metadata__ entry '", k, "' must be a string, got ",
                 Json::kind_name(v.kind()));
        out.metadata[k] = v.as_string();
      }
      continue;
    }
    const std::string tw = where + "tensor '" + name + "': ";
    AB_CHECK(entry.is_object(), tw, "expected an object with dtype, shape and data_offsets");
    const Json* dt = entry.find("dtype");
    const Json* shape = entry.find("shape");
    const Json* offs = entry.find("data_offsets");
    AB_CHECK(dt && dt->is_string(), tw, "missing or non-string \"dtype\"");
    AB_CHECK(shape && shape->is_array(), tw, "missing or non-array \"shape\"");
    AB_CHECK(offs && offs->is_array() && offs->items().size() == 2, tw, "\"data_offsets\" must be [begin, end]");
    DType dtype;
    AB_CHECK(parse_st_dtype(dt->as_string(), dtype), tw, "unknown dtype '", dt->as_string(),
             "' (anybit reads F32, F64, I32, I64, U8, I8)");
    Shape s;
    for (auto& d : shape->items()) {
      AB_CHECK(d.is_number(), tw, "shape entries must be integers");
      int64_t v = d.as_int();
      AB_CHECK(v >= 0, tw, "negative dimension in shape");
      s.push_back(v);
    }
    AB_CHECK(offs->items()[0].is_number() && offs->items()[1].is_number(), tw, "data_offsets must be integers");
    int64_t b = offs->items()[0].as_int(), e = offs->items()[1].as_int();
    int64_t nbytes = shape_numel(s) * (int64_t)dtype_size(dtype);
    AB_CHECK(b >= 0 && e >= b, tw, "bad data_offsets [", b, ", ", e, "]");
    AB_CHECK((uint64_t)e <= data_size, tw, "truncated file: data_offsets [", b, ", ", e,
             "] reach beyond the end of the data (", data_size, " bytes)");
    AB_CHECK(e - b == nbytes, tw, "data_offsets [", b, ", ", e, "] hold ", e - b, " bytes but ", dt->as_string(), " ",
             shape_str(s), " needs ", nbytes);
    Tensor t = Tensor::empty(s, dtype);
    if (nbytes) {
      AB_CHECK(std::fseek(f, (long)(8 + n + b), SEEK_SET) == 0, tw, "cannot seek: ", sys_error());
      AB_CHECK(std::fread(t.raw_data(), 1, nbytes, f) == (size_t)nbytes, tw, "cannot read the data: ", sys_error());
    }
    out.tensors.emplace_back(name, t);
  }
  return out;
}

// ---- models and training state ---------------------------------------------------------------------

void save_model(const std::string& path, const Module& model, const Metadata& metadata) {
  write_safetensors(path, model.state_dict(), metadata);
}

Metadata load_model(const std::string& path, Module& model, bool strict) {
  SafeTensors file = read_safetensors(path);
  try {
    model.load_state_dict(file.tensors, strict);
  } catch (const Error& e) {
    AB_FAIL("load_model: '", path, "': ", e.what());
  }
  return file.metadata;
}

void save_training_state(const std::string& path, const TrainingState& state) {
  NamedTensors tensors;
  for (auto& [k, t] : state.model) tensors.emplace_back("model." + k, t);
  for (auto& [k, t] : state.optimizer) tensors.emplace_back("optimizer." + k, t);
  for (auto& [name, s] : state.generators) {
    Tensor bits = Tensor::empty({4}, DType::I64);
    std::memcpy(bits.raw_data(), s.data(), sizeof(uint64_t) * 4);  // the state's bits, as int64
    tensors.emplace_back("generator." + name, bits);
  }
  Metadata meta = state.extra;
  meta["epoch"] = std::to_string(state.epoch);
  meta["iteration"] = std::to_string(state.iteration);
  meta["scheduler_iteration"] = std::to_string(state.scheduler_iteration);
  meta["config"] = state.config;
  meta["format"] = "anybit-training-state-1";
  write_safetensors(path, tensors, meta);
}

TrainingState load_training_state(const std::string& path) {
  SafeTensors file = read_safetensors(path);
  const std::string where = "load_training_state: '" + path + "': ";
  auto it = file.metadata.find("format");
  AB_CHECK(it != file.metadata.end() && it->second == "anybit-training-state-1", where,
           "not an anybit training-state file (metadata \"format\" is missing or unknown; hint: is this a model "
           "checkpoint?)");
  TrainingState st;
  auto get_int = [&](const char* key) -> int64_t {
    auto m = file.metadata.find(key);
    AB_CHECK(m != file.metadata.end(), where, "metadata \"", key, "\" is missing");
    try {
      size_t used = 0;
      long long v = std::stoll(m->second, &used);
      AB_CHECK(used == m->second.size(), "");
      return v;
    } catch (...) {
      AB_FAIL(where, "metadata \"", key, "\" is not an integer: '", m->second, "'");
    }
  };
  st.epoch = get_int("epoch");
  st.iteration = get_int("iteration");
  st.scheduler_iteration = get_int("scheduler_iteration");
  st.config = file.metadata["config"];
  for (auto& [k, v] : file.metadata)
    if (k != "epoch" && k != "iteration" && k != "scheduler_iteration" && k != "config" && k != "format")
      st.extra[k] = v;
  for (auto& [name, t] : file.tensors) {
    if (name.rfind("model.", 0) == 0) {
      st.model.emplace_back(name.substr(6), t);
    } else if (name.rfind("optimizer.", 0) == 0) {
      st.optimizer.emplace_back(name.substr(10), t);
    } else if (name.rfind("generator.", 0) == 0) {
      AB_CHECK(t.dtype() == DType::I64 && t.shape() == Shape{4}, where, "generator state '", name,
               "' must be int64 [4], got ", dtype_name(t.dtype()), " ", shape_str(t.shape()));
      std::array<uint64_t, 4> s;
      std::memcpy(s.data(), t.raw_data(), sizeof(uint64_t) * 4);
      st.generators[name.substr(10)] = s;
    } else {
      AB_FAIL(where, "unexpected tensor '", name, "' (expected model.*, optimizer.* or generator.*)");
    }
  }
  return st;
}

}  // namespace anybit::nn
