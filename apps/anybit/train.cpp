// train.cpp - `anybit train`: full-precision training, or joint adaptive bit-width training with
// the method (quant/joint_trainer.h); checkpoints, resume, metrics, the final report.
//
// Output folder (--out): config.txt, metrics.jsonl (one line per epoch), model.safetensors and
// state.safetensors (written atomically at every epoch end, and every --save-every steps),
// report.json / report.md / accuracy.svg at the end.
//
// Reading order: compute_gradients (one step), save_checkpoint / load_checkpoint, epoch_metrics
// (one metrics.jsonl line, built as nn::Json), then train_one, which strings them together.
//
// Under mpirun (nn/distributed.h) every process runs train_one on its part of each batch; the
// gradients are summed before the optimizer step, the epoch's statistics and the running BN
// statistics before they are logged, evaluated or saved, and only rank 0 writes files.
//
// A checkpoint is two files, each written atomically: the training state (the weights, optimizer,
// schedule, generators and the step, `iteration`), which is all --resume reads, then the model
// (the weights alone, for eval and export, with the same step in its metadata). A run that stops
// between the two writes resumes from the state file, whose weights and optimizer state always
// belong together, and rewrites the model at its next checkpoint: nothing is lost and nothing is
// mismatched. The state files of older runs hold no weights: resume then reads the model file and
// refuses a pair written at different steps, with a message naming both.
//
// Stopping early loses nothing either (StopSignals below). The first SIGINT (Ctrl-C) or SIGTERM (a
// scheduler taking the machine back, `kill`) lets the step in progress finish, writes a checkpoint
// at that step, and exits with status 128 + the signal's number (130, 143); `--resume 1` goes on
// from there, as if the run had never stopped. A second signal stops the program at once. Under
// mpirun every process stops after the same step: each step sums "asked to stop?" across them.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "apps/anybit/progress.h"
#include "apps/anybit/run.h"
#include "autograd/autograd.h"
#include "data/device_batches.h"
#include "nn/captured_step.h"
#include "nn/checkpoint.h"
#include "nn/distributed.h"
#include "nn/json.h"
#include "nn/optim.h"
#include "quant/joint_trainer.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/cuda.h"
#include "tensor/kernels.h"

namespace anybit::app {

namespace {

void make_dirs(const std::string& path) {
  std::string acc;
  std::stringstream ss(path);
  std::string part;
  if (!path.empty() && path[0] == '/') acc = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    acc += part + "/";
    if (mkdir(acc.c_str(), 0755) != 0 && errno != EEXIST) AB_FAIL("--out: cannot create folder '", acc, "'");
  }
}

bool file_exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

// ---- stopping on SIGINT / SIGTERM (see the top of the file) ----

// The signal that asked training to stop, or 0. Atomic, not just sig_atomic_t: two signals may
// be handled at the same time by two threads (the loader's workers, OpenMP's), and exactly one of
// them must be the first. A lock-free atomic may be used in a signal handler.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {  // the second one: stop at once, as if there were no handler
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  // Only async-signal-safe calls here: write(2), not stdio.
  const char msg[] = "\nanybit: stopping after this step, with a checkpoint (once more to stop at once)\n";
  ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)ignored;
}

// While it lives, SIGINT and SIGTERM ask training to stop instead of killing the program; the
// handlers that were there before are put back at the end.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa = {};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;  // reads and waits in progress carry on
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

// True when this process, or under mpirun any process of the job, has been asked to stop. Every
// process calls it at the same points, so that all of them stop after the same step: one 8-byte
// sum across the processes per call (none for a single process).
bool stop_requested(dist::ProcessGroup& group) {
  int64_t asked = g_stop_signal != 0;
  if (group.size() > 1) group.sum(&asked, 1);
  return asked > 0;
}

// The exit status of a stopped run: 128 + the signal, as a shell reports a program killed by it.
// A process that stopped because another one was asked reports SIGTERM.
int stopped_status() { return 128 + (g_stop_signal != 0 ? g_stop_signal.load() : SIGTERM); }

Report stopped_report(const std::string& out) {
  Report r;
  r.run_dir = out;
  r.stopped_status = stopped_status();
  return r;
}

// Parameter groups: the weights (with weight decay); BN's gamma and beta when bn_lr or bn_wd is
// given (the video recipe's BN group); and one group per bit-width for the quantizers' parameters
// (PACT's clip values, LSQ's steps; METHOD.md section 2: no weight decay at b >= 4 by default;
// configurable per bit). The quantized model lists those parameters itself.
// Reads "bits:value,bits:value" (e.g. 4:0,2:5e-4) into `out`, over the defaults already there.
// With `single_ok`, a plain number instead sets every bit-width (and -1 keeps the defaults).
void parse_per_bit(const std::string& key, const std::string& text, bool single_ok, std::map<int, double>& out) {
  if (text.empty()) return;
  const std::string form = "' is not bits:value (e.g. 2:5e-4)";
  if (single_ok && text.find(':') == std::string::npos) {
    double v;
    try {
      size_t used = 0;
      v = std::stod(text, &used);
      AB_CHECK(used == text.size(), "");
    } catch (...) {
      AB_FAIL("--", key, ": '", text, "' is neither a number nor bits:value pairs (e.g. 4:0.1,2:0.01)");
    }
    if (v >= 0)
      for (auto& kv : out) kv.second = v;
    return;
  }
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto colon = item.find(':');
    AB_CHECK(colon != std::string::npos, "--", key, ": '", item, form);
    try {
      out[std::stoi(item.substr(0, colon))] = std::stod(item.substr(colon + 1));
    } catch (...) {
      AB_FAIL("--", key, ": '", item, form);
    }
  }
}

std::vector<nn::ParamGroup> make_groups(Network& net, const Config& cfg) {
  double lr = cfg.number("lr"), wd = cfg.number("weight_decay");
  std::map<int, double> clip_lr, clip_wd;  // per bit-width; defaults: the weights' lr, wd below 4 bits
  for (int b : net.bits()) {
    clip_lr[b] = lr;
    clip_wd[b] = b >= 4 ? 0.0 : wd;
  }
  parse_per_bit("clip-lr", cfg.str("clip_lr"), /*single_ok=*/true, clip_lr);
  parse_per_bit("clip-wd", cfg.str("clip_wd"), /*single_ok=*/false, clip_wd);
  std::map<int, nn::ParamGroup> quant;  // bit-width -> its quantizer parameters
  std::set<const void*> in_quant_group;
  if (net.q) {
    for (auto& [name, p] : net.q->quant_params()) {
      auto& g = quant[p.bits];
      g.name = "quant_b" + std::to_string(p.bits);
      g.lr = clip_lr.at(p.bits);
      g.weight_decay = clip_wd.at(p.bits);
      g.params.emplace_back(name, *p.tensor);
      in_quant_group.insert(&p.tensor->impl());
    }
  }
  // BN's gamma and beta (of every BN set) get a group of their own when bn_lr or bn_wd is given,
  // found by module type, not by name.
  const double bn_lr = cfg.number("bn_lr"), bn_wd = cfg.number("bn_wd");
  nn::ParamGroup bn;
  bn.name = "bn";
  bn.lr = bn_lr >= 0 ? bn_lr : lr;
  bn.weight_decay = bn_wd >= 0 ? bn_wd : wd;
  std::set<const void*> in_bn_group;
  if (bn_lr >= 0 || bn_wd >= 0) {
    for (auto& [mname, m] : net.module().named_modules()) {
      if (!dynamic_cast<nn::BatchNorm2d*>(m.get())) continue;
      for (auto& [pname, p] : m->named_parameters()) {
        bn.params.emplace_back(mname + "." + pname, p);
        in_bn_group.insert(&p.impl());
      }
    }
  }
  nn::ParamGroup weights;
  weights.name = "weights";
  weights.lr = lr;
  weights.weight_decay = wd;
  for (auto& [name, p] : net.module().named_parameters())
    if (!in_quant_group.count(&p.impl()) && !in_bn_group.count(&p.impl())) weights.params.emplace_back(name, p);
  std::vector<nn::ParamGroup> groups{weights};
  if (!bn.params.empty()) groups.push_back(bn);
  for (auto& kv : quant) groups.push_back(kv.second);
  return groups;
}

std::unique_ptr<nn::Optimizer> make_optimizer(std::vector<nn::ParamGroup> groups, const Config& cfg) {
  std::string o = cfg.str("optimizer");
  if (o == "sgd") {
    nn::SGDOptions so;
    so.momentum = cfg.number("momentum");
    so.nesterov = cfg.flag("nesterov");
    return std::make_unique<nn::SGD>(std::move(groups), so);
  }
  if (o == "adam") return std::make_unique<nn::Adam>(std::move(groups));
  if (o == "adamw") return std::make_unique<nn::AdamW>(std::move(groups));
  AB_FAIL("--optimizer: '", o, "' (expected sgd, adam or adamw)");
}

std::unique_ptr<nn::LRSchedule> make_schedule(nn::Optimizer& opt, const Config& cfg, int64_t steps_per_epoch) {
  std::string s = cfg.str("schedule");
  int64_t total = cfg.integer("epochs") * steps_per_epoch;
  if (s == "cosine")
    return std::make_unique<nn::CosineSchedule>(opt, total, (int64_t)(cfg.number("warmup_epochs") * steps_per_epoch));
  if (s == "multistep") {
    std::vector<int64_t> ms;
    std::stringstream ss(cfg.str("milestones"));
    std::string item;
    while (std::getline(ss, item, ',')) {
      try {
        ms.push_back(std::stoll(item) * steps_per_epoch);
      } catch (...) {
        AB_FAIL("--milestones: '", item, "' is not an epoch number");
      }
    }
    return std::make_unique<nn::MultiStepSchedule>(opt, ms, cfg.number("gamma"));
  }
  AB_FAIL("--schedule: '", s, "' (expected cosine or multistep)");
}

quant::MethodConfig method_config(const Config& cfg) {
  quant::MethodConfig m;
  m.teacher = quant::parse_teacher_rule(cfg.str("teacher"));
  m.kd_temperature = cfg.number("kd_temperature");
  AB_CHECK(m.kd_temperature > 0, "--kd-temperature must be positive, got ", m.kd_temperature);
  m.kd_weight = cfg.number("kd_weight");
  m.fp_kd_weight = cfg.number("fp_kd_weight");
  AB_CHECK(m.fp_kd_weight >= 0, "--fp-kd-weight must be >= 0, got ", m.fp_kd_weight);
  m.student_ce = cfg.flag("student_ce");
  m.label_smoothing = cfg.number("label_smoothing");  // the CE terms of every bit-width
  AB_CHECK(m.label_smoothing >= 0 && m.label_smoothing < 1, "--label-smoothing must be in [0, 1), got ",
           m.label_smoothing);
  m.swap = cfg.flag("swap");
  m.swap_p0 = cfg.number("swap_p0");
  m.swap_end = cfg.number("swap_end");
  m.swap_const = cfg.number("swap_const");
  m.swap_mode = quant::parse_swap_mode(cfg.str("swap_mode"));
  AB_CHECK(m.swap_p0 >= 0 && m.swap_p0 <= 1, "--swap-p0 must be in [0, 1], got ", m.swap_p0);
  return m;
}

// What model.safetensors carries besides the weights: enough to rebuild the model, and the step
// at which it was written (the training state carries the same step; see the file comment).
nn::Metadata model_metadata(Network& net, const Config& cfg, int64_t classes, int64_t iteration) {
  return {{"arch", net.arch},          {"bits", cfg.str("bits")}, {"classes", std::to_string(classes)},
          {"width", cfg.str("width")}, {"config", cfg.dump()},    {"iteration", std::to_string(iteration)}};
}

// Refuses a model and a training state written at different steps (a crash between the two
// writes of a checkpoint). A model without a step predates the check and is accepted.
void check_checkpoint_pair(const nn::Metadata& model, const nn::TrainingState& state, const std::string& model_path,
                           const std::string& state_path) {
  auto it = model.find("iteration");
  if (it == model.end()) return;
  AB_CHECK(it->second == std::to_string(state.iteration), "--resume: ", model_path, " was written at step ",
           it->second, " but ", state_path, " at step ", state.iteration,
           ": the run stopped between the two writes of a checkpoint, and new weights with an old optimizer "
           "state would not continue the same run. Start again with --resume 0 (or another --out)");
}

std::string json_num(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

// A number of metrics.jsonl, written as it always was: 6 significant digits.
nn::Json json_number(double v) { return nn::Json::number_text(json_num(v)); }

// The optional frozen FP teacher of the highest bit-width (METHOD.md section 3): the same
// architecture without quantization, loaded from a checkpoint, always in evaluation mode.
std::shared_ptr<nn::Module> load_fp_teacher(const Config& cfg, const Network& net, int64_t classes, Device dev) {
  if (cfg.str("fp_teacher").empty()) return nullptr;
  AB_CHECK(net.q, "--fp-teacher: only a quantized model (--bits) distils from an FP teacher");
  Config fp_cfg = cfg;
  fp_cfg.set("bits", "");
  std::shared_ptr<nn::Module> teacher = build_network(fp_cfg, classes).fp;
  nn::load_model(cfg.str("fp_teacher"), *teacher);
  teacher->eval();
  teacher->to(dev);
  std::fprintf(stderr, "anybit: FP teacher of %s: %s\n", bits_label(net.bits().front()).c_str(),
               cfg.str("fp_teacher").c_str());
  return teacher;
}

// ---- one training step ---------------------------------------------------------------------------

// The running loss and accuracy of an FP epoch (the joint trainer keeps its own, per bit-width).
// Each step adds to `acc` on the model's device (kernel::add_step_stats); settle() reads it back.
struct FpStats {
  double loss_sum = 0;
  int64_t correct = 0;
  Tensor acc;  // [loss sum, correct count] not yet in the two above

  void settle() {
    if (!acc.defined()) return;
    const std::vector<double> v = acc.to_vector<double>();  // (waits for the device's work)
    loss_sum += v[0];
    correct += (int64_t)v[1];
    acc = Tensor();
  }
};

// The gradients of one batch x (N, C, H, W), y (N): every bit-width through the joint trainer
// (distilling from the FP teacher's logits when there is one), or the FP model's cross-entropy.
// seen: samples of this epoch before the batch. Returns the progress bar's text; the caller takes
// the optimizer step.
// loss_scale: this process's share of the global batch (1 for a single process; nn/distributed.h).
std::string compute_gradients(Network& net, quant::JointTrainer* joint, nn::Module* fp_teacher,
                              nn::Optimizer& optimizer, nn::CapturedStep* captured, const Tensor& x, const Tensor& y,
                              double progress, double label_smoothing, int64_t seen, FpStats& fp, double loss_scale) {
  if (joint) {
    Tensor fp_logits;
    if (fp_teacher) {
      NoGradGuard ng;
      fp_logits = fp_teacher->forward(x);
    }
    joint->set_loss_scale(loss_scale);
    joint->accumulate_gradients(x, y, progress, fp_logits);
    std::string info;
    for (auto& [b, s] : joint->stats())
      if (b == net.bits().back() || b == net.bits().front())
        info += bits_label(b) + " " + json_num(s.loss_sum / std::max<int64_t>(s.count, 1)) + " ";
    return info;
  }
  Tensor logits, loss;
  if (captured) {  // --cuda_graph: the same forward and backward, replayed as a CUDA graph
    std::vector<Tensor> out = captured->run(x, y);
    loss = out[0], logits = out[1];
  } else {
    optimizer.zero_grad();
    logits = net.forward(x);
    loss = cross_entropy(logits, y, label_smoothing);
    (loss_scale == 1.0 ? loss : mul(loss, loss_scale)).backward();
  }
  if (!fp.acc.defined()) fp.acc = Tensor::zeros({2}, DType::F64, logits.device());
  kernel::add_step_stats(logits.detach().contiguous(), y, loss.detach(), fp.acc);
  fp.settle();  // for the progress bar: one copy from the device per step
  return "loss " + json_num(fp.loss_sum / (seen + y.size(0))) + " acc " +
         json_num(100.0 * fp.correct / (seen + y.size(0)));
}

// ---- checkpoints ---------------------------------------------------------------------------------

// What a checkpoint saves and restores besides the configuration.
struct TrainingParts {
  Network& net;
  nn::Optimizer& optimizer;
  nn::LRSchedule& schedule;
  quant::JointTrainer* joint;  // null for an FP model
};

// Where training stands: `epoch` epochs done, `batch` batches into the next one, `iteration`
// optimizer steps taken.
struct Position {
  int64_t epoch = 0, batch = 0, iteration = 0;
};

// The two files of a run folder's checkpoint, written in this order (see the file comment).
struct CheckpointFiles {
  std::string model, state;
  explicit CheckpointFiles(const std::string& out)
      : model(out + "/model.safetensors"), state(out + "/state.safetensors") {}
};

void save_checkpoint(const CheckpointFiles& files, const TrainingParts& parts, const Config& cfg, int64_t classes,
                     const Position& pos) {
  nn::TrainingState st;
  st.model = parts.net.module().state_dict();
  st.optimizer = parts.optimizer.state_dict();
  st.scheduler_iteration = parts.schedule.iteration();
  st.epoch = pos.epoch;
  st.iteration = pos.iteration;
  st.config = cfg.dump();
  st.extra["batch"] = std::to_string(pos.batch);
  if (parts.joint) st.generators["joint"] = parts.joint->generator().state();
  nn::save_training_state(files.state, st);  // first: resume needs this file alone
  nn::save_model(files.model, parts.net.module(), model_metadata(parts.net, cfg, classes, pos.iteration));
}

// Restores what save_checkpoint wrote, from the state file (older runs: the weights from the model
// file, refusing a model and a state written at different steps).
Position load_checkpoint(const CheckpointFiles& files, const TrainingParts& parts) {
  nn::TrainingState st = nn::load_training_state(files.state);
  if (!st.model.empty()) {
    parts.net.module().load_state_dict(st.model, true);
  } else {
    nn::Metadata mm = nn::load_model(files.model, parts.net.module());
    check_checkpoint_pair(mm, st, files.model, files.state);
  }
  parts.optimizer.load_state_dict(st.optimizer);
  parts.schedule.set_iteration(st.scheduler_iteration);
  if (parts.joint && st.generators.count("joint")) parts.joint->generator().set_state(st.generators.at("joint"));
  Position pos;
  pos.epoch = st.epoch;
  pos.iteration = st.iteration;
  pos.batch = st.extra.count("batch") ? std::stoll(st.extra.at("batch")) : 0;
  return pos;
}

// ---- metrics -------------------------------------------------------------------------------------

// One line of metrics.jsonl (docs/CONFIG.md): epoch, iteration, lr, seconds, images_per_s,
// [swap_p], and "train": per bit-width {loss, acc, teachers, swapped_blocks, block_draws} (an FP
// model: {"fp32": {loss, acc}}). add_test_results appends "test" when the epoch was evaluated.
// stats: the joint trainer's statistics (null for an FP model).
nn::Json epoch_metrics(int64_t epoch, int64_t iteration, double lr, double seconds, int64_t seen,
                       const quant::JointTrainer* joint, const std::map<int, quant::BitStats>* stats,
                       const FpStats& fp) {
  nn::Json line = nn::Json::object();
  line.set("epoch", nn::Json::number(epoch));
  line.set("iteration", nn::Json::number(iteration));
  line.set("lr", json_number(lr));
  line.set("seconds", json_number(seconds));
  line.set("images_per_s", json_number(seen / seconds));
  nn::Json train = nn::Json::object();
  if (joint) {
    line.set("swap_p", json_number(joint->last_swap_p()));
    for (auto& [b, s] : *stats) {
      nn::Json teachers = nn::Json::object();
      for (auto& [t, n] : s.teacher_counts) teachers.set(bits_label(t), nn::Json::number(n));
      nn::Json one = nn::Json::object();
      one.set("loss", json_number(s.loss_sum / s.count));
      one.set("acc", json_number(100.0 * s.correct / s.count));
      one.set("teachers", teachers);
      one.set("swapped_blocks", nn::Json::number(s.swapped_blocks));
      one.set("block_draws", nn::Json::number(s.block_draws));
      train.set(bits_label(b), one);
    }
  } else {
    nn::Json one = nn::Json::object();
    one.set("loss", json_number(fp.loss_sum / std::max<int64_t>(seen, 1)));
    one.set("acc", json_number(100.0 * fp.correct / std::max<int64_t>(seen, 1)));
    train.set(bits_label(0), one);
  }
  line.set("train", train);
  return line;
}

// The epoch's statistics of every process added up (data-parallel training; a copy of the
// statistics of a single process). Block draws are made alike on every process and are not summed.
std::map<int, quant::BitStats> sum_stats(const std::map<int, quant::BitStats>& mine, const std::vector<int>& bits,
                                         dist::ProcessGroup& group) {
  std::map<int, quant::BitStats> all = mine;
  if (group.size() == 1) return all;
  // A fixed layout on every process: per bit-width, loss, correct, count, then the samples taught
  // by each possible teacher (0: the FP teacher, then every bit-width).
  std::vector<int> teachers{0};
  teachers.insert(teachers.end(), bits.begin(), bits.end());
  std::vector<double> v;
  for (int b : bits) {
    quant::BitStats& s = all[b];
    v.insert(v.end(), {s.loss_sum, double(s.correct), double(s.count)});
    for (int t : teachers) v.push_back(s.teacher_counts.count(t) ? double(s.teacher_counts.at(t)) : 0.0);
  }
  group.sum(v.data(), (int64_t)v.size());
  size_t at = 0;
  for (int b : bits) {
    quant::BitStats& s = all[b];
    s.loss_sum = v[at++];
    s.correct = (int64_t)v[at++];
    s.count = (int64_t)v[at++];
    s.teacher_counts.clear();
    for (int t : teachers) {
      const int64_t n = (int64_t)v[at++];
      if (n > 0) s.teacher_counts[t] = n;
    }
  }
  for (int b : bits)
    if (all[b].count == 0) all.erase(b);  // no step this epoch (as a single process would have no entry)
  return all;
}

FpStats sum_stats(const FpStats& mine, dist::ProcessGroup& group) {
  FpStats all = mine;
  group.sum(&all.loss_sum, 1);
  group.sum(&all.correct, 1);
  return all;
}

// Adds "test": {bit-width: top-1} to a metrics line; returns the same figures for the terminal.
std::string add_test_results(nn::Json& line, const std::vector<BitResult>& results) {
  nn::Json test = nn::Json::object();
  std::string summary;
  for (auto& r : results) {
    test.set(bits_label(r.bits), json_number(r.top1));
    summary += bits_label(r.bits) + " " + json_num(r.top1) + "%  ";
  }
  line.set("test", test);
  return summary;
}

// ---- training ------------------------------------------------------------------------------------

// The options whose check needs neither the data nor the model, checked before either is opened,
// so that a typo costs no dataset scan. The rest (the per-bit-width clip rates, the optimizer,
// the schedule) are checked as the run is put together, still before its folder is made.
void check_plain_options(const Config& cfg) {
  AB_CHECK(cfg.integer("epochs") >= 1, "--epochs must be at least 1, got ", cfg.integer("epochs"));
  AB_CHECK(cfg.integer("batch_size") >= 1, "--batch-size must be at least 1, got ", cfg.integer("batch_size"));
  for (const char* key : {"lr", "weight_decay", "momentum", "bn_lr", "bn_wd", "warmup_epochs", "gamma"})
    (void)cfg.number(key);  // a value that is not a number throws, naming the option
  if (!cfg.str("bits").empty()) {
    (void)quant::parse_bit_set(cfg.str("bits"));
    (void)method_config(cfg);
  }
}

// Trains one network (one bit set) into `out`; returns its final report.
Report train_one(Config cfg, const std::string& out) {
  check_plain_options(cfg);
  Device dev = config_device(cfg);
  dist::ProcessGroup& group = dist::world();
  const bool writer = group.rank() == 0;  // the one process that writes files
  if (dev.is_cuda() && group.size() > 1)  // one process per GPU of its node
    std::fprintf(stderr, "anybit: rank 0 trains on GPU %d of its node\n", nn::use_gpu_of_this_process());
  if (dev.is_cuda() && cuda::tf32())
    std::fprintf(stderr, "anybit: float32 GEMMs (convolutions, linear layers) in TF32 on the GPU (--cuda-tf32 1)\n");
  DataSetup d = open_data(cfg);
  std::fprintf(stderr, "anybit: train %s\n        test  %s\n", d.train->describe().c_str(), d.test->describe().c_str());
  const int64_t classes = d.train->num_classes();
  Network net = build_network(cfg, classes);
  if (!cfg.str("init").empty()) {
    nn::SafeTensors fp = nn::read_safetensors(cfg.str("init"));
    // init_exclude: tensors under these names keep the model's own initialisation (a classifier
    // for another number of classes, say); every other tensor must be in the checkpoint.
    std::vector<std::string> exclude = split_list(cfg.str("init_exclude"));
    if (!exclude.empty()) {
      AB_CHECK(!net.q, "--init-exclude applies to full-precision models (a quantized model's --init is an FP "
               "checkpoint of the same network)");
      auto excluded = [&](const std::string& name) {
        for (auto& e : exclude)
          if (name == e || name.rfind(e + ".", 0) == 0) return true;
        return false;
      };
      nn::NamedTensors kept;
      for (auto& [name, t] : fp.tensors)
        if (!excluded(name)) kept.emplace_back(name, t);
      int64_t own = 0;
      for (auto& [name, t] : net.fp->state_dict())
        if (excluded(name)) kept.emplace_back(name, t.clone()), ++own;
      AB_CHECK(own > 0, "--init-exclude ", cfg.str("init_exclude"), ": the model has no tensor under these names");
      fp.tensors = kept;
    }
    if (net.q)
      net.q->load_fp_state_dict(fp.tensors);
    else
      net.fp->load_state_dict(fp.tensors, true);
    std::fprintf(stderr, "anybit: initialised from %s%s\n", cfg.str("init").c_str(),
                 exclude.empty() ? "" : (" (except " + cfg.str("init_exclude") + ")").c_str());
  }
  net.module().to(dev);
  if (group.size() > 1 && cfg.flag("sync_bn"))
    std::fprintf(stderr, "anybit: synchronised batch norm in %d BN layers\n", nn::set_sync_bn(net.module(), true));
  std::shared_ptr<nn::Module> fp_teacher = load_fp_teacher(cfg, net, classes, dev);

  data::LoaderOptions lo;
  lo.batch_size = cfg.integer("batch_size");
  lo.shuffle = true;
  lo.drop_last = true;
  lo.num_workers = (int)cfg.integer("workers");
  lo.seed = (uint64_t)cfg.integer("seed");
  // Data-parallel: each process reads its part of every global batch of batch_size examples.
  AB_CHECK(lo.batch_size >= group.size(), "--batch-size ", lo.batch_size, " is the global batch: it must be at least ",
           "the ", group.size(), " processes, each taking a part of it");
  lo.shard = group.rank();
  lo.shards = group.size();
  data::DataLoader loader(d.train, d.train_pipe, lo);
  int64_t steps_per_epoch = loader.num_batches();
  if (cfg.integer("max_steps") > 0) steps_per_epoch = std::min(steps_per_epoch, cfg.integer("max_steps"));
  const int64_t epochs = cfg.integer("epochs");

  auto optimizer = make_optimizer(make_groups(net, cfg), cfg);
  auto schedule = make_schedule(*optimizer, cfg, steps_per_epoch);
  std::unique_ptr<quant::JointTrainer> joint;
  if (net.q) joint = std::make_unique<quant::JointTrainer>(*net.q, method_config(cfg), (uint64_t)cfg.integer("seed") + 1);
  const TrainingParts parts{net, *optimizer, *schedule, joint.get()};
  std::vector<Tensor> trained;  // what the optimizer steps: the gradients summed across processes
  for (auto& g : optimizer->groups())
    for (auto& [name, p] : g.params) trained.push_back(p);
  if (writer) make_dirs(out);  // only once the data, the model and the options are known to be good

  // ---- resume ----
  const CheckpointFiles files(out);
  Position pos;
  if (cfg.flag("resume") && file_exists(files.state)) {
    pos = load_checkpoint(files, parts);
    std::fprintf(stderr, "anybit: resumed from %s at epoch %lld, batch %lld\n", out.c_str(), (long long)pos.epoch,
                 (long long)pos.batch);
  } else if (cfg.flag("resume")) {
    std::fprintf(stderr, "anybit: --resume: no checkpoint in %s yet; starting from scratch\n", out.c_str());
  }
  int64_t epoch = pos.epoch, start_batch = pos.batch, iteration = pos.iteration;
  if (writer) {
    std::ofstream c(out + "/config.txt");
    c << cfg.dump();
  }
  if (group.size() > 1)
    std::fprintf(stderr, "anybit: data-parallel over %d processes (%s): %lld examples per process and step\n",
                 group.size(), group.describe().c_str(), (long long)(lo.batch_size / group.size()));
  // Before the running BN statistics are evaluated or saved, every process holds their average
  // (each has moved them with its own part of the batches), and the same weights (checked).
  auto agree = [&] {
    nn::average_bn_statistics(net.module(), group);
    nn::check_same_everywhere(net.module().state_dict(), group, "model tensor");
  };
  auto save = [&](int64_t ep, int64_t batch) {  // after agree()
    if (writer) save_checkpoint(files, parts, cfg, classes, {ep, batch, iteration});
  };

  // A resumed run appends to its metrics; a fresh run starts a new file.
  const bool resumed = cfg.flag("resume") && iteration > 0;
  std::ofstream metrics;
  if (writer) metrics.open(out + "/metrics.jsonl", resumed ? std::ios::app : std::ios::trunc);
  const int64_t save_every = cfg.integer("save_every");
  const double label_smoothing = cfg.number("label_smoothing");
  // On a GPU the next batch's copy (pinned memory, its own stream) overlaps this step's compute.
  data::DeviceBatches batches(loader, dev);
  // --cuda_graph: the FP step's forward and backward as a CUDA graph (nn/captured_step.h). Its
  // batches are whole (drop_last), so the loss scale is 1 in every replayed step.
  std::unique_ptr<nn::CapturedStep> captured;
  bool graph_announced = false;  // said once, when the capture has happened
  if (cfg.flag("cuda_graph")) {
    AB_CHECK(dev.is_cuda() && !joint && group.size() == 1, "--cuda-graph 1 needs --device cuda, an FP model (not ",
             "the joint trainer: its teacher choice reads the GPU on the host) and one process");
    captured = std::make_unique<nn::CapturedStep>(
        [&net, label_smoothing](const Tensor& xb, const Tensor& yb) {
          Tensor logits = net.forward(xb);
          Tensor loss = cross_entropy(logits, yb, label_smoothing);
          loss.backward();
          return std::vector<Tensor>{loss, logits};
        },
        net.module().named_parameters(), true);
  }
  for (; epoch < epochs; ++epoch) {
    loader.set_epoch(epoch, start_batch);
    batches.restart();
    Progress bar("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(epochs), steps_per_epoch,
                 cfg.integer("log_every"), loader.dataset().frames_per_example() > 0 ? "clips" : "img");
    if (joint) joint->reset_stats();
    FpStats fp;
    int64_t seen = 0, seen_all = 0;  // examples of the epoch: this process's, every process's
    double comm_seconds = 0;         // summing gradients across the processes
    data::Batch batch;
    int64_t step = start_batch;
    start_batch = 0;
    while (step < steps_per_epoch && batches.next(batch)) {
      Tensor x = batch.images, y = batch.labels;
      double progress = (double)(epoch * steps_per_epoch + step) / (epochs * steps_per_epoch);
      std::string info;
      try {
        info = compute_gradients(net, joint.get(), fp_teacher.get(), *optimizer, captured.get(), x, y, progress,
                                 label_smoothing,
                                 seen, fp, double(y.size(0)) / lo.batch_size);
      } catch (const Error& e) {
        AB_FAIL("epoch ", epoch + 1, ", step ", step + 1, ": ", e.what());  // name the batch that failed
      }
      if (captured && captured->replaying() && !graph_announced) {
        bar.note("anybit: step " + std::to_string(iteration + 1) + " captured as a CUDA graph, replayed from the next on");
        graph_announced = true;
      }
      comm_seconds += nn::sum_gradients(trained, group).seconds;
      optimizer->step();
      if (net.q) net.q->constrain_quantizers();
      schedule->step();
      ++iteration;
      ++step;
      seen += y.size(0);
      seen_all += lo.batch_size;  // every batch is whole (drop_last)
      bar.update(step, seen_all, info);
      // A checkpoint inside the epoch: every save_every steps, and when asked to stop. (After the
      // epoch's last step, the epoch's end below does both.)
      const bool stop = step < steps_per_epoch && stop_requested(group);
      if (stop || (save_every > 0 && step % save_every == 0 && step < steps_per_epoch)) {
        agree();
        save(epoch, step);
      }
      if (stop) {
        bar.note("anybit: stopped in epoch " + std::to_string(epoch + 1) + " after step " + std::to_string(step) +
                 "; checkpoint in " + out + ": the same command with --resume 1 goes on from there");
        return stopped_report(out);
      }
    }
    // ---- end of epoch: evaluate, log, checkpoint ----
    std::map<int, quant::BitStats> stats;
    if (joint) stats = sum_stats(joint->stats(), net.bits(), group);
    nn::Json line = epoch_metrics(epoch + 1, iteration, schedule->lr(0), bar.seconds(), seen_all, joint.get(), &stats,
                                  sum_stats(fp, group));
    if (group.size() > 1) {
      line.set("processes", nn::Json::number(group.size()));
      line.set("comm_seconds", json_number(comm_seconds));
    }
    agree();
    bool last = epoch + 1 == epochs;
    if (last || (cfg.integer("eval_every") > 0 && (epoch + 1) % cfg.integer("eval_every") == 0)) {
      std::string summary = add_test_results(line, evaluate(net, d, cfg, false, cfg.integer("eval_batches")));
      std::fprintf(stderr, "epoch %lld/%lld test top-1: %s\n", (long long)epoch + 1, (long long)epochs, summary.c_str());
    }
    if (writer) {
      metrics << line.dump(true) << "\n";
      metrics.flush();
    }
    save(epoch + 1, 0);
    if (stop_requested(group)) {
      std::fprintf(stderr, "anybit: stopped after epoch %lld; checkpoint in %s: the same command with --resume 1 "
                   "goes on from there\n", (long long)epoch + 1, out.c_str());
      return stopped_report(out);
    }
  }

  if (cfg.integer("recalibrate_bn") > 0) recalibrate_bn(net, d, cfg, cfg.integer("recalibrate_bn"));
  Report r;
  r.name = report_name(cfg);
  r.run_dir = out;
  r.num_classes = classes;
  r.class_names = d.test->class_names();
  r.rows = evaluate(net, d, cfg, true, cfg.integer("eval_batches"));
  if (cfg.integer("recalibrate_bn") > 0 && writer)
    nn::save_model(files.model, net.module(), model_metadata(net, cfg, classes, iteration));
  return r;
}

}  // namespace

int cmd_train(const std::vector<std::string>& args) {
  Config cfg(train_options());
  auto rest = cfg.parse_args(args);
  AB_CHECK(rest.empty(), "train: unexpected argument '", rest.empty() ? "" : rest[0], "'");
  cpu::set_num_threads((int)cfg.integer("threads"));
  std::string out = cfg.str("out");
  StopSignals stop_signals;  // Ctrl-C: a checkpoint at the next step's end, then exit
  Report report;
  if (cfg.flag("dedicated")) {
    // One model per bit-width, each trained alone; the report gathers their rows.
    AB_CHECK(!cfg.str("bits").empty(), "--dedicated needs --bits");
    report.name = report_name(cfg);
    report.run_dir = out;
    for (int b : quant::parse_bit_set(cfg.str("bits"))) {
      Config one = cfg;
      one.set("bits", std::to_string(b));
      one.set("dedicated", "0");
      std::fprintf(stderr, "anybit: dedicated model at %s\n", bits_label(b).c_str());
      Report r = train_one(one, out + "/b" + std::to_string(b));
      if (r.stopped_status) return r.stopped_status;  // the bit-widths after b start on --resume 1
      report.rows.push_back(r.rows.at(0));
      report.num_classes = r.num_classes;
      report.class_names = r.class_names;
    }
    std::sort(report.rows.begin(), report.rows.end(), [](auto& a, auto& b) { return a.bits > b.bits; });
  } else {
    report = train_one(cfg, out);
    if (report.stopped_status) return report.stopped_status;
  }
  if (dist::world().rank() != 0) return 0;  // rank 0 writes the report
  make_dirs(out);
  write_report(report, out);
  write_plot({report}, out + "/accuracy.svg");
  std::printf("\n%s\n%s\n", report.name.c_str(), report_table(report).c_str());
  std::string ckpt = cfg.flag("dedicated") ? out + "/b<bits>/model.safetensors" : out + "/model.safetensors";
  std::printf("checkpoint: %s\nreport:     %s/report.md, %s/report.json\nplot:       %s/accuracy.svg\n",
              ckpt.c_str(), out.c_str(), out.c_str(), out.c_str());
  return 0;
}

}  // namespace anybit::app
