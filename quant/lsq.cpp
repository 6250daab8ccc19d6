// lsq.cpp - LSQ weights and activations: the fused op, the two quantizer objects, the scalar
// reference. See lsq.h for the formulas.
#include "quant/lsq.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "tensor/kernels.h"
#include "tensor/process_group.h"

namespace anybit::quant {

// ---- the fused op ---------------------------------------------------------------------------------

LsqRange lsq_range(int bits, bool is_signed) {
  AB_CHECK(bits >= (is_signed ? 2 : 1) && bits <= 16, "lsq: bit-width ", bits, " is not in ",
           is_signed ? "2..16 (signed LSQ at 1 bit has Qp = 0: use dorefa/pact)" : "1..16");
  if (is_signed) return {int64_t(1) << (bits - 1), (int64_t(1) << (bits - 1)) - 1};
  return {0, (int64_t(1) << bits) - 1};
}

Tensor lsq_quantize(const Tensor& v, const Tensor& s, int64_t qn, int64_t qp, int64_t features) {
  AB_CHECK(s.numel() == 1, "lsq_quantize: the step must have one element, got shape ", shape_str(s.shape()));
  AB_CHECK(qn >= 0 && qp > 0 && features > 0, "lsq_quantize: bad range Qn=", qn, " Qp=", qp, " or N=", features);
  check_same_dtype("lsq_quantize", v, s);
  check_same_device("lsq_quantize", v, s);
  Tensor vc = v.contiguous();
  // The step stays on v's device (as PACT's clip value); checked here on the CPU; a copy, so
  // that the backward uses the forward's value.
  Tensor sv = s.detach().clone();
  if (sv.device().is_cpu())
    AB_CHECK(sv.item<double>() > 0, "lsq_quantize: the step must be positive, got ", sv.item<double>());
  Tensor y = Tensor::empty(v.shape(), v.dtype(), v.device());
  kernel::lsq_forward(vc, sv, (double)qn, (double)qp, y);
  if (needs_grad({v, s})) {
    Tensor sv_in = vc.detach();
    Shape s_shape = s.shape();
    const double gscale = 1.0 / std::sqrt((double)features * (double)qp);
    record("lsq_quantize", y, {v, s}, [sv_in, sv, qn, qp, gscale, s_shape](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gv = Tensor::empty(sv_in.shape(), sv_in.dtype(), sv_in.device());
      Tensor gs = Tensor::empty(s_shape, sv_in.dtype(), sv_in.device());
      kernel::lsq_backward(sv_in, sv, (double)qn, (double)qp, gscale, gc, gv, gs);
      return std::vector<Tensor>{gv, gs};
    });
  }
  return y;
}

// ---- steps: lookup, first-use initialisation, floor --------------------------------------------------

namespace {

Tensor& find_step(const std::vector<QuantParam>& params, int bits) {
  for (auto& p : params)
    if (p.bits == bits) return *p.tensor;
  AB_FAIL("lsq: no step for bit-width ", bits);
}

// s = 2 mean|v| / sqrt(Qp) the first time (s == 0); 1 / Qp if v is all zeros. In data-parallel
// training the mean is over the first batch of every process (the same step everywhere, and the
// one a single process would draw from the whole batch).
void init_step_once(Tensor& s, const Tensor& v, int64_t qp) {
  if (s.item<double>() != 0) return;
  NoGradGuard ng;
  double m = mean(abs(v.detach())).item<double>();
  if (dist::world().size() > 1) {
    double sum_count[2] = {m * double(v.numel()), double(v.numel())};
    dist::world().sum(sum_count, 2);
    m = sum_count[0] / sum_count[1];
  }
  s.fill_(m > 0 ? 2 * m / std::sqrt((double)qp) : 1.0 / qp);
}

// Raises learned steps that fell below 1e-6; 0 is left alone ("not initialised yet").
int floor_steps(const std::vector<QuantParam>& params) {
  NoGradGuard ng;
  int moved = 0;
  for (auto& p : params) {
    double v = p.tensor->item<double>();
    if (v != 0 && v < 1e-6) {
      p.tensor->fill_(1e-6);
      ++moved;
    }
  }
  return moved;
}

// v quantized at b < 32 with the step s, initialised from v on first use.
Tensor quantize_with_step(Tensor& s, const Tensor& v, int bits, bool is_signed, int64_t features) {
  LsqRange r = lsq_range(bits, is_signed);
  init_step_once(s, v, r.qp);
  return lsq_quantize(v, s, r.qn, r.qp, features);
}

}  // namespace

LsqWeights::LsqWeights(const QuantizerSpec& spec) {
  for (int b : spec.bit_set) {
    if (b < 32) lsq_range(b, true);  // checks b
    if (b < 32) add_param("weight_step_b" + std::to_string(b), b, 0.0);
  }
}

Tensor& LsqWeights::step(int bits) { return find_step(params(), bits); }

Tensor LsqWeights::forward(const Tensor& w, int bits) {
  if (bits >= 32) return w;
  return quantize_with_step(step(bits), w, bits, /*is_signed=*/true, w.numel());  // N_W: the layer's weights
}

IntegerWeights LsqWeights::integer_weights(const Tensor& w, int bits) {
  AB_CHECK(bits >= 2 && bits < 32, "lsq: bit-width ", bits, " has no integer codes");
  NoGradGuard ng;
  const LsqRange r = lsq_range(bits, /*is_signed=*/true);
  // s q, q integer in [-Qn, Qp], read on the host (the codes are for export)
  Tensor wq = forward(w, bits).detach().to(DType::F64).to(Device());
  const double s = step(bits).item<double>();
  Tensor codes = Tensor::empty(w.shape(), DType::I64);
  Tensor wc = wq.contiguous();
  const double* pq = wc.data<double>();
  int64_t* pc = codes.data<int64_t>();
  for (int64_t i = 0; i < w.numel(); ++i) pc[i] = (int64_t)std::llround(pq[i] / s) + r.qn;
  IntegerWeights iw;
  iw.codes = codes;
  iw.scale = s;
  iw.offset = -s * (double)r.qn;
  iw.code_bits = bits;
  return iw;
}

int LsqWeights::constrain() { return floor_steps(params()); }

LsqActs::LsqActs(const QuantizerSpec& spec) : is_signed_(spec.signed_input) {
  for (int b : spec.bit_set) {
    if (b < 32) lsq_range(b, is_signed_);
    if (b < 32) add_param("act_step_b" + std::to_string(b), b, 0.0);
  }
}

Tensor& LsqActs::step(int bits) { return find_step(params(), bits); }

Tensor LsqActs::forward(const Tensor& x, int bits) {
  if (bits >= 32) return x;
  // N_F: the input's features per sample
  int64_t features = x.dim() >= 2 ? x.numel() / std::max<int64_t>(x.size(0), 1) : x.numel();
  return quantize_with_step(step(bits), x, bits, is_signed_, features);
}

int LsqActs::constrain() { return floor_steps(params()); }

// ---- scalar reference -------------------------------------------------------------------------------

namespace ref {

LsqResult lsq_quantize(const std::vector<double>& v, const std::vector<double>& g, double s, int64_t qn,
                       int64_t qp, int64_t features) {
  LsqResult r{std::vector<double>(v.size()), std::vector<double>(v.size()), 0.0};
  for (size_t i = 0; i < v.size(); ++i) {
    double q = v[i] / s;
    double c = std::min(std::max(q, (double)-qn), (double)qp);
    r.vq[i] = std::nearbyint(c) * s;
    if (q <= -qn) {
      r.ds += g[i] * -qn;
    } else if (q >= qp) {
      r.ds += g[i] * qp;
    } else {
      r.dv[i] = g[i];
      r.ds += g[i] * (std::nearbyint(q) - q);
    }
  }
  r.ds /= std::sqrt((double)features * qp);
  return r;
}

}  // namespace ref

}  // namespace anybit::quant
