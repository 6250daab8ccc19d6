// test_checkpoint.cpp - safetensors round trips (every dtype, non-contiguous input, metadata),
// atomic writes, clear errors for missing / truncated / corrupt files, model and training-state
// files, and the JSON parser they rest on.
#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "helpers.h"
#include "nn/checkpoint.h"
#include "nn/json.h"
#include "nn/optim.h"
#include "tensor/cuda/cuda.h"
#include "tests/cuda_skip.h"

using namespace anybit;
using namespace anybit::nn;

namespace {

// A fresh directory per test, removed with its files at the end.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/anybit_ckpt_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    for (auto& f : files()) std::remove((path + "/" + f).c_str());
    rmdir(path.c_str());
  }
  std::string operator/(const std::string& f) const { return path + "/" + f; }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = opendir(path.c_str())) {
      while (dirent* e = readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.push_back(e->d_name);
      closedir(d);
    }
    return out;
  }
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), bytes.size());
}

// A safetensors file from a header text and a data section, written by hand.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out[k] = (char)(n >> (8 * k));
  return out + header + data;
}

void require_error(const std::function<void()>& f, std::vector<std::string> parts) {
  try {
    f();
    FAIL("expected an error mentioning " << parts[0]);
  } catch (const Error& e) {
    std::string m = e.what();
    INFO(m);
    for (auto& p : parts) REQUIRE(m.find(p) != std::string::npos);
  }
}

// A module with parameters and buffers only (no forward ops needed).
struct Toy : Module {
  Tensor w, b, count;
  explicit Toy(int64_t n) {
    w = Tensor::full({n, 2}, 0.5);
    b = Tensor::zeros({n});
    count = Tensor::zeros({}, DType::I64);
    register_parameter("weight", &w);
    register_parameter("bias", &b);
    register_buffer("num_batches_tracked", &count);
  }
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Toy"; }
};

struct Net : Module {
  std::shared_ptr<Toy> a, c;
  explicit Net(int64_t n) {
    a = register_module("a", std::make_shared<Toy>(2));
    c = register_module("c", std::make_shared<Toy>(n));
  }
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Net"; }
};

}  // namespace

TEST_CASE("JSON parser and writer", "[checkpoint]") {
  Json j = Json::parse(R"( {"a": [1, -2, 3.5e2, true, false, null], "b\"\\\/\u00e9\ud83d\ude00": {"x": ""}} )");
  REQUIRE(j.is_object());
  REQUIRE(j.members().size() == 2);
  auto& a = j.find("a")->items();
  REQUIRE(a[1].as_int() == -2);
  REQUIRE(a[2].as_double() == 350.0);
  REQUIRE(a[3].as_bool());
  REQUIRE(a[5].is_null());
  REQUIRE(j.members()[1].first == "b\"\\/\xc3\xa9\xf0\x9f\x98\x80");
  // dump then parse gives the same document
  REQUIRE(Json::parse(j.dump()).dump() == j.dump());
  REQUIRE(Json::number(9007199254740993LL).as_int() == 9007199254740993LL);  // above 2^53: exact
  REQUIRE_THROWS_WITH(Json::parse("{\"a\": 1,}"), Catch::Contains("expected a string"));
  REQUIRE_THROWS_WITH(Json::parse("[1 2]"), Catch::Contains("expected ',' or ']'"));
  REQUIRE_THROWS_WITH(Json::parse("{\"a\":1} x"), Catch::Contains("unexpected text"));
  REQUIRE_THROWS_WITH(Json::parse("\"abc"), Catch::Contains("unterminated string"));
  REQUIRE_THROWS_WITH(Json::parse("{\"a\":1,\"a\":2}"), Catch::Contains("duplicate key"));
  REQUIRE_THROWS_WITH(Json::parse(std::string(100, '[')), Catch::Contains("deeper than 64"));
  REQUIRE_THROWS_WITH(Json::parse("1.5").as_int(), Catch::Contains("integer"));
}

TEST_CASE("safetensors round trip: every dtype, scalars, empty and non-contiguous tensors", "[checkpoint]") {
  TempDir dir;
  Generator g(3);
  Tensor f32 = Tensor::randn({3, 4}, g);
  Tensor f64 = Tensor::randn({2, 3, 2}, g, 0, 1, DType::F64);
  Tensor i32 = Tensor::from_vector<int32_t>({1, -2, 2147483647, -2147483647 - 1}, {2, 2});
  Tensor i64 = Tensor::from_vector<int64_t>({int64_t(1) << 62, -5}, {2});
  Tensor u8 = Tensor::from_vector<uint8_t>({0, 255, 7}, {3});
  Tensor i8 = Tensor::from_vector<int8_t>({-128, 127, 0, 1, 2, 3}, {1, 6});
  Tensor scalar = Tensor::full({}, 42, DType::I64);
  Tensor empty = Tensor::zeros({0, 5});
  Tensor transposed = Tensor::randn({4, 5}, g).t();  // non-contiguous view
  Tensor sliced = Tensor::randn({6, 6}, g, 0, 1, DType::F64).slice(1, 1, 6, 2);
  REQUIRE(!transposed.is_contiguous());
  NamedTensors in = {{"f32", f32}, {"f64", f64}, {"i32", i32}, {"i64", i64}, {"u8", u8}, {"i8", i8},
                     {"scalar", scalar}, {"empty", empty}, {"layer1.0.conv1.weight", transposed},
                     {"sliced", sliced}};
  Metadata meta = {{"model", "resnet20"}, {"config", "lr = 0.1\n# \"quoted\" \\ tab\there\n"}};
  write_safetensors(dir / "a.safetensors", in, meta);

  SafeTensors out = read_safetensors(dir / "a.safetensors");
  REQUIRE(out.metadata == meta);
  REQUIRE(out.tensors.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    INFO(in[i].first);
    REQUIRE(out.tensors[i].first == in[i].first);  // file order = the order given
    const Tensor& a = in[i].second;
    const Tensor& b = out.tensors[i].second;
    REQUIRE(b.dtype() == a.dtype());
    REQUIRE(b.shape() == a.shape());
    REQUIRE(b.is_contiguous());
    REQUIRE(b.to_vector<double>() == a.to_vector<double>());  // exact, every dtype
  }
  REQUIRE(out.find("i64")->to_vector<int64_t>()[0] == int64_t(1) << 62);
  REQUIRE(out.find("missing") == nullptr);

  // The layout is the standard one: 8-byte length, JSON header, data aligned to 8 bytes.
  std::string bytes = read_bytes(dir / "a.safetensors");
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) n |= (uint64_t)(unsigned char)bytes[k] << (8 * k);
  REQUIRE((8 + n) % 8 == 0);
  Json header = Json::parse(bytes.substr(8, n));
  REQUIRE(header.find("f32")->find("dtype")->as_string() == "F32");
  REQUIRE(header.find("__metadata__")->find("model")->as_string() == "resnet20");
  REQUIRE(header.find("scalar")->find("shape")->items().empty());
}

TEST_CASE("safetensors writes are atomic and leave no temporary file", "[checkpoint]") {
  TempDir dir;
  std::string path = dir / "m.safetensors";
  write_safetensors(path, {{"x", Tensor::ones({3})}});
  write_safetensors(path, {{"x", Tensor::full({2}, 7.0)}});  // replaces the old file
  REQUIRE(dir.files() == std::vector<std::string>{"m.safetensors"});
  REQUIRE(read_safetensors(path).find("x")->to_vector<float>() == std::vector<float>{7, 7});
  require_error([&] { write_safetensors(dir / "no/such/dir/m.safetensors", {{"x", Tensor::ones({1})}}); },
                {"cannot create", "no/such/dir"});
  require_error([&] { write_safetensors(path, {{"x", Tensor::ones({1})}, {"x", Tensor::ones({1})}}); },
                {"'x' appears twice"});
  REQUIRE(dir.files() == std::vector<std::string>{"m.safetensors"});
}

TEST_CASE("safetensors reader errors name the file and the problem", "[checkpoint]") {
  TempDir dir;
  std::string good = dir / "good.safetensors";
  write_safetensors(good, {{"w", Tensor::ones({4, 4})}, {"b", Tensor::ones({4})}});
  std::string bytes = read_bytes(good);

  require_error([&] { read_safetensors(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});

  std::string p = dir / "short.safetensors";
  write_bytes(p, bytes.substr(0, 5));
  require_error([&] { read_safetensors(p); }, {"short.safetensors", "truncated", "8-byte header length"});

  p = dir / "cut_header.safetensors";
  write_bytes(p, bytes.substr(0, 20));
  require_error([&] { read_safetensors(p); }, {"cut_header.safetensors", "header length is"});

  p = dir / "cut_data.safetensors";
  write_bytes(p, bytes.substr(0, bytes.size() - 3));
  require_error([&] { read_safetensors(p); }, {"cut_data.safetensors", "truncated", "beyond the end"});

  p = dir / "badjson.safetensors";
  write_bytes(p, make_file("{\"w\": {\"dtype\": \"F32\", ", std::string(16, '\0')));
  require_error([&] { read_safetensors(p); }, {"badjson.safetensors", "not valid JSON"});

  p = dir / "dtype.safetensors";
  write_bytes(p, make_file(R"({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}})", std::string(4, '\0')));
  require_error([&] { read_safetensors(p); }, {"dtype.safetensors", "tensor 'w'", "unknown dtype 'BF16'"});

  p = dir / "size.safetensors";
  write_bytes(p, make_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", std::string(8, '\0')));
  require_error([&] { read_safetensors(p); }, {"size.safetensors", "needs 12"});

  p = dir / "notobj.safetensors";
  write_bytes(p, make_file("[1, 2]", ""));
  require_error([&] { read_safetensors(p); }, {"notobj.safetensors", "must be a JSON object"});

  p = dir / "meta.safetensors";
  write_bytes(p, make_file(R"({"__metadata__": {"epoch": 3}})", ""));
  require_error([&] { read_safetensors(p); }, {"meta.safetensors", "'epoch' must be a string"});
}

TEST_CASE("save_model / load_model round trip and strict mismatch listing", "[checkpoint]") {
  TempDir dir;
  Net a(3);
  Generator g(1);
  {
    NoGradGuard ng;
    a.c->w.copy_(Tensor::randn({3, 2}, g));
    a.c->count.fill_(17);
  }
  save_model(dir / "net.safetensors", a, {{"model", "toy"}});
  Net b(3);
  Metadata m = load_model(dir / "net.safetensors", b);
  REQUIRE(m.at("model") == "toy");
  REQUIRE(b.c->w.to_vector<float>() == a.c->w.to_vector<float>());
  REQUIRE(b.c->count.item<int64_t>() == 17);
  REQUIRE(b.c->w.requires_grad());

  // Another model: c has 4 rows, and names differ.
  Net other(4);
  require_error([&] { load_model(dir / "net.safetensors", other); },
                {"net.safetensors", "c.weight: expected [4, 2], got [3, 2]", "c.bias: expected [4], got [3]"});
  write_safetensors(dir / "renamed.safetensors", {{"a.weight", Tensor::ones({2, 2})}, {"x.y", Tensor::ones({1})}});
  require_error([&] { load_model(dir / "renamed.safetensors", b); },
                {"a.bias: missing from the checkpoint", "x.y: not a parameter or buffer",
                 "c.num_batches_tracked: missing"});
  // Non-strict: loads what matches.
  Net c(3);
  load_model(dir / "renamed.safetensors", c, /*strict=*/false);
  REQUIRE(c.a->w.to_vector<float>() == std::vector<float>(4, 1.0f));
}

TEST_CASE("training state file round trip", "[checkpoint]") {
  TempDir dir;
  Tensor p = Tensor::from_vector<float>({1, 2, 3}, {3}).requires_grad_();
  Adam opt({{"layer.weight", p}}, 0.1);
  p.set_grad(Tensor::from_vector<float>({0.1f, -0.2f, 0.3f}, {3}));
  opt.step();
  Generator shuffle(99), dropout(7);
  shuffle.next_u64();
  TrainingState st;
  st.optimizer = opt.state_dict();
  st.scheduler_iteration = 1234;
  st.epoch = 5;
  st.iteration = 1234;
  st.generators["shuffle"] = shuffle.state();
  st.generators["dropout"] = dropout.state();
  st.config = "[train]\nepochs = 10\n";
  st.extra["git"] = "abc123";
  save_training_state(dir / "state.safetensors", st);

  TrainingState back = load_training_state(dir / "state.safetensors");
  REQUIRE(back.epoch == 5);
  REQUIRE(back.iteration == 1234);
  REQUIRE(back.scheduler_iteration == 1234);
  REQUIRE(back.config == st.config);
  REQUIRE(back.extra.at("git") == "abc123");
  REQUIRE(back.generators.at("shuffle") == shuffle.state());
  REQUIRE(back.generators.at("dropout") == dropout.state());
  Generator restored;
  restored.set_state(back.generators.at("shuffle"));
  REQUIRE(restored.next_u64() == shuffle.next_u64());
  Tensor p2 = Tensor::from_vector<float>({1, 2, 3}, {3}).requires_grad_();
  Adam opt2({{"layer.weight", p2}}, 0.1);
  opt2.load_state_dict(back.optimizer);
  auto s1 = opt.state_dict(), s2 = opt2.state_dict();
  REQUIRE(s1.size() == s2.size());
  for (size_t i = 0; i < s1.size(); ++i) {
    REQUIRE(s1[i].first == s2[i].first);
    REQUIRE(s1[i].second.to_vector<double>() == s2[i].second.to_vector<double>());
  }
  // A model file is not a training-state file.
  write_safetensors(dir / "model.safetensors", {{"w", Tensor::ones({1})}});
  require_error([&] { load_training_state(dir / "model.safetensors"); },
                {"model.safetensors", "not an anybit training-state file"});
}

TEST_CASE("safetensors writes CUDA tensors (copied to the host)", "[checkpoint][cuda]") {
  SKIP_WITHOUT_GPU();
  TempDir dir;
  Generator g(5);
  Tensor a = Tensor::randn({3, 4}, g);
  Tensor b = Tensor::randn({2, 5}, g, 0, 1, DType::F64);
  write_safetensors(dir / "gpu.safetensors",
                    {{"a", a.to(Device(Device::CUDA))}, {"bt", b.to(Device(Device::CUDA)).t()}});
  SafeTensors f = read_safetensors(dir / "gpu.safetensors");
  REQUIRE(f.find("a")->to_vector<float>() == a.to_vector<float>());
  REQUIRE(f.find("bt")->to_vector<double>() == b.t().to_vector<double>());
}
