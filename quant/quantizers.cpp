// quantizers.cpp - DoReFa weights and PACT activations (METHOD.md section 2). See quantizers.h.
#include "quant/quantizers.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "tensor/formulas.h"
#include "tensor/kernels.h"

namespace anybit::quant {

namespace {

using Grads = std::vector<Tensor>;

// The straight-through replacement: the value of `target`, the gradient of `u` (dU = dY).
Tensor straight_through(const Tensor& u, const Tensor& target) {
  return add(u, sub(target, u.detach()).detach());
}

// Truncate store, the integer part: the B-bit codes with their low B - b bits dropped,
// floor(q_B / 2^(B-b)) 2^(B-b), as a constant (float64 arithmetic, exact for B <= 16).
Tensor floor_to_step(const Tensor& qB, int bits, int B) {
  NoGradGuard ng;
  const double step = std::pow(2.0, B - bits);
  Tensor q = mul(qB.detach().to(DType::F64), 1.0 / step);  // exact: step is a power of 2
  Tensor fl = Tensor::empty(q.shape(), DType::F64, q.device());
  kernel::unary(UnaryOp::Floor, q, fl);
  return mul(fl, step).to(qB.dtype());
}

// Truncate store: the b-bit value in u's [0, 1] range. Only round and floor are straight-through;
// the rescaling to the B-bit tensor's mean is differentiated (METHOD.md section 2):
//   q_B = round((2^B - 1) u),  q_b = floor(q_B / 2^(B-b)) 2^(B-b),
//   u_b = q_b / (2^B - 1) * mean(q_B) / mean(q_b)
Tensor truncated_levels(const Tensor& u, int bits, int B) {
  const double N = std::pow(2.0, B) - 1;
  Tensor qB = round_ste(mul(u, N));                           // integer codes 0 .. 2^B - 1
  Tensor qb = straight_through(qB, floor_to_step(qB, bits, B));  // the value of floor, qB's gradient
  Tensor deq = mul(qb, 1.0 / N);
  Tensor mean_B = mul(mean(qB), 1.0 / N), mean_b = mean(deq);
  if (mean_b.item<double>() <= 0) return deq;  // all codes truncated to 0: nothing to rescale
  return mul(deq, div(mean_B, mean_b));
}

// The round store's w_q = 2 round(n u) / n - 1 (n = 2^b - 1) as one fused op
// (kernel::dorefa_forward): the values of the composed formula, bit for bit, and its gradient
// written out (kernels.inc), instead of a dozen small ops and their backward nodes per layer.
Tensor dorefa_round(const Tensor& w, int bits) {
  Tensor wc = w.contiguous();
  Tensor t = Tensor::empty(w.shape(), w.dtype(), w.device());
  Tensor y = Tensor::empty(w.shape(), w.dtype(), w.device());
  Tensor m = Tensor::empty({1}, w.dtype(), w.device());
  Tensor k = Tensor::empty({1}, DType::I64, w.device());
  kernel::dorefa_forward(wc, std::pow(2.0, bits) - 1, t, y, m, k);
  if (needs_grad({w}))
    record("dorefa_quantize", y, {w}, [t, m, k](const Tensor& g) {
      Tensor gw = Tensor::empty(t.shape(), t.dtype(), t.device());
      kernel::dorefa_backward(t, m, k, g.contiguous(), gw);
      return Grads{gw};
    });
  return y;
}

}  // namespace

Tensor quantize_weight(const Tensor& w, int bits, const WeightQuantOptions& opt) {
  AB_CHECK(bits == 32 || (bits >= 1 && bits <= 16), "quantize_weight: bit-width ", bits,
           " is not in 1..16 or 32");
  Tensor wq;
  if (bits != 32 && !(opt.store == WeightStore::Truncate && bits < opt.store_bits)) {
    wq = dorefa_round(w, bits);  // 2 round(n u) / n - 1 with u as below, in one fused op
  } else {
    Tensor t = tanh(w);
    Tensor m = max(abs(t));  // max|tanh(w)|; its gradient goes to the arg-max element
    if (bits == 32) {
      wq = div(t, m);
    } else {
      Tensor u = add(div(t, mul(m, 2.0)), 0.5);  // in [0, 1]
      wq = add(mul(truncated_levels(u, bits, opt.store_bits), 2.0), -1.0);
    }
  }
  if (opt.scale == WeightScale::Mean) {
    // Any-Precision: every bit-width times E = mean|w|, a constant (detached), so the 1-bit
    // sign(w) E and the b-bit weights have the same scale where they meet without a BN between
    // them (the residual additions of a pre-activation ResNet).
    wq = mul(wq, mean(abs(w)).detach());
  }
  if (opt.scale == WeightScale::Sat && w.dim() >= 2) {
    double fan_in = (double)w.numel() / w.shape()[0];
    Tensor centered = sub(wq, mean(wq));
    double n = (double)w.numel();
    Tensor std = sqrt(mul(sum(mul(centered, centered)), 1.0 / std::max(n - 1, 1.0)));  // unbiased
    wq = div(mul(wq, 1.0 / std::sqrt(fan_in)), std);
  }
  return wq;
}

// quantize_weight as an affine map of integer codes u (IntegerWeights). With N = 2^B - 1 for the
// codes' B bits (truncate store: the stored set's B, else b):
//   w_q = 2 r u / N - 1              (r = mean(q_B) / mean(q_b), truncate store, else 1)
//   sat:  w_q / (sqrt(fan_in) std(w_q));   mean: w_q mean|w|
// so scale = 2 r k / N and offset = -k, with k the sat or mean factor (1 without).
IntegerWeights DoReFaWeights::integer_weights(const Tensor& w, int bits) {
  AB_CHECK(bits >= 2 && bits <= 16, "dorefa: bit-width ", bits, " has no integer codes (2..16)");
  NoGradGuard ng;
  IntegerWeights iw;
  const bool truncate = opt_.store == WeightStore::Truncate && bits < opt_.store_bits;
  iw.code_bits = truncate ? opt_.store_bits : bits;
  iw.codes = weight_codes(w, bits, opt_);  // truncate: the B-bit codes with their low bits zeroed
  const double N = std::pow(2.0, iw.code_bits) - 1;
  double r = 1;
  if (truncate) {
    Tensor t = tanh(w);
    Tensor u = add(div(t, mul(max(abs(t)), 2.0)), 0.5);
    const double mean_B = mean(round_ste(mul(u, N))).item<double>(), mean_b = mean(iw.codes.to(DType::F64)).item<double>();
    if (mean_b > 0) r = mean_B / mean_b;
  }
  double k = 1;
  if (opt_.scale == WeightScale::Mean) k = mean(abs(w)).item<double>();
  if (opt_.scale == WeightScale::Sat && w.dim() >= 2) {
    // the standard deviation of w_q = 2 r u / N - 1 is 2 r / N times that of u (unbiased)
    Tensor u = iw.codes.to(DType::F64);
    Tensor c = sub(u, mean(u));
    const double n = (double)w.numel();
    const double std_u = std::sqrt(sum(mul(c, c)).item<double>() / std::max(n - 1, 1.0));
    k = 1.0 / (std::sqrt((double)w.numel() / w.shape()[0]) * (2 * r / N) * std_u);
  }
  iw.scale = 2 * r * k / N;
  iw.offset = -k;
  return iw;
}

Tensor weight_codes(const Tensor& w, int bits, const WeightQuantOptions& opt) {
  AB_CHECK(bits >= 2 && bits <= 16, "weight_codes: bit-width ", bits, " has no DoReFa codes (2..16)");
  NoGradGuard ng;
  Tensor t = tanh(w);
  Tensor u = add(div(t, mul(max(abs(t)), 2.0)), 0.5);
  if (opt.store == WeightStore::Truncate && bits < opt.store_bits)
    return floor_to_step(round_ste(mul(u, std::pow(2.0, opt.store_bits) - 1)), bits, opt.store_bits).to(DType::I64);
  return round_ste(mul(u, std::pow(2.0, bits) - 1)).to(DType::I64);
}

// ---- PACT: one fused op with the method's exact gradients ----------------------------------------

Tensor pact_quantize(const Tensor& x, const Tensor& a, int bits, bool is_signed) {
  AB_CHECK(a.numel() == 1, "pact_quantize: the clip value must have one element, got shape ",
           shape_str(a.shape()));
  AB_CHECK(bits == 32 || (bits >= (is_signed ? 2 : 1) && bits <= 16), "pact_quantize: bit-width ", bits,
           is_signed ? " is not in 2..16 or 32 (signed PACT needs a sign bit and one magnitude bit)"
                     : " is not in 1..16 or 32");
  check_same_dtype("pact_quantize", x, a);
  check_same_device("pact_quantize", x, a);
  Tensor xc = x.contiguous();
  // The clip value stays on x's device (a GPU step does not wait to read it); on the CPU it is
  // checked here. A copy: the backward uses the value of the forward.
  Tensor av = a.detach().clone();
  if (av.device().is_cpu())
    AB_CHECK(av.item<double>() > 0, "pact_quantize: the clip value must be positive, got ", av.item<double>());
  const double levels = formula::pact_levels(bits, is_signed);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernel::pact_forward(xc, av, is_signed, levels, y);
  if (needs_grad({x, a})) {
    Tensor sx = xc.detach();
    Shape a_shape = a.shape();
    record("pact_quantize", y, {x, a}, [sx, av, is_signed, a_shape](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      Tensor ga = Tensor::empty(a_shape, sx.dtype(), sx.device());
      kernel::pact_backward(sx, av, is_signed, gc, gx, ga);
      return Grads{gx, ga};
    });
  }
  return y;
}

// ---- scalar references ----------------------------------------------------------------------------

namespace ref {

std::vector<double> quantize_weight(const std::vector<double>& w, int64_t out_channels, int bits,
                                    const WeightQuantOptions& opt) {
  size_t n = w.size();
  std::vector<double> out(n);
  double m = 0;
  for (double v : w) m = std::max(m, std::abs(std::tanh(v)));
  std::vector<double> u(n);
  for (size_t i = 0; i < n; ++i) u[i] = std::tanh(w[i]) / (2 * m) + 0.5;
  if (bits == 32) {
    for (size_t i = 0; i < n; ++i) out[i] = std::tanh(w[i]) / m;
  } else if (opt.store == WeightStore::Truncate && bits < opt.store_bits) {
    double N = std::pow(2.0, opt.store_bits) - 1, step = std::pow(2.0, opt.store_bits - bits);
    std::vector<double> qB(n), deq(n);
    double mean_B = 0, mean_b = 0;
    for (size_t i = 0; i < n; ++i) {
      qB[i] = std::nearbyint(u[i] * N);
      deq[i] = std::floor(qB[i] / step) * step / N;
      mean_B += qB[i] / N;
      mean_b += deq[i];
    }
    double s = mean_b > 0 ? mean_B / mean_b : 1.0;
    for (size_t i = 0; i < n; ++i) out[i] = 2 * deq[i] * s - 1;
  } else {
    double L = std::pow(2.0, bits) - 1;
    for (size_t i = 0; i < n; ++i) out[i] = 2 * std::nearbyint(u[i] * L) / L - 1;
  }
  if (opt.scale == WeightScale::Mean) {
    double E = 0;
    for (double v : w) E += std::abs(v);
    E /= n;
    for (double& v : out) v *= E;
  }
  if (opt.scale == WeightScale::Sat && out_channels > 0) {
    double mu = 0, var = 0;
    for (double v : out) mu += v;
    mu /= n;
    for (double v : out) var += (v - mu) * (v - mu);
    double sd = std::sqrt(var / std::max<double>(n - 1, 1));
    double fan_in = (double)n / out_channels;
    for (double& v : out) v = v / std::sqrt(fan_in) / sd;
  }
  return out;
}

std::vector<double> pact_quantize(const std::vector<double>& x, double a, int bits, bool is_signed) {
  std::vector<double> y(x.size());
  double lo = is_signed ? -a : 0.0;
  double L = is_signed ? std::pow(2.0, bits - 1) - 1 : std::pow(2.0, bits) - 1;
  for (size_t i = 0; i < x.size(); ++i) {
    double v = std::min(std::max(x[i], lo), a);
    y[i] = bits == 32 ? v : std::nearbyint(v * L / a) * a / L;
  }
  return y;
}

}  // namespace ref

// ---- the interface objects -------------------------------------------------------------------------

PactActs::PactActs(const QuantizerSpec& spec) : signed_(spec.signed_input) {
  AB_CHECK(spec.act_init > 0, "pact: the initial clip value must be positive, got ", spec.act_init);
  for (int b : spec.bit_set) {
    AB_CHECK(!signed_ || b >= 2, "pact: a layer with a signed input cannot run at 1 bit (bit set ",
             b, "): signed PACT needs a sign bit and one magnitude bit");
    add_param("clip_b" + std::to_string(b), b, spec.act_init);
  }
}

Tensor& PactActs::clip(int bits) {
  for (auto& p : params())
    if (p.bits == bits) return *p.tensor;
  AB_FAIL("pact: no clip value for bit-width ", bits);
}

Tensor PactActs::forward(const Tensor& x, int bits) { return pact_quantize(x, clip(bits), bits, signed_); }

int PactActs::constrain() {
  NoGradGuard ng;
  int raised = 0;
  for (auto& p : params())
    if (p.tensor->item<double>() < 1e-3) {
      p.tensor->fill_(1e-3);
      ++raised;
    }
  return raised;
}

}  // namespace anybit::quant
