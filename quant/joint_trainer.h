// joint_trainer.h - one training step of the method (METHOD.md sections 3-5).
//
// For each batch: zero the gradients; visit the bit-widths in descending order; for each, run
// the forward pass, compute its loss, and backpropagate (gradients accumulate into the shared
// weights). The caller then takes one optimizer step. The detached logits of every bit-width of
// the batch are kept: lower bit-widths use them as teachers at no extra forward cost.
//   highest bit-width:  CE(labels) [+ fp_kd_weight * KD(frozen FP model's logits, its logits)]
//   student s:          student_ce * CE(labels) + lambda * KD(teacher logits, student logits)
// (CE(labels) with MethodConfig::label_smoothing; the KD terms are never smoothed.)
// The teacher rule picks, among the bit-widths above s, per batch (highest, next, random) or per
// sample (collab: the one that gives the sample's label the highest probability, ties to the
// lower bit-width). With block swapping on, each block of the student is replaced, with
// probability p, by the same block at the batch-level teacher's bit-width.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "quant/qmodel.h"
#include "tensor/random.h"

namespace anybit::quant {

enum class TeacherRule { None, Highest, Next, Random, Collab };
enum class SwapMode { Independent, Prefix };

TeacherRule parse_teacher_rule(const std::string& s);  // "none" | "highest" | ... (clear error)
const char* teacher_rule_name(TeacherRule r);
SwapMode parse_swap_mode(const std::string& s);         // "independent" | "prefix"

struct MethodConfig {
  TeacherRule teacher = TeacherRule::Collab;
  double kd_temperature = 1.0;
  double kd_weight = 1.0;      // lambda
  double fp_kd_weight = 1.0;   // weight of the highest bit-width's KD from a frozen FP model, when one is given
  bool student_ce = true;      // false: students learn from KD alone (Any-Precision)
  double label_smoothing = 0;  // of every CE(labels) term (PyTorch's label_smoothing), in [0, 1)
  bool swap = true;            // dynamic block swapping
  double swap_p0 = 0.5;        // p at the start of training ...
  double swap_end = 0.75;      // ... decaying linearly to 0 at this fraction of training
  double swap_const = -1;      // >= 0: a constant p instead of the schedule
  SwapMode swap_mode = SwapMode::Independent;
};

// The swap probability at `progress` (fraction of training done, in [0, 1]).
double swap_probability(const MethodConfig& c, double progress);

struct BitStats {
  double loss_sum = 0;
  int64_t correct = 0, count = 0;
  std::map<int, int64_t> teacher_counts;  // teacher bit-width -> samples it taught
  int64_t swapped_blocks = 0, block_draws = 0;
};

class JointTrainer {
 public:
  JointTrainer(QuantModel& model, const MethodConfig& cfg, uint64_t seed);
  // x: (N, C, H, W) float32, y: (N) int64. Zeroes the gradients, runs every bit-width and
  // accumulates gradients; the caller takes the optimizer step. progress: fraction of training
  // done, for the swap schedule. fp_logits (N, K), optional: the logits of a frozen FP model on x;
  // the highest bit-width then also distils from them (its teacher is counted as bit-width 0).
  // Statistics accumulate into stats() until reset_stats(). The losses and correct counts are added
  // up on the model's device (kernel::add_step_stats) and read back only when stats() is called: a
  // step on the GPU then never waits for it (but for the collab rule's teacher choice).
  void accumulate_gradients(const Tensor& x, const Tensor& y, double progress, const Tensor& fp_logits = Tensor());
  const std::map<int, BitStats>& stats() const;
  void reset_stats() {
    stats_.clear();
    pending_ = Tensor();
  }
  double last_swap_p() const { return last_p_; }
  // Data-parallel training: each process backpropagates its losses times `scale` (its share n_p / n
  // of the global batch), so that the sum of the processes' gradients is the global batch's
  // gradient. The statistics keep the unscaled losses. 1 for a single process.
  void set_loss_scale(double scale) { loss_scale_ = scale; }
  Generator& generator() { return gen_; }

 private:
  // Teacher logits (N, K) for student s and the batch-level teacher bit-width.
  Tensor choose_teachers(int s, const std::vector<int>& higher, const std::map<int, Tensor>& logits,
                         const Tensor& y, int* batch_teacher, BitStats& st);
  void draw_swaps(int teacher, double p, BitStats& st);

  QuantModel& model_;
  MethodConfig cfg_;
  Generator gen_;
  mutable std::map<int, BitStats> stats_;
  // On the device, row k for the k-th bit-width of bits_descending(): [loss sum, correct count]
  // (float64) not yet in stats_. One tensor, so that stats() reads them all in one copy.
  mutable Tensor pending_;
  mutable std::vector<int> pending_bits_;  // the bit-width of each row
  double last_p_ = 0;
  double loss_scale_ = 1.0;
};

// Top-1 and top-5 correct counts of logits (N, K) against labels (N), added to *top1 / *top5 (either
// may be null). Ties rank by class index, as torch.argmax does: top-1 is correct when the label is
// the first maximal index of its row, top-5 when fewer than 5 classes rank before it (a higher score,
// or the same score at a lower index). NaN ranks above every number (torch.argmax returns a NaN).
void count_correct(const Tensor& logits, const Tensor& y, int64_t* top1, int64_t* top5);
// The predicted class of each row of logits (N, K): the first maximal index, as torch.argmax, a NaN
// ranking above every number (count_correct's order, so a row counts as correct exactly when its
// prediction is its label).
std::vector<int64_t> predicted_classes(const Tensor& logits);

}  // namespace anybit::quant
