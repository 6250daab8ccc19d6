// test_loss.cpp - softmax, log_softmax, cross_entropy, soft_cross_entropy, dropout, cat, split:
// values against the scalar references (tensor/ref_loss.h) on contiguous and non-contiguous
// inputs, gradient checks, and error messages.
#include <cmath>

#include "quant/joint_trainer.h"
#include "tensor/kernels.h"
#include "tensor/ref_loss.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

namespace {

Tensor labels_of(const std::vector<int64_t>& v) { return Tensor::from_vector(v, {(int64_t)v.size()}); }

}  // namespace

TEST_CASE("softmax and log_softmax match the reference on every dim, contiguous or not", "[loss]") {
  for (DType dt : {DType::F32, DType::F64}) {
    double tol = dt == DType::F32 ? 1e-5 : 1e-12;
    Tensor x = mul(randn({3, 4, 5}, 1, dt), 3.0);
    Tensor xt = x.permute({2, 0, 1});  // (5, 3, 4), non-contiguous
    REQUIRE(!xt.is_contiguous());
    for (const Tensor& in : {x, xt})
      for (int64_t d : {0, 1, 2, -1}) {
        INFO(in.str() << " dim " << d);
        require_close(softmax(in, d), ref::softmax(in, d), tol, 1e-7, "softmax");
        require_close(log_softmax(in, d), ref::log_softmax(in, d), tol, 1e-6, "log_softmax");
      }
  }
  // a large slice (threaded kernel path) over the middle dimension
  Tensor big = randn({64, 10, 80}, 2, DType::F32);
  require_close(softmax(big, 1), ref::softmax(big, 1), 1e-5, 1e-7, "softmax big");
  require_close(log_softmax(big, 2), ref::log_softmax(big, 2), 1e-5, 1e-6, "log_softmax big");
}

TEST_CASE("softmax is stable for large logits and rows sum to one", "[loss]") {
  Tensor x = Tensor::from_vector<float>({1000.f, 1001.f, 1002.f, -1000.f, 0.f, 1000.f}, {2, 3});
  auto p = softmax(x, 1).to_vector<double>();
  auto lp = log_softmax(x, 1).to_vector<double>();
  for (double v : p) REQUIRE(std::isfinite(v));
  for (double v : lp) REQUIRE(std::isfinite(v));
  REQUIRE(p[0] + p[1] + p[2] == Approx(1.0).margin(1e-6));
  double lse = 1002 + std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0);
  REQUIRE(lp[0] == Approx(1000 - lse).margin(1e-4));
  REQUIRE(lp[5] == Approx(0.0).margin(1e-6));  // 1000 dominates -1000 and 0
  REQUIRE(lp[3] == Approx(-2000.0).margin(1e-3));
}

TEST_CASE("softmax and log_softmax gradcheck on every dim", "[loss]") {
  for (int64_t d : {0, 1, 2}) {
    INFO("dim " << d);
    Tensor x = randn({2, 3, 4}, 3).requires_grad_();
    REQUIRE(gradcheck([d](const std::vector<Tensor>& in) { return softmax(in[0], d); }, {x}) == 24);
    Tensor x2 = randn({2, 3, 4}, 4).requires_grad_();
    REQUIRE(gradcheck([d](const std::vector<Tensor>& in) { return log_softmax(in[0], d); }, {x2}) == 24);
  }
  // through a non-contiguous view
  Tensor x = randn({4, 3}, 5).requires_grad_();
  REQUIRE(gradcheck([](const std::vector<Tensor>& in) { return log_softmax(in[0].t(), 1); }, {x}) == 12);
}

TEST_CASE("cross_entropy matches the reference, with and without label smoothing", "[loss]") {
  Tensor labels = labels_of({0, 4, 2, 2, 1, 3});
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor logits = mul(randn({6, 5}, 6, dt), 2.0);
    Tensor logits_nc = mul(randn({5, 6}, 7, dt), 2.0).t();  // (6, 5) non-contiguous
    REQUIRE(!logits_nc.is_contiguous());
    for (const Tensor& z : {logits, logits_nc})
      for (double eps : {0.0, 0.1, 1.0}) {
        INFO(z.str() << " eps " << eps);
        Tensor loss = cross_entropy(z, labels, eps);
        REQUIRE(loss.dim() == 0);
        REQUIRE(loss.dtype() == dt);
        REQUIRE(loss.item<double>() == Approx(ref::cross_entropy(z, labels, eps)).epsilon(1e-5));
      }
  }
  // non-contiguous labels (every other element of a longer vector)
  Tensor long_labels = labels_of({1, 9, 0, 9, 2, 9});
  Tensor lab_nc = long_labels.slice(0, 0, 6, 2);
  Tensor z = randn({3, 3}, 8);
  REQUIRE(cross_entropy(z, lab_nc).item<double>() == Approx(ref::cross_entropy(z, labels_of({1, 0, 2}))));
}

TEST_CASE("cross_entropy gradcheck; the gradient is (softmax - target) / N", "[loss]") {
  Tensor labels = labels_of({2, 0, 1, 2});
  for (double eps : {0.0, 0.2}) {
    INFO("eps " << eps);
    Tensor z = randn({4, 3}, 9).requires_grad_();
    REQUIRE(gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels, eps); }, {z}) ==
            12);
  }
  // through a non-contiguous view of the logits
  Tensor zt = randn({3, 4}, 22).requires_grad_();
  REQUIRE(gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(in[0].t(), labels, 0.1); }, {zt}) ==
          12);
  // the closed form, for a float32 input
  Tensor z = randn({4, 3}, 10, DType::F32).requires_grad_();
  cross_entropy(z, labels).backward();
  auto p = ref::softmax(z.detach(), 1).to_vector<double>();
  auto g = z.grad().to_vector<double>();
  std::vector<int64_t> lab = labels.to_vector<int64_t>();
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t k = 0; k < 3; ++k)
      REQUIRE(g[n * 3 + k] == Approx((p[n * 3 + k] - (k == lab[n])) / 4).margin(1e-7));
}

TEST_CASE("cross_entropy errors name the op, the bad label and K", "[loss]") {
  Tensor z = randn({3, 5}, 11);
  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({0, 5, 1})),
                      Catch::Contains("cross_entropy") && Catch::Contains("label 5") &&
                          Catch::Contains("K = 5") && Catch::Contains("[3, 5]"));
  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({0, 1, -1})),
                      Catch::Contains("cross_entropy") && Catch::Contains("label -1"));
  REQUIRE_THROWS_WITH(cross_entropy(z, Tensor::zeros({3}, DType::F32)),
                      Catch::Contains("cross_entropy") && Catch::Contains("int64"));
  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({0, 1})),
                      Catch::Contains("cross_entropy") && Catch::Contains("[3, 5]") && Catch::Contains("[2]"));
  REQUIRE_THROWS_WITH(cross_entropy(randn({3, 5, 2}, 1), labels_of({0, 1, 2})),
                      Catch::Contains("cross_entropy") && Catch::Contains("(N, K)"));
  REQUIRE_THROWS_WITH(cross_entropy(z, labels_of({0, 1, 2}), 1.5),
                      Catch::Contains("cross_entropy") && Catch::Contains("label_smoothing"));
}

TEST_CASE("soft_cross_entropy matches its formula, gradchecks, and leaves the teacher alone", "[loss]") {
  Tensor s = randn({4, 5}, 12), t = mul(randn({4, 5}, 13), 2.0);
  for (double T : {1.0, 4.0}) {
    INFO("T " << T);
    auto pt = ref::softmax(mul(t, 1 / T), 1).to_vector<double>();
    auto ls = ref::log_softmax(mul(s, 1 / T), 1).to_vector<double>();
    double expect = 0;
    for (size_t i = 0; i < pt.size(); ++i) expect -= pt[i] * ls[i];
    expect *= T * T / 4;
    REQUIRE(soft_cross_entropy(s, t, T).item<double>() == Approx(expect).epsilon(1e-12));

    Tensor sg = s.clone().requires_grad_();
    REQUIRE(gradcheck([T](const std::vector<Tensor>& in) { return soft_cross_entropy(in[0], in[1], T); },
                      {sg, t}) == 20);
    Tensor tg = t.clone().requires_grad_();
    soft_cross_entropy(sg, tg, T).backward();
    REQUIRE(sg.grad().defined());
    REQUIRE(!tg.grad().defined());  // the teacher is a constant
  }
  // equal logits: the loss is T^2 times the entropy, and its gradient vanishes
  Tensor e = randn({2, 3}, 14).requires_grad_();
  soft_cross_entropy(e, e.detach(), 2.0).backward();
  for (double g : e.grad().to_vector<double>()) REQUIRE(g == Approx(0).margin(1e-12));
  REQUIRE_THROWS_WITH(soft_cross_entropy(s, randn({4, 6}, 1)),
                      Catch::Contains("soft_cross_entropy") && Catch::Contains("[4, 6]"));
  REQUIRE_THROWS_WITH(soft_cross_entropy(s, t, 0.0),
                      Catch::Contains("soft_cross_entropy") && Catch::Contains("temperature"));
}

TEST_CASE("dropout: identity in eval, scaled Bernoulli mask in training, reproducible", "[loss]") {
  Generator gen(1);
  Tensor x = Tensor::ones({100, 100}, DType::F32);
  REQUIRE(dropout(x, 0.5, false, gen).same(x));
  REQUIRE(dropout(x, 0.0, true, gen).same(x));
  Tensor y = dropout(x, 0.3, true, gen);
  auto v = y.to_vector<double>();
  int64_t zeros = 0;
  for (double a : v) {
    REQUIRE((a == 0 || std::abs(a - 1 / 0.7) < 1e-6));
    zeros += a == 0;
  }
  REQUIRE(zeros > 2700);  // 3000 expected; the standard deviation is about 46
  REQUIRE(zeros < 3300);
  Generator g1(7), g2(7);
  REQUIRE(dropout(x, 0.5, true, g1).to_vector<float>() == dropout(x, 0.5, true, g2).to_vector<float>());
  for (double a : dropout(x, 1.0, true, gen).to_vector<double>()) REQUIRE(a == 0);
  REQUIRE_THROWS_WITH(dropout(x, 1.5, true, gen), Catch::Contains("dropout") && Catch::Contains("1.5"));

  // dX = dY * mask: a fixed seed per call gives the same mask in every evaluation
  Tensor xg = randn({3, 4}, 15).requires_grad_();
  REQUIRE(gradcheck(
              [](const std::vector<Tensor>& in) {
                Generator g(3);
                return dropout(in[0], 0.5, true, g);
              },
              {xg}) == 12);
}

TEST_CASE("cat matches a plain copy on every dim and gradchecks", "[loss]") {
  Tensor a = randn({2, 3, 4}, 16), b = randn({2, 3, 4}, 17);
  Tensor bt = randn({4, 3, 2}, 18).permute({2, 1, 0});  // (2, 3, 4) non-contiguous
  for (int64_t d : {0, 1, 2}) {
    INFO("dim " << d);
    Tensor y = cat({a, bt, b.slice(d, 0, 1)}, d);
    Shape s = a.shape();
    s[d] = 2 * s[d] + 1;
    REQUIRE(y.shape() == s);
    for (int64_t i = 0; i < s[0]; ++i)
      for (int64_t j = 0; j < s[1]; ++j)
        for (int64_t k = 0; k < s[2]; ++k) {
          std::vector<int64_t> idx{i, j, k};
          int64_t n = a.shape()[d];
          double expect;
          if (idx[d] < n) {
            expect = a.at(idx);
          } else if (idx[d] < 2 * n) {
            idx[d] -= n;
            expect = bt.at(idx);
          } else {
            idx[d] = 0;
            expect = b.at(idx);
          }
          REQUIRE(y.at({i, j, k}) == expect);
        }
    Tensor ag = a.clone().requires_grad_(), bg = randn({4, 3, 2}, 19).requires_grad_();
    REQUIRE(gradcheck([d](const std::vector<Tensor>& in) { return cat({in[0], in[1].permute({2, 1, 0})}, d); },
                      {ag, bg}) == 48);
  }
  REQUIRE_THROWS_WITH(cat({a, randn({2, 5, 4}, 1)}, 0),
                      Catch::Contains("cat") && Catch::Contains("[2, 5, 4]") && Catch::Contains("[2, 3, 4]"));
  REQUIRE_THROWS_WITH(cat({a, randn({2, 3, 4}, 1, DType::F32)}, 0), Catch::Contains("cat"));
  REQUIRE_THROWS_WITH(cat({}, 0), Catch::Contains("cat"));
}

TEST_CASE("split returns views whose gradients flow back; cat undoes it", "[loss]") {
  Tensor x = randn({3, 7}, 20);
  auto parts = split(x, {2, 0, 5}, 1);
  REQUIRE(parts.size() == 3);
  REQUIRE(parts[0].shape() == Shape{3, 2});
  REQUIRE(parts[1].shape() == Shape{3, 0});
  REQUIRE(parts[2].shape() == Shape{3, 5});
  REQUIRE(parts[2].storage() == x.storage());  // a view, no copy
  require_close(cat(parts, 1), x, 0, 0, "cat(split(x))");
  Tensor xg = randn({3, 7}, 21).requires_grad_();
  REQUIRE(gradcheck(
              [](const std::vector<Tensor>& in) {
                auto p = split(in[0], {3, 4}, 1);
                return cat({mul(p[1], p[1]), p[0]}, 1);
              },
              {xg}) == 21);
  REQUIRE_THROWS_WITH(split(x, {2, 4}, 1), Catch::Contains("split") && Catch::Contains("[3, 7]") &&
                                               Catch::Contains("6"));
}

// The training statistics that the trainers add up on the device (tensor/kernels.inc): the same
// top-1 hits as quant::count_correct, ties and NaN included, and loss * N.
TEST_CASE("add_step_stats counts count_correct's top-1 hits, ties and NaN included, and adds loss * N", "[loss]") {
  const float nan = std::nanf("");
  // label 2 a clear maximum (hit); label 2 tied with index 1 (miss: the first maximum wins); label
  // 1 tied with index 2 (hit); NaN at label 3 (hit: NaN ranks above numbers); NaN at index 0,
  // label 1 (miss); every entry NaN, label 0 (hit: the first NaN).
  Tensor logits = Tensor::from_vector(std::vector<float>{0, 1, 5, 2,    0, 4, 4, 1,  0, 3, 3, 1,
                                                         0, 1, 2, nan,  nan, 9, 1, 1, nan, nan, nan, nan},
                                      {6, 4});
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{2, 2, 1, 3, 1, 0}, {6});
  int64_t top1 = 0;
  quant::count_correct(logits, labels, &top1, nullptr);
  REQUIRE(top1 == 4);
  Tensor acc = Tensor::from_vector(std::vector<double>{1, 2}, {2});
  kernel::add_step_stats(logits, labels, Tensor::full({}, 0.25, DType::F32), acc);
  REQUIRE(acc.to_vector<double>() == std::vector<double>{1 + 0.25 * 6, 2 + 4});
  // Labels read through a stride, float64 logits.
  Tensor wide = Tensor::from_vector(std::vector<int64_t>{2, -1, 2, -1, 1, -1, 3, -1, 1, -1, 0, -1}, {6, 2});
  Tensor acc64 = Tensor::zeros({2}, DType::F64);
  kernel::add_step_stats(logits.to(DType::F64), wide.select(1, 0), Tensor::full({}, 0.5, DType::F64), acc64);
  REQUIRE(acc64.to_vector<double>() == std::vector<double>{3, 4});
  REQUIRE_THROWS_WITH(kernel::add_step_stats(logits, labels, Tensor::full({}, 0.5, DType::F64), acc),
                      Catch::Contains("add_step_stats: expects"));
}

// The collaborative teacher choice (kernel::collab_teachers, METHOD.md): per sample the teacher
// whose probability of the label is highest, a tie to the later teacher (the lower bit-width),
// NaN never chosen, and the chosen teacher's logits row copied.
TEST_CASE("collab_teachers chooses per sample, ties to the lower bit-width, and reports a sample without a choice",
          "[loss]") {
  const float nan = std::nanf("");
  // Three teachers (highest bit-width first), K = 3, four samples with labels 0, 2, 1, 0:
  //   sample 0: probabilities of label 0 are 0.5, 0.7, 0.6   -> teacher 1
  //   sample 1: of label 2: 0.4, 0.4, 0.2 (a tie of 0 and 1)  -> teacher 1 (the later)
  //   sample 2: of label 1: 0.9, NaN, NaN                      -> teacher 0
  //   sample 3: of label 0: 0.3, 0.3, 0.3 (a three-way tie)    -> teacher 2
  std::vector<std::vector<float>> p = {{0.5f, 0.3f, 0.2f, 0.3f, 0.3f, 0.4f, 0.05f, 0.9f, 0.05f, 0.3f, 0.4f, 0.3f},
                                       {0.7f, 0.1f, 0.2f, 0.5f, 0.1f, 0.4f, nan, nan, nan, 0.3f, 0.3f, 0.4f},
                                       {0.6f, 0.2f, 0.2f, 0.7f, 0.1f, 0.2f, nan, nan, nan, 0.3f, 0.6f, 0.1f}};
  std::vector<Tensor> probs, logits;
  for (int j = 0; j < 3; ++j) {
    probs.push_back(Tensor::from_vector(p[j], {4, 3}));
    std::vector<float> z(12);
    for (int e = 0; e < 12; ++e) z[e] = float(100 * j + e);  // teacher j's row i: 100 j + 3 i + k
    logits.push_back(Tensor::from_vector(z, {4, 3}));
  }
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 2, 1, 0}, {4});
  Tensor out = Tensor::full({4, 3}, -1.0, DType::F32), counts = Tensor::full({4}, 7.0, DType::I64);
  kernel::collab_teachers(probs, logits, labels, out, counts);
  REQUIRE(counts.to_vector<int64_t>() == std::vector<int64_t>{1, 2, 1, 0});  // votes, then no sample without one
  REQUIRE(out.to_vector<float>() == std::vector<float>{100, 101, 102, 103, 104, 105, 6, 7, 8, 209, 210, 211});

  // Every probability of sample 2's label NaN: counts ends with 1 + its index, its row is left alone.
  probs[0] = Tensor::from_vector(std::vector<float>{0.5f, 0.3f, 0.2f, 0.3f, 0.3f, 0.4f, 0.1f, nan, 0.1f, 0.3f, 0.4f,
                                                    0.3f},
                                 {4, 3});
  out = Tensor::full({4, 3}, -1.0, DType::F32);
  kernel::collab_teachers(probs, logits, labels, out, counts);
  REQUIRE(counts.to_vector<int64_t>() == std::vector<int64_t>{0, 2, 1, 3});
  REQUIRE(out.to_vector<float>() == std::vector<float>{100, 101, 102, 103, 104, 105, -1, -1, -1, 209, 210, 211});

  // float64: probabilities that differ only below float's precision still decide.
  std::vector<Tensor> p64 = {Tensor::full({1, 2}, 0.5, DType::F64), Tensor::full({1, 2}, 0.5 - 1e-12, DType::F64)};
  std::vector<Tensor> z64 = {Tensor::full({1, 2}, 1.0, DType::F64), Tensor::full({1, 2}, 2.0, DType::F64)};
  Tensor out64 = Tensor::empty({1, 2}, DType::F64), counts2 = Tensor::empty({3}, DType::I64);
  kernel::collab_teachers(p64, z64, Tensor::from_vector(std::vector<int64_t>{1}, {1}), out64, counts2);
  REQUIRE(counts2.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0});
  REQUIRE(out64.to_vector<double>() == std::vector<double>{1, 1});

  REQUIRE_THROWS_WITH(kernel::collab_teachers(probs, {logits[0]}, labels, out, counts),
                      Catch::Contains("collab_teachers: expects 1 to 16 teachers"));
  REQUIRE_THROWS_WITH(kernel::collab_teachers(probs, logits, labels, out64, counts),
                      Catch::Contains("collab_teachers: labels must be int64 (N)"));
}
