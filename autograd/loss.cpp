// loss.cpp - softmax, log-softmax, cross-entropy, distillation loss and dropout.
//
// softmax, log_softmax and cross_entropy are fused ops (STYLE.md rule 4: fused where numerics
// demand it): exp(x) of a large logit overflows, so the kernels subtract the row maximum, and
// cross-entropy computes the log-probabilities once and differentiates in one step,
// d loss / d logits = (softmax - target) / N, instead of going through log(softmax(x)).
// soft_cross_entropy and dropout are composed of primitives and get their gradients for free.
//
// The kernels are in tensor/cpu/softmax.cpp and tensor/cuda/nn.cu (declared in tensor/kernels.inc);
// the scalar references the tests compare them with are in tensor/ref_loss.h. Read next: tests/test_loss.cpp.
#include <cmath>

#include "autograd/autograd.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/kernels.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

// x viewed as (outer, K, inner) around dimension `dim`.
struct SoftmaxPlan {
  int64_t outer = 1, K = 1, inner = 1;
};

SoftmaxPlan plan_softmax(const Tensor& x, int64_t dim, const char* op) {
  int64_t d = wrap_dim(dim, x.dim(), op);
  SoftmaxPlan p;
  for (int64_t i = 0; i < x.dim(); ++i) (i < d ? p.outer : i == d ? p.K : p.inner) *= x.shape()[i];
  return p;
}

void check_float(const char* op, const char* arg, const Tensor& x) {
  AB_CHECK(is_floating(x.dtype()), op, ": ", arg, " must be float32 or float64, got ", x.str());
}

// softmax (log = false) or log_softmax (log = true) over `dim`.
Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_float(op, "x", x);
  SoftmaxPlan p = plan_softmax(x, dim, op);
  Tensor xc = x.detach().contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernel::softmax(xc, p.outer, p.K, p.inner, log, y);
  // softmax:      dX = Y * (dY - sum_k dY * Y)
  // log_softmax:  dX = dY - exp(Y) * sum_k dY
  if (needs_grad({x})) {
    Tensor sy = y.detach();
    record(op, y, {x}, [sy, p, log](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = Tensor::empty(sy.shape(), sy.dtype(), sy.device());
      kernel::softmax_backward(sy, gc, p.outer, p.K, p.inner, log, gx);
      return Grads{gx};
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }

Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

// logits: (N, K), labels: (N) int64 -> shape [] loss.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing) {
  const char* op = "cross_entropy";
  check_float(op, "logits", logits);
  AB_CHECK(logits.dim() == 2, op, ": logits must be (N, K), got ", logits.str(),
           "; hint: flatten the extra dimensions into N first");
  AB_CHECK(labels.defined() && labels.dtype() == DType::I64 && labels.dim() == 1, op,
           ": labels must be an int64 tensor of shape (N), got ", labels.defined() ? labels.str() : "undefined");
  const int64_t N = logits.size(0), K = logits.size(1);
  AB_CHECK(labels.size(0) == N, op, ": ", N, " rows of logits ", shape_str(logits.shape()), " but ",
           labels.size(0), " labels ", shape_str(labels.shape()));
  AB_CHECK(N > 0 && K > 0, op, ": empty logits ", shape_str(logits.shape()));
  AB_CHECK(label_smoothing >= 0 && label_smoothing <= 1, op, ": label_smoothing must be in [0, 1], got ",
           label_smoothing);
  // The labels are checked where they live: on the host here, before anything runs; on a GPU by
  // the loss kernel, which reports a label out of range at the host's next wait for the GPU
  // (tensor/cuda/launch.h, KernelError), so that an eager step does not wait for the GPU to copy
  // them back, and a CUDA graph's replay checks each batch's labels too.
  if (labels.device().is_cpu()) {
    const int64_t* lab = labels.data<int64_t>();
    for (int64_t n = 0; n < N; ++n) {
      int64_t c = lab[n * labels.strides()[0]];
      AB_CHECK(c >= 0 && c < K, op, ": label ", c, " (at index ", n, ") is out of range [0, K = ", K,
               ") for logits ", shape_str(logits.shape()), " ", dtype_name(logits.dtype()),
               "; hint: labels are class indices 0..K-1");
    }
  }

  // Forward: logp = log_softmax(logits) once, then
  //   loss = mean_n [ -(1 - eps) logp[n, label_n] - (eps / K) sum_k logp[n, k] ]
  Tensor logp = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  kernel::softmax(logits.detach().contiguous(), N, K, 1, true, logp);
  const Tensor dev_labels = labels.device() == logits.device() ? labels.detach() : labels.to(logits.device());
  Tensor y = Tensor::empty({}, logits.dtype(), logits.device());
  kernel::cross_entropy_loss(logp, dev_labels, label_smoothing, y);

  // dLogits = dY / N * (softmax(logits) - target), target = (1 - eps) one_hot + eps / K
  if (needs_grad({logits})) {
    Tensor sl = dev_labels;
    record(op, y, {logits}, [logp, sl, label_smoothing](const Tensor& g) {
      Tensor gx = Tensor::empty(logp.shape(), logp.dtype(), logp.device());
      kernel::cross_entropy_backward(logp, sl, label_smoothing, g.contiguous(), gx);
      return Grads{gx};
    });
  }
  return y;
}

// student_logits, teacher_logits: (N, K) -> shape [] loss.
Tensor soft_cross_entropy(const Tensor& student_logits, const Tensor& teacher_logits, double temperature) {
  const char* op = "soft_cross_entropy";
  check_float(op, "student_logits", student_logits);
  check_float(op, "teacher_logits", teacher_logits);
  AB_CHECK(student_logits.dim() == 2 && student_logits.shape() == teacher_logits.shape(), op,
           ": student and teacher logits must both be (N, K), got ", student_logits.str(), " and ",
           teacher_logits.str());
  check_same_dtype(op, student_logits, teacher_logits);
  AB_CHECK(temperature > 0, op, ": temperature must be positive, got ", temperature);
  const int64_t N = student_logits.size(0);
  AB_CHECK(N > 0, op, ": empty logits ", shape_str(student_logits.shape()));
  const double T = temperature;
  // p_t = softmax(teacher / T) is a constant: the teacher receives no gradient.
  Tensor pt;
  {
    NoGradGuard ng;
    pt = softmax(mul(teacher_logits.detach(), 1.0 / T), 1);
  }
  // loss = -T^2 / N * sum_{n,k} p_t * log_softmax(student / T); its gradient comes from the primitives:
  // dStudent = T / N * (softmax(student / T) - p_t) * dY.
  Tensor ls = log_softmax(mul(student_logits, 1.0 / T), 1);
  return mul(sum(mul(pt, ls)), -T * T / N);
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  AB_CHECK(p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p, " for ", x.str());
  AB_CHECK(is_floating(x.dtype()), "dropout: x must be float32 or float64, got ", x.str());
  if (!training || p == 0) return x;
  // mask = 1 / (1 - p) with probability 1 - p, else 0, drawn on the CPU from gen (so a run is
  // reproducible on any device); y = x * mask, so dX = dY * mask comes from mul.
  Tensor mask = Tensor::empty(x.shape(), x.dtype());
  const double keep_scale = p < 1 ? 1.0 / (1.0 - p) : 0.0;
  AB_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    scalar_t* m = mask.data<scalar_t>();
    for (int64_t i = 0; i < mask.numel(); ++i) m[i] = gen.uniform() >= p ? scalar_t(keep_scale) : scalar_t(0);
  });
  if (x.device().is_cuda()) mask = mask.to(x.device());
  return mul(x, mask);
}

}  // namespace anybit
