// test_optim.cpp - SGD, Adam, AdamW against hand computations and against PyTorch 1.13's numbers
// (golden values below were printed by torch.optim with the same parameters, groups and loss:
// see the comment above each), state export/restore, and the learning-rate schedules.
#include <cmath>

#include "helpers.h"
#include "nn/optim.h"
#include "tensor/cuda/cuda.h"
#include "tests/cuda_skip.h"

using namespace anybit;
using namespace anybit::nn;

namespace {

Tensor vec(std::vector<double> v, Shape s, DType dt = DType::F64) {
  return Tensor::from_vector<double>(v, s).to(dt);
}

// Two parameters in two groups: p (lr 0.1, weight decay 0.01) and q (lr 0.05, no decay), and the
// loss of step s (0-based): 0.1 sum(p^3) + sum(q^2 * [[1, 2], [3, 4]]) + (s + 1) sum(p).
// The same in PyTorch:
//   p = torch.tensor([1., -2., .5, 3.], dtype=torch.float64, requires_grad=True)
//   q = torch.tensor([[.3, -.7], [1.5, 0.]], dtype=torch.float64, requires_grad=True)
//   opt = Opt([{'params': [p], 'lr': .1, 'weight_decay': .01},
//              {'params': [q], 'lr': .05, 'weight_decay': 0.}], ...)
//   for s in range(3): opt.zero_grad(); loss(s).backward(); opt.step()
struct Problem {
  Tensor p = vec({1.0, -2.0, 0.5, 3.0}, {4}).requires_grad_();
  Tensor q = vec({0.3, -0.7, 1.5, 0.0}, {2, 2}).requires_grad_();
  std::vector<ParamGroup> groups() {
    return {ParamGroup{{{"p", p}}, 0.1, 0.01, -1, "p"}, ParamGroup{{{"q", q}}, 0.05, 0.0, -1, "q"}};
  }
  void backward(int s) {
    Tensor c = vec({1, 2, 3, 4}, {2, 2}, q.dtype());
    Tensor loss = sum(pow(p, 3)) * 0.1 + sum(q * q * c) + sum(p) * double(s + 1);
    loss.backward();
  }
  void run(Optimizer& opt, int from, int to) {
    for (int s = from; s < to; ++s) {
      opt.zero_grad();
      backward(s);
      opt.step();
    }
  }
};

void check(const Tensor& t, std::vector<double> want, double tol = 1e-12) {
  auto got = t.to_vector<double>();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    REQUIRE(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])));
  }
}

}  // namespace

TEST_CASE("SGD one step with momentum and weight decay, by hand", "[optim]") {
  Tensor p = vec({1.0, 2.0}, {2}).requires_grad_();
  SGD opt({{"p", p}}, /*lr=*/0.1, /*momentum=*/0.9, /*weight_decay=*/0.01);
  p.set_grad(vec({0.5, -1.0}, {2}));
  opt.step();
  // d = g + wd p = [0.51, -0.98]; buf = d; p -= lr buf
  check(p, {1 - 0.1 * 0.51, 2 + 0.1 * 0.98});
  p.set_grad(vec({0.5, -1.0}, {2}));
  opt.step();
  // d = [0.5 + 0.01 * 0.949, -1 + 0.01 * 2.098]; buf = 0.9 buf + d
  double b0 = 0.9 * 0.51 + (0.5 + 0.00949), b1 = 0.9 * -0.98 + (-1 + 0.02098);
  check(p, {0.949 - 0.1 * b0, 2.098 - 0.1 * b1});
  auto st = opt.state_dict();
  REQUIRE(st.size() == 1);
  REQUIRE(st[0].first == "p.momentum_buffer");
  check(st[0].second, {b0, b1});
}

TEST_CASE("Adam one step, by hand", "[optim]") {
  Tensor p = vec({1.0, -2.0}, {2}).requires_grad_();
  Adam opt({{"p", p}}, /*lr=*/0.01, /*weight_decay=*/0.1);
  p.set_grad(vec({0.3, 0.2}, {2}));
  opt.step();
  // g = [0.3 + 0.1, 0.2 - 0.2] = [0.4, 0]; m = 0.1 g; v = 0.001 g^2; m^ = g, v^ = g^2:
  // p -= lr g / (|g| + eps)
  check(p, {1 - 0.01 * 0.4 / (0.4 + 1e-8), -2.0});
}

TEST_CASE("SGD, Nesterov, Adam, AdamW match PyTorch over 3 steps with 2 groups", "[optim]") {
  SECTION("SGD momentum 0.9") {
    Problem pr;
    SGD opt(pr.groups(), SGDOptions{0.9, false});
    pr.run(opt, 0, 3);
    check(pr.p, {-0.08858295162455608, -3.7726755203179803, -0.48251535693515063, 0.8027157334035849});
    check(pr.q, {0.14579999999999993, -0.04339999999999998, -0.41700000000000015, 0.0});
  }
  SECTION("SGD Nesterov") {
    Problem pr;
    SGD opt(pr.groups(), SGDOptions{0.9, true});
    pr.run(opt, 0, 3);
    check(pr.p, {-0.6139019320030681, -4.942870189311708, -0.992747805254283, 0.07257722551413297});
    check(pr.q, {0.0981963, 0.07584640000000005, -0.5222595000000001, 0.0});
  }
  SECTION("SGD without momentum") {
    Problem pr;
    SGD opt(pr.groups(), SGDOptions{0.0, false});
    pr.run(opt, 0, 3);
    check(pr.p, {0.3323315092488638, -3.05792997431814, -0.1142379665377106, 1.767624006347125});
    check(pr.q, {0.21869999999999998, -0.35839999999999994, 0.5145, 0.0});
    REQUIRE(opt.state_dict().empty());
  }
  SECTION("Adam") {
    Problem pr;
    Adam opt(pr.groups());
    pr.run(opt, 0, 3);
    check(pr.p, {0.7046258806692511, -2.2976420399998045, 0.20663073996797132, 2.6998056571605558});
    check(pr.q, {0.15177081539873055, -0.5504950128420607, 1.3501907616408608, 0.0});
  }
  SECTION("AdamW") {
    Problem pr;
    AdamW opt(pr.groups());
    REQUIRE(opt.type_name() == "AdamW");
    pr.run(opt, 0, 3);
    check(pr.p, {0.701993203199722, -2.2914068663723657, 0.20548381691478695, 2.691118239295669});
    check(pr.q, {0.15177081539873055, -0.5504950128420607, 1.3501907616408608, 0.0});
  }
}

TEST_CASE("Optimizers in float32 agree with float64", "[optim]") {
  Problem a, b;
  b.p = a.p.detach().to(DType::F32).requires_grad_();
  b.q = a.q.detach().to(DType::F32).requires_grad_();
  AdamW oa(a.groups()), ob(b.groups());
  a.run(oa, 0, 3);
  b.run(ob, 0, 3);
  test::require_close(b.p.to(DType::F64), a.p.detach(), 1e-5, 1e-6, "p");
  test::require_close(b.q.to(DType::F64), a.q.detach(), 1e-5, 1e-6, "q");
}

TEST_CASE("Optimizer state export and restore resumes exactly", "[optim]") {
  for (int kind = 0; kind < 3; ++kind) {
    auto make = [&](Problem& pr) -> std::unique_ptr<Optimizer> {
      if (kind == 0) return std::make_unique<SGD>(pr.groups(), SGDOptions{0.9, true});
      if (kind == 1) return std::make_unique<Adam>(pr.groups());
      return std::make_unique<AdamW>(pr.groups());
    };
    Problem straight, resumed;
    auto o1 = make(straight);
    straight.run(*o1, 0, 3);

    auto o2 = make(resumed);
    resumed.run(*o2, 0, 2);
    NamedTensors st = o2->state_dict();
    // Copy the state (as a checkpoint would) and continue in a fresh optimizer.
    NamedTensors saved;
    for (auto& [k, t] : st) saved.emplace_back(k, t.clone());
    Problem fresh;
    fresh.p.detach().copy_(resumed.p.detach());
    fresh.q.detach().copy_(resumed.q.detach());
    auto o3 = make(fresh);
    o3->load_state_dict(saved);
    fresh.run(*o3, 2, 3);
    INFO(o1->type_name());
    check(fresh.p, straight.p.to_vector<double>(), 0);
    check(fresh.q, straight.q.to_vector<double>(), 0);
    if (kind > 0) {
      bool has_step = false;
      for (auto& [k, t] : saved)
        if (k == "p.step") has_step = t.item<int64_t>() == 2;
      REQUIRE(has_step);
    }
  }
}

TEST_CASE("Optimizer state load rejects foreign state with a list of problems", "[optim]") {
  Problem pr;
  SGD opt(pr.groups());
  NamedTensors bad = {{"p.momentum_buffer", Tensor::zeros({5}, DType::F64)},
                      {"r.momentum_buffer", Tensor::zeros({4}, DType::F64)},
                      {"q.exp_avg", Tensor::zeros({2, 2}, DType::F64)}};
  try {
    opt.load_state_dict(bad);
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string m = e.what();
    INFO(m);
    REQUIRE(m.find("3 problems") != std::string::npos);
    REQUIRE(m.find("p.momentum_buffer: expected [4], got [5]") != std::string::npos);
    REQUIRE(m.find("no parameter 'r'") != std::string::npos);
    REQUIRE(m.find("'exp_avg' is not state of SGD") != std::string::npos);
  }
}

TEST_CASE("Optimizer rejects a parameter listed twice", "[optim]") {
  Tensor p = Tensor::zeros({2}).requires_grad_();
  REQUIRE_THROWS_WITH(SGD({{"a", p}, {"a", p}}, 0.1), Catch::Contains("appears twice"));
  REQUIRE_THROWS_WITH(SGD({{"a", p}, {"b", p}}, 0.1), Catch::Contains("listed twice"));
}

TEST_CASE("Parameters without a gradient are skipped", "[optim]") {
  Tensor p = vec({1.0}, {1}).requires_grad_();
  Adam opt({{"p", p}}, 0.1);
  opt.step();
  check(p, {1.0});
  REQUIRE(opt.state_dict().empty());
}

TEST_CASE("Cosine schedule with warm-up, per iteration", "[optim]") {
  Tensor p = Tensor::zeros({1}).requires_grad_();
  Tensor c = Tensor::zeros({1}).requires_grad_();
  SGD opt({ParamGroup{{{"p", p}}, 0.4, 5e-4, -1, "w"}, ParamGroup{{{"c", c}}, 0.01, 0, -1, "clip"}});
  CosineSchedule sched(opt, /*total=*/10, /*warmup=*/2);
  // Warm-up: (i + 1) / 2; then 0.5 (1 + cos(pi (i - 2) / 8)).
  REQUIRE(sched.lr(0) == Approx(0.2));
  REQUIRE(sched.lr(1) == Approx(0.005));
  sched.step();
  REQUIRE(sched.lr(0) == Approx(0.4));
  sched.step();
  REQUIRE(sched.iteration() == 2);
  REQUIRE(sched.lr(0) == Approx(0.4));
  sched.step();
  REQUIRE(sched.lr(0) == Approx(0.4 * 0.5 * (1 + std::cos(M_PI / 8))));
  sched.set_iteration(6);
  REQUIRE(sched.lr(0) == Approx(0.2));
  REQUIRE(sched.lr(1) == Approx(0.005));
  sched.set_iteration(10);
  REQUIRE(sched.lr(0) == Approx(0.0).margin(1e-15));
  sched.step();
  REQUIRE(sched.lr(0) == Approx(0.0).margin(1e-15));
  CosineSchedule floor(opt, 10, 0, 0.1);
  floor.set_iteration(10);
  REQUIRE(floor.lr(0) == Approx(0.04));
}

TEST_CASE("Multi-step schedule", "[optim]") {
  Tensor p = Tensor::zeros({1}).requires_grad_();
  SGD opt({{"p", p}}, 0.1);
  MultiStepSchedule sched(opt, {3, 5}, 0.1);
  std::vector<double> want = {0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001};
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("iteration " << i);
    REQUIRE(sched.iteration() == (int64_t)i);
    REQUIRE(opt.groups()[0].lr == Approx(want[i]));
    sched.step();
  }
  // Restoring the iteration restores the rate.
  MultiStepSchedule again(opt, {3, 5}, 0.1);
  again.set_iteration(4);
  REQUIRE(opt.groups()[0].lr == Approx(0.01));
}

// The CUDA path composes elementwise ops; it must give the CPU loop's numbers.
TEST_CASE("SGD, Adam, AdamW on CUDA parameters match the CPU", "[optim][cuda]") {
  SKIP_WITHOUT_GPU();
  const Device gpu(Device::CUDA);
  for (int kind = 0; kind < 3; ++kind) {
    Problem cpu, dev;
    dev.p = cpu.p.detach().to(gpu).requires_grad_();
    dev.q = cpu.q.detach().to(gpu).requires_grad_();
    auto make = [&](Problem& pr) -> std::unique_ptr<Optimizer> {
      if (kind == 0) return std::make_unique<SGD>(pr.groups(), SGDOptions{0.9, true});
      if (kind == 1) return std::make_unique<Adam>(pr.groups());
      return std::make_unique<AdamW>(pr.groups());
    };
    auto oc = make(cpu), od = make(dev);
    INFO(oc->type_name());
    for (int s = 0; s < 3; ++s) {
      // The same gradients on both devices (the loss runs on the CPU copy).
      cpu.run(*oc, s, s + 1);
      dev.p.set_grad(cpu.p.grad().to(gpu));
      dev.q.set_grad(cpu.q.grad().to(gpu));
      od->step();
    }
    REQUIRE(dev.p.device() == gpu);
    test::require_close(dev.p.detach().to(Device()), cpu.p.detach(), 1e-12, 1e-12, "p");
    test::require_close(dev.q.detach().to(Device()), cpu.q.detach(), 1e-12, 1e-12, "q");
    auto sd = od->state_dict(), sc = oc->state_dict();
    REQUIRE(sd.size() == sc.size());
    for (size_t i = 0; i < sd.size(); ++i) test::require_close(sd[i].second.to(Device()), sc[i].second, 1e-12, 1e-12);
  }
}
