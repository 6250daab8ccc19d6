// helpers.h - what the tests share: random inputs, closeness checks, and the gradient check.
//
// gradcheck(f, inputs): f maps float64 inputs to one tensor y. With a fixed random weight tensor
// w, L = sum(y * w); the analytic gradient of L from backward() is compared with central
// differences (L(x + eps) - L(x - eps)) / 2 eps for every element of every input that requires
// grad. Elements where the function has a kink nearby (the one-sided differences disagree) are
// skipped, as STYLE.md rule 9 asks.
#pragma once
#include <stdlib.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace anybit::test {

// Runs a shell command; returns its exit status, with stdout and stderr together in *out (when
// out is not null). For the tests that run the anybit program end to end.
inline int run_command(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  std::string s;
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) s.append(buf, n);
  int st = pclose(p);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A fresh directory under /tmp (named prefix_XXXXXX), removed with everything in it at the end.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "_XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

inline Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::F64) {
  Generator g(seed);
  return Tensor::randn(s, g, 0, 1, dt);
}

// max |a - b| / (atol + rtol |b|) <= 1, elementwise, with a readable failure message.
inline void require_close(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6,
                          const std::string& what = "") {
  INFO(what << ": shapes " << shape_str(a.shape()) << " vs " << shape_str(b.shape()));
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::abs(va[i] - vb[i]);
    double e = d == 0 ? 0 : d / (atol + rtol * std::abs(vb[i]));
    if (!(e <= worst)) {
      worst = e;
      wi = i;
    }
  }
  INFO(what << ": worst element " << wi << ": " << (va.empty() ? 0 : va[wi]) << " vs "
            << (vb.empty() ? 0 : vb[wi]));
  REQUIRE(worst <= 1.0);
}

struct GradcheckOptions {
  double eps = 1e-6;
  double rtol = 1e-5;
  double atol = 1e-7;
  double kink = 1e-3;  // skip an element when one-sided slopes differ by more than this (relative)
};

// Returns the number of elements checked (so a test can require that it checked something).
inline int64_t gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                         std::vector<Tensor> inputs, GradcheckOptions opt = {}) {
  for (auto& x : inputs) REQUIRE(x.dtype() == DType::F64);
  Tensor y0 = f(inputs);
  Tensor w = randn(y0.shape(), 12345);
  auto loss = [&](const std::vector<Tensor>& xs) {
    NoGradGuard ng;
    return sum(mul(f(xs), w)).item<double>();
  };
  for (auto& x : inputs)
    if (x.requires_grad()) x.zero_grad();
  sum(mul(f(inputs), w)).backward();
  int64_t checked = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor g = x.grad();
    REQUIRE(g.defined());
    auto analytic = g.to_vector<double>();
    double* p = x.data<double>();
    REQUIRE(x.is_contiguous());
    for (int64_t i = 0; i < x.numel(); ++i) {
      double orig = p[i];
      p[i] = orig + opt.eps;
      double lp = loss(inputs);
      p[i] = orig - opt.eps;
      double lm = loss(inputs);
      p[i] = orig;
      double l0 = loss(inputs);
      double right = (lp - l0) / opt.eps, left = (l0 - lm) / opt.eps;
      if (std::abs(right - left) > opt.kink * (1 + std::abs(right) + std::abs(left))) continue;
      double numeric = (lp - lm) / (2 * opt.eps);
      INFO("input " << k << " element " << i << ": analytic " << analytic[i] << ", numeric " << numeric);
      REQUIRE(std::abs(analytic[i] - numeric) <= opt.atol + opt.rtol * std::abs(numeric) + 1e-6);
      ++checked;
    }
  }
  return checked;
}

}  // namespace anybit::test
