// eval.cpp - `anybit eval` (every bit-width of trained runs: table, JSON, Markdown, plot) and
// `anybit info` (layers, parameters, MACs and per-bit-width costs of a model).
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "apps/anybit/run.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "autograd/autograd.h"
#include "quant/int_engine.h"
#include "quant/joint_trainer.h"
#include "apps/anybit/progress.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/cuda.h"

namespace anybit::app {

Device config_device(const Config& cfg) {
  const Device dev = Device::parse(cfg.str("device"));
  AB_CHECK(!dev.is_cuda() || cuda::available(), "--device ", cfg.str("device"), ": ", cuda::unavailable_reason(),
           "; run on the CPU with --device cpu");
  const bool tf32 = cfg.flag("cuda_tf32");
  AB_CHECK(!tf32 || dev.is_cuda(), "--cuda-tf32 1 needs --device cuda (TF32 is a mode of the GPU's tensor cores)");
  if (dev.is_cuda()) cuda::set_tf32(tf32);
  return dev;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

// Evaluates one trained run folder (model.safetensors + config.txt), with the command line's
// --data/--threads/--workers/--device/--eval-batches taking precedence over the run's config
// (and --cuda-tf32 only from the command line: a run trained in TF32 is evaluated anywhere).
Report eval_run(const std::string& dir, const Config& cli) {
  AB_CHECK(exists(dir), "--run: folder '", dir, "' does not exist");
  Config cfg(train_options());
  AB_CHECK(exists(dir + "/config.txt"), "--run: '", dir, "' has no config.txt (is it an anybit run folder?)");
  cfg.load_file(dir + "/config.txt");
  for (const char* k : {"data", "threads", "workers", "device", "eval_batches", "batch_size", "name"})
    if (cli.given(k)) cfg.set(k, cli.str(k));
  cfg.set("cuda_tf32", cli.str("cuda_tf32"));  // the evaluation's own choice, not the training's
  Report r;
  r.name = report_name(cfg);
  r.run_dir = dir;
  DataSetup d = open_data(cfg);
  r.num_classes = d.test->num_classes();
  r.class_names = d.test->class_names();
  if (cfg.flag("dedicated")) {
    for (int b : quant::parse_bit_set(cfg.str("bits"))) {
      Report one = eval_run(dir + "/b" + std::to_string(b), cli);
      r.rows.push_back(one.rows.at(0));
    }
    std::sort(r.rows.begin(), r.rows.end(), [](auto& a, auto& b) { return a.bits > b.bits; });
    return r;
  }
  std::string model = dir + "/model.safetensors";
  AB_CHECK(exists(model), "--run: '", dir, "' has no model.safetensors (did its training finish an epoch?)");
  Network net = build_network(cfg, r.num_classes);
  nn::load_model(model, net.module());
  net.module().to(config_device(cfg));
  r.rows = evaluate(net, d, cfg, true, cfg.integer("eval_batches"));
  return r;
}

// `--engine int`: every exported bit-width of one run on the integer engine and, on the same
// batches, on the fake-quantized network: both top-1 figures and how many predictions differ.
// Writes <run>/int_engine.md.
int eval_int(const std::string& dir, const Config& cli) {
  Config cfg(train_options());
  AB_CHECK(exists(dir + "/config.txt"), "--run: '", dir, "' has no config.txt (is it an anybit run folder?)");
  cfg.load_file(dir + "/config.txt");
  for (const char* k : {"data", "threads", "workers", "eval_batches", "batch_size"})
    if (cli.given(k)) cfg.set(k, cli.str(k));
  const std::string file = cli.str("export_file").empty() ? dir + "/export.safetensors" : cli.str("export_file");
  AB_CHECK(exists(file), "--engine int: no export file ", file, " (write it with: anybit export --run ", dir, ")");
  nn::SafeTensors exported = nn::read_safetensors(file);
  DataSetup d = open_data(cfg);
  Network net = build_network(cfg, d.test->num_classes());
  nn::load_model(dir + "/model.safetensors", net.module());
  net.module().eval();
  data::LoaderOptions lo;
  lo.batch_size = cfg.integer("batch_size");
  lo.shuffle = false;
  lo.num_workers = (int)cfg.integer("workers");
  const int64_t max_batches = cfg.integer("eval_batches");
  std::string table = "| bits | fake-quantized top-1 | integer engine top-1 | predictions that differ | test images |\n"
                      "| --- | ---: | ---: | ---: | ---: |\n";
  NoGradGuard ng;
  std::stringstream list(exported.metadata.at("export_bits"));
  for (std::string item; std::getline(list, item, ',');) {
    const int b = std::stoi(item);
    if (b >= 32) continue;
    quant::IntegerResNet engine(exported, b);
    net.set_bits(b);
    data::DataLoader loader(d.test, d.test_pipe, lo);
    loader.set_epoch(0);
    int64_t n = 0, right_fake = 0, right_int = 0, differ = 0, k = 0;
    Progress bar(bits_label(b) + " int", max_batches > 0 ? std::min<int64_t>(max_batches, loader.num_batches()) : loader.num_batches(), 100, "images");
    data::Batch batch;
    while (loader.next(batch)) {
      if (max_batches > 0 && k >= max_batches) break;
      auto fake = quant::predicted_classes(net.forward(batch.images));
      auto integer = quant::predicted_classes(engine.forward(batch.images));
      auto truth = batch.labels.to_vector<int64_t>();
      for (size_t i = 0; i < truth.size(); ++i) {
        right_fake += fake[i] == truth[i];
        right_int += integer[i] == truth[i];
        differ += fake[i] != integer[i];
      }
      n += (int64_t)truth.size();
      bar.update(++k, n, "");
    }
    char row[256];
    std::snprintf(row, sizeof row, "| %s | %.2f | %.2f | %lld | %lld |\n", bits_label(b).c_str(), 100.0 * right_fake / std::max<int64_t>(n, 1),
                  100.0 * right_int / std::max<int64_t>(n, 1), (long long)differ, (long long)n);
    table += row;
  }
  std::printf("\n%s: the export file %s on the integer engine\n%s", dir.c_str(), file.c_str(), table.c_str());
  std::FILE* f = std::fopen((dir + "/int_engine.md").c_str(), "w");
  AB_CHECK(f, "eval: cannot write ", dir, "/int_engine.md");
  std::fprintf(f, "# %s on the integer engine\n\n`anybit eval --run %s --engine int`, export file %s\n\n%s", dir.c_str(),
               dir.c_str(), file.c_str(), table.c_str());
  std::fclose(f);
  std::printf("report: %s/int_engine.md\n", dir.c_str());
  return 0;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  Config cli(train_options());
  auto rest = cli.parse_args(args);
  std::vector<std::string> runs = split_list(cli.str("run"));
  runs.insert(runs.end(), rest.begin(), rest.end());
  AB_CHECK(!runs.empty(), "eval: give the run folders with --run DIR[,DIR...]");
  cpu::set_num_threads((int)cli.integer("threads"));
  AB_CHECK(cli.str("engine") == "float" || cli.str("engine") == "int", "--engine: expected float or int, got '",
           cli.str("engine"), "'");
  if (cli.str("engine") == "int") {
    for (auto& dir : runs) eval_int(dir, cli);
    return 0;
  }
  std::vector<Report> reports;
  for (auto& dir : runs) {
    reports.push_back(eval_run(dir, cli));
    std::printf("\n%s (%s)\n%s", reports.back().name.c_str(), dir.c_str(), report_table(reports.back()).c_str());
  }
  std::string out = cli.given("out") ? cli.str("out") : runs.front();
  mkdir(out.c_str(), 0755);
  for (auto& r : reports) write_report(r, runs.size() == 1 ? out : r.run_dir);
  write_plot(reports, out + "/accuracy.svg");
  std::printf("\nreports: report.md / report.json in each run folder\nplot:    %s/accuracy.svg\n", out.c_str());
  return 0;
}

int cmd_info(const std::vector<std::string>& args) {
  Config cfg(train_options());
  auto rest = cfg.parse_args(args);
  AB_CHECK(rest.empty(), "info: unexpected argument '", rest.empty() ? "" : rest[0], "'");
  Shape input;
  for (auto& s : split_list(cfg.str("input"))) input.push_back(std::stoll(s));
  if (input.empty()) {
    nn::ModelOptions mo;
    mo.width = cfg.number("width");
    mo.small_input = cfg.flag("small_input");
    input = nn::default_input_shape(cfg.str("model"), mo);  // resnet18: 3x224x224
  }
  Network net = build_network(cfg, cfg.integer("classes"));
  std::printf("%s\n\n", net.module().repr().c_str());
  int64_t params = 0;
  for (auto& p : net.module().named_parameters()) params += p.second.numel();
  std::printf("parameters: %lld\n", (long long)params);
  auto* tsn = dynamic_cast<nn::TemporalSegmentNetwork*>(&net.module());
  std::string per = tsn ? "per clip of " + std::to_string(tsn->segments()) + " frames" : "per sample";
  std::printf("MACs %s (input %s): %lld\n", per.c_str(), shape_str(input).c_str(),
              (long long)nn::macs_per_sample(net.module(), input));
  if (net.q) {
    std::printf("\n| bits | BitOPs %s | weights (KiB) |\n| --- | ---: | ---: |\n", per.c_str());
    for (int b : net.bits()) {
      auto st = net.q->deploy_stats(b, input);
      std::printf("| %s | %.3g | %.1f |\n", bits_label(b).c_str(), st.bitops, st.weight_bytes / 1024);
    }
  }
  return 0;
}

}  // namespace anybit::app
