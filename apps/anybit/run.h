// run.h - what the subcommands of `anybit` share: the option list, building the data and the
// model from a configuration, evaluation per bit-width, and reports.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "apps/anybit/config.h"
#include "data/loader.h"
#include "nn/module.h"
#include "quant/qmodel.h"

namespace anybit::app {

std::vector<OptionInfo> train_options();

// The network being trained or evaluated: a plain FP model, or one quantized model that runs at
// every bit-width of its set. bits() is {0} for a plain FP model (reported as "fp32").
struct Network {
  std::string arch;
  std::shared_ptr<nn::Module> fp;           // set for a plain FP model
  std::shared_ptr<quant::QuantModel> q;     // set for a multi-bit-width model
  nn::Module& module() { return q ? q->net() : *fp; }
  std::vector<int> bits() const;            // descending
  void set_bits(int b) { if (q) q->set_bits(b); }
  Tensor forward(const Tensor& x) { return q ? q->forward(x) : fp->forward(x); }
};

Network build_network(const Config& cfg, int64_t num_classes);

struct DataSetup {
  std::shared_ptr<data::Dataset> train, test;
  data::Pipeline train_pipe, test_pipe;
  Shape input;  // one sample, (C, H, W)
};
DataSetup open_data(const Config& cfg);

struct BitResult {
  int bits = 0;  // 0: plain FP model
  double top1 = 0, top5 = 0, loss = 0;
  double bitops = 0, weight_bytes = 0, macs = 0;
  std::vector<int64_t> confusion;  // K x K test counts: row = true class, column = predicted class
};
// Accuracy at every bit-width of the network on `ds` (evaluation mode, no gradients).
std::vector<BitResult> evaluate(Network& net, const DataSetup& d, const Config& cfg, bool with_costs,
                                int64_t max_batches = -1);
// Re-estimates the running statistics of the BN set of every bit-width on n training batches.
void recalibrate_bn(Network& net, const DataSetup& d, const Config& cfg, int64_t n);

// The config's device ("cpu", "cuda", "cuda:N"), checked: on a machine without a usable GPU,
// --device cuda stops here with the reason (no driver, no GPU, a build without CUDA).
Device config_device(const Config& cfg);
std::vector<std::string> split_list(const std::string& s);  // "a,b,,c" -> {"a", "b", "c"}
std::string bits_label(int b);  // 0 -> "fp32", 32 -> "W32A32", 4 -> "W4A4"
// The label of a run in its report: --name, else "fp32" for a plain FP model (no --bits), else
// --method (which names bit-width configurations only).
std::string report_name(const Config& cfg);

struct Report {
  std::string name;  // the method / run label
  std::string run_dir;
  std::vector<BitResult> rows;
  int64_t num_classes = 10;
  std::vector<std::string> class_names;  // for the confusion matrices of report.md (up to 20 classes)
  // Nonzero when training stopped early on a signal, after a checkpoint (apps/anybit/train.cpp):
  // the program's exit status, 128 + the signal. Such a report has no rows.
  int stopped_status = 0;
};
std::string report_table(const Report& r);                     // for the terminal
void write_report(const Report& r, const std::string& dir);    // report.json, report.md
// One line per report: top-1 against bit-width, as an SVG image.
void write_plot(const std::vector<Report>& reports, const std::string& path);

int cmd_train(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_info(const std::vector<std::string>& args);
// make_video_dataset.cpp: a synthetic video set rendered from an image dataset, and its options.
int cmd_make_video_dataset(const std::vector<std::string>& args);
// export.cpp: a trained run as one deployment file of integer codes (quant/export.h).
int cmd_export(const std::vector<std::string>& args);
std::vector<OptionInfo> export_options();
std::vector<OptionInfo> make_video_dataset_options();

}  // namespace anybit::app
