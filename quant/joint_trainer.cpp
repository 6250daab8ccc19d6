// joint_trainer.cpp - joint training of all bit-widths with collaborative teachers and dynamic
// block swapping. See joint_trainer.h and METHOD.md sections 3-5.
#include "quant/joint_trainer.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "tensor/kernels.h"
#include "tensor/process_group.h"

namespace anybit::quant {

TeacherRule parse_teacher_rule(const std::string& s) {
  if (s == "none") return TeacherRule::None;
  if (s == "highest") return TeacherRule::Highest;
  if (s == "next") return TeacherRule::Next;
  if (s == "random") return TeacherRule::Random;
  if (s == "collab") return TeacherRule::Collab;
  AB_FAIL("--teacher: unknown rule '", s, "' (expected none, highest, next, random or collab)");
}

const char* teacher_rule_name(TeacherRule r) {
  switch (r) {
    case TeacherRule::None: return "none";
    case TeacherRule::Highest: return "highest";
    case TeacherRule::Next: return "next";
    case TeacherRule::Random: return "random";
    case TeacherRule::Collab: return "collab";
  }
  return "?";
}

SwapMode parse_swap_mode(const std::string& s) {
  if (s == "independent") return SwapMode::Independent;
  if (s == "prefix") return SwapMode::Prefix;
  AB_FAIL("--swap-mode: unknown mode '", s, "' (expected independent or prefix)");
}

double swap_probability(const MethodConfig& c, double progress) {
  if (!c.swap) return 0;
  if (c.swap_const >= 0) return c.swap_const;
  if (c.swap_end <= 0) return 0;
  return c.swap_p0 * std::max(0.0, 1.0 - progress / c.swap_end);
}

namespace {
// The order of torch.argmax / torch.topk: NaN ranks above every number, NaNs tie with each other.
bool ranks_above(float a, float b) { return std::isnan(a) ? !std::isnan(b) : a > b; }
bool ties_with(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }
}  // namespace

void count_correct(const Tensor& logits, const Tensor& y, int64_t* top1, int64_t* top5) {
  auto v = logits.to_vector<float>();
  auto lab = y.to_vector<int64_t>();
  int64_t N = logits.size(0), K = logits.size(1);
  int64_t c1 = 0, c5 = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float* row = v.data() + i * K;
    const int64_t label = lab[i];
    float target = row[label];
    // The label's place in the classes sorted by score, ties broken by class index (a stable
    // sort): the classes that score higher, plus the lower-index classes that tie with it. Rank 0
    // is exactly torch.argmax's answer (its first maximal index), so a tie with a lower class is
    // wrong; top-5 uses the same order.
    int64_t rank = 0;
    for (int64_t k = 0; k < K; ++k) rank += ranks_above(row[k], target) || (k < label && ties_with(row[k], target));
    c1 += rank == 0;
    c5 += rank < 5;
  }
  if (top1) *top1 += c1;
  if (top5) *top5 += c5;
}

std::vector<int64_t> predicted_classes(const Tensor& logits) {
  auto v = logits.to_vector<float>();
  const int64_t N = logits.size(0), K = logits.size(1);
  std::vector<int64_t> pred(N, 0);
  for (int64_t i = 0; i < N; ++i) {
    const float* row = v.data() + i * K;
    for (int64_t k = 1; k < K; ++k)
      if (ranks_above(row[k], row[pred[i]])) pred[i] = k;  // strictly above: the first maximum stays
  }
  return pred;
}

JointTrainer::JointTrainer(QuantModel& model, const MethodConfig& cfg, uint64_t seed)
    : model_(model), cfg_(cfg), gen_(seed) {}

Tensor JointTrainer::choose_teachers(int s, const std::vector<int>& higher, const std::map<int, Tensor>& logits,
                                     const Tensor& y, int* batch_teacher, BitStats& st) {
  // `higher` lists the bit-widths above s, highest first.
  const int64_t N = y.size(0);
  int t = higher.front();
  switch (cfg_.teacher) {
    case TeacherRule::None: t = 0; break;
    case TeacherRule::Highest: t = higher.front(); break;
    case TeacherRule::Next: t = higher.back(); break;
    case TeacherRule::Random: t = higher[gen_.below(higher.size())]; break;
    case TeacherRule::Collab: {
      // Per sample: the higher bit-width whose softmax gives the true label the highest
      // probability; ties go to the lower (closer) bit-width (kernel::collab_teachers, the rule
      // in formula::collab_choice). The probabilities are compared in double (float64 logits keep
      // their precision; rounding them to float would turn near-ties into ties and move the
      // choice). The choice and the gathered teacher rows stay on the logits' device; the host
      // reads only the votes, in one copy, since the batch's teacher steers the block swaps.
      const Tensor& first = logits.at(higher.front());
      std::vector<Tensor> probs, rows;
      for (int b : higher) probs.push_back(softmax(logits.at(b), 1)), rows.push_back(logits.at(b).contiguous());
      Tensor out = Tensor::empty(first.shape(), first.dtype(), first.device());
      Tensor counts = Tensor::empty({(int64_t)higher.size() + 1}, DType::I64, first.device());
      kernel::collab_teachers(probs, rows, y.device() == first.device() ? y : y.to(first.device()), out, counts);
      std::vector<int64_t> votes = counts.to_vector<int64_t>();  // per teacher, in the order of `higher`
      // Every probability compares above -1 except NaN: no choice means that every teacher's
      // logits are non-finite for this sample (the training has diverged).
      if (const int64_t no_choice = votes.back(); no_choice > 0) {
        std::string at;
        for (int b : higher) at += (at.empty() ? "" : ", ") + std::to_string(b);
        AB_FAIL("collab teacher rule: non-finite logits at bit-width", higher.size() > 1 ? "s " : " ", at,
                " (the teacher", higher.size() > 1 ? "s" : "", " of the W", s, "A", s, " student), sample ",
                no_choice - 1,
                ": the training has diverged (try a lower --lr, or --resume from an earlier checkpoint)");
      }
      votes.pop_back();
      for (size_t j = 0; j < higher.size(); ++j) st.teacher_counts[higher[j]] += votes[j];
      // Batch-level teacher (for block swapping): the most chosen over the whole batch, the votes
      // of every process counted together (so that every process swaps the same blocks); ties
      // to the lower bit-width.
      dist::world().sum(votes.data(), (int64_t)votes.size());
      int64_t most = -1;
      for (int j = (int)higher.size() - 1; j >= 0; --j)  // lowest bit-width first: ties stay with it
        if (votes[j] > most) most = votes[j], t = higher[j];
      *batch_teacher = t;
      return out;
    }
  }
  *batch_teacher = t;
  if (t == 0) return Tensor();
  st.teacher_counts[t] += N;
  return logits.at(t);
}

void JointTrainer::draw_swaps(int teacher, double p, BitStats& st) {
  auto& blocks = model_.blocks();
  if (blocks.empty() || p <= 0 || teacher == 0) return;
  std::vector<bool> swap(blocks.size(), false);
  if (cfg_.swap_mode == SwapMode::Independent) {
    for (size_t i = 0; i < blocks.size(); ++i) swap[i] = gen_.uniform() < p;
  } else {  // prefix: with probability p swap the first k blocks, k uniform in 1..n
    if (gen_.uniform() < p) {
      size_t k = 1 + gen_.below(blocks.size());
      for (size_t i = 0; i < k; ++i) swap[i] = true;
    }
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    st.block_draws++;
    if (!swap[i]) continue;
    st.swapped_blocks++;
    blocks[i]->override_bits = teacher;
    blocks[i]->freeze_bn_stats = true;
  }
}

void JointTrainer::accumulate_gradients(const Tensor& x, const Tensor& y, double progress, const Tensor& fp_logits) {
  model_.net().zero_grad();
  const std::vector<int> bits = model_.bits_descending();
  std::map<int, Tensor> logits;  // detached logits of this batch, per bit-width
  last_p_ = swap_probability(cfg_, progress);
  const double T = cfg_.kd_temperature;
  for (size_t k = 0; k < bits.size(); ++k) {
    const int s = bits[k];
    BitStats& st = stats_[s];
    model_.set_bits(s);
    Tensor teacher;
    int batch_teacher = 0;
    std::vector<int> higher(bits.begin(), bits.begin() + k);
    if (k > 0 && cfg_.teacher != TeacherRule::None)
      teacher = choose_teachers(s, higher, logits, y, &batch_teacher, st);
    if (k > 0 && batch_teacher) draw_swaps(batch_teacher, last_p_, st);
    Tensor out = model_.forward(x);
    model_.clear_overrides();  // the forward has saved everything the backward needs
    Tensor loss;
    if (k == 0 && fp_logits.defined()) {
      // the highest bit-width's optional teacher: the frozen FP model (METHOD.md section 3)
      loss = add(cross_entropy(out, y, cfg_.label_smoothing), mul(soft_cross_entropy(out, fp_logits.detach(), T), cfg_.fp_kd_weight));
      st.teacher_counts[0] += y.size(0);
    } else if (k == 0 || !teacher.defined()) {
      loss = cross_entropy(out, y, cfg_.label_smoothing);
    } else {
      Tensor kd = mul(soft_cross_entropy(out, teacher, T), cfg_.kd_weight);
      loss = cfg_.student_ce ? add(cross_entropy(out, y, cfg_.label_smoothing), kd) : kd;
    }
    (loss_scale_ == 1.0 ? loss : mul(loss, loss_scale_)).backward();
    logits[s] = out.detach();
    if (!pending_.defined() || pending_bits_ != bits) {
      stats();  // (settles what an earlier bit set left)
      pending_ = Tensor::zeros({(int64_t)bits.size(), 2}, DType::F64, out.device());
      pending_bits_ = bits;
    }
    Tensor row = pending_.select(0, (int64_t)k);
    kernel::add_step_stats(logits[s].contiguous(), y, loss.detach(), row);
    st.count += y.size(0);
  }
  model_.set_bits(bits.front());
}

const std::map<int, BitStats>& JointTrainer::stats() const {
  if (pending_.defined()) {
    const std::vector<double> v = pending_.to_vector<double>();  // one copy (waits for the device's work)
    for (size_t k = 0; k < pending_bits_.size(); ++k) {
      stats_[pending_bits_[k]].loss_sum += v[2 * k];
      stats_[pending_bits_[k]].correct += (int64_t)v[2 * k + 1];
    }
    pending_ = Tensor();
  }
  return stats_;
}

}  // namespace anybit::quant
