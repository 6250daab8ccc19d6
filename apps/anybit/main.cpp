// main.cpp - the `anybit` program: train, eval, info and make-video-dataset (README.md shows examples).
//
// Every failure prints one clear line, "anybit: error: <what>", and exits non-zero. The line names
// no source file; `--verbose` (anywhere) or ANYBIT_DEBUG=1 adds the "file:line" where it was raised.
// `anybit --help` lists the commands; `anybit <command> --help` (or `anybit help <command>`)
// prints that command's options and exits 0.
//
// Under mpirun (nn/distributed.h) every process runs the command; rank 0 speaks, the others are
// silent but for their errors. A process that fails prints "anybit: error (rank R of N): <what>"
// and stops the whole job (MPI_Abort), so that no process waits forever for a dead one.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "apps/anybit/run.h"
#include "nn/distributed.h"
#include "tensor/error.h"

using namespace anybit;

namespace {

// One subcommand: how to call it, what it does, and the options it reads (from the list `known`
// gives: train, eval and info share train_options()).
struct Command {
  const char* name;
  const char* usage;
  std::vector<std::string> options;
  std::vector<app::OptionInfo> (*known)() = app::train_options;
};

// train reads every option but those of eval and info alone.
std::vector<std::string> train_keys() {
  std::vector<std::string> keys;
  for (auto& o : app::train_options())
    if (o.key != "run" && o.key != "input" && o.key != "classes") keys.push_back(o.key);
  return keys;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"train", "anybit train [--config FILE] [--option value ...]\n"
                "  train a model (full precision, or adaptive bit-width with --bits) into --out",
       train_keys()},
      {"eval", "anybit eval --run DIR[,DIR...] [--out DIR] [--option value ...]\n"
               "  evaluate trained runs at every bit-width: table, report and plot (each run's config.txt\n"
               "  gives the model; these options override it); --engine int: the export file on the integer\n"
               "  engine, beside the fake-quantized network, prediction for prediction",
       {"run", "out", "data", "name", "batch_size", "eval_batches", "threads", "workers", "device", "cuda_tf32",
        "test_clips", "engine", "export_file"}},
      {"info", "anybit info [--model NAME] [--bits B,B,...] [--option value ...]\n"
               "  print a model's layers, parameters, MACs per sample, and BitOPs per bit-width (with --data\n"
               "  a video data set: the TSN/TSM of --frames frames, costs per clip)",
       {"model", "width", "small_input", "bits", "weight_store", "weight_scale", "clip_init", "input", "classes",
        "seed", "data", "frames", "temporal_shift", "shift_div"}},
      {"make-video-dataset",
       "anybit make-video-dataset --variant motion|appearance --source DIR --out DIR [--option value ...]\n"
       "  render a synthetic labelled video set from an image dataset (MNIST, CIFAR, an image folder)",
       {"variant", "source", "out", "train", "test", "size", "frames", "fps", "codec", "quality", "motion_scale", "seed"},
       app::make_video_dataset_options},
      {"export", "anybit export --run DIR [--out FILE] [--bits B,B,...] [--format anybit|onnx] [--check-images N]\n"
                 "  write a trained run as one deployment file: integer weight codes (lower bit-widths as the top\n"
                 "  bits of one code set where the model stores them so), folded BN per bit-width (quant/export.h);\n"
                 "  --format onnx: also one ONNX QDQ graph per bit-width (quant/onnx_export.h)",
       {"run", "out", "bits", "format", "check_images", "data"}, app::export_options},
  };
  return list;
}

void usage() {
  std::printf(
      "usage: anybit <command> [--config FILE] [--option value ...]\n"
      "commands:\n"
      "  train   train a model (full precision, or adaptive bit-width with --bits)\n"
      "  eval    evaluate trained runs at every bit-width: table, report and plot\n"
      "  info    print a model's layers, parameters and MACs per sample\n"
      "  make-video-dataset  render a synthetic video set (motion or appearance classes) from images\n"
      "  export  write a trained run as one deployment file of integer weight codes\n"
      "  help    list the options (`anybit help <command>` or `anybit <command> --help`: its options)\n"
      "--verbose (anywhere) or ANYBIT_DEBUG=1: errors also name the source file and line\n"
      "examples:\n"
      "  anybit train --config configs/mnist_ours.cfg --data datasets/mnist --out runs/mnist_ours\n"
      "  anybit eval --run runs/mnist_ours --run runs/mnist_adabits --out runs/compare\n"
      "  anybit info --model resnet20 --bits 8,4,2\n"
      "  anybit make-video-dataset --variant motion --source datasets/mnist --out datasets/mnist_motion\n");
}

// Prints one command's usage and options; false when there is no such command.
bool command_help(const std::string& name) {
  for (auto& c : commands()) {
    if (name != c.name) continue;
    std::printf("usage: %s\n\noptions (a config file gives them as `key = value`, with _ for -):\n%s", c.usage,
                app::Config(c.known()).help(c.options).c_str());
    return true;
  }
  return false;
}

bool is_help(const std::string& a) { return a == "--help" || a == "-h"; }

// Ranks other than 0 print nothing (their progress and tables would repeat rank 0's); their
// errors still reach the terminal through a copy of stderr. Returns the stream for errors.
FILE* quiet_unless_rank0(int rank) {
  if (rank == 0) return stderr;
  FILE* errors = fdopen(dup(fileno(stderr)), "w");
  int null = open("/dev/null", O_WRONLY);
  if (null < 0 || !errors) return stderr;
  std::fflush(stdout);
  std::fflush(stderr);
  dup2(null, fileno(stdout));
  dup2(null, fileno(stderr));
  close(null);
  return errors;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--verbose")
      setenv("ANYBIT_DEBUG", "1", 1);  // detail::fail reads it (tensor/error.h)
    else
      args.push_back(argv[i]);
  }
  if (args.empty() || is_help(args[0])) {
    usage();
    return args.empty() ? 2 : 0;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  FILE* errors = stderr;
  try {
    dist::ProcessGroup& group = nn::start_processes(&argc, &argv);
    errors = quiet_unless_rank0(group.rank());
    if (cmd == "help") {
      if (!args.empty()) {
        AB_CHECK(command_help(args[0]), "help: unknown command '", args[0],
                 "' (expected train, eval, info, make-video-dataset or export)");
        return 0;
      }
      usage();
      std::printf("options (config file keys use _ instead of -):\n%s",
                  app::Config(app::train_options()).help().c_str());
      return 0;
    }
    // `--help` anywhere on a command's line prints its options instead of running it.
    for (auto& a : args)
      if (is_help(a) && command_help(cmd)) return 0;
    int status = -1;
    if (cmd == "train") status = app::cmd_train(args);
    if (cmd == "eval") status = app::cmd_eval(args);
    if (cmd == "info") status = app::cmd_info(args);
    if (cmd == "make-video-dataset") status = app::cmd_make_video_dataset(args);
    if (cmd == "export") status = app::cmd_export(args);
    if (status >= 0) {
      nn::stop_processes();
      return status;
    }
    std::fprintf(stderr,
                 "anybit: error: unknown command '%s' (expected train, eval, info, make-video-dataset, export or help)\n",
                 cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    dist::ProcessGroup& group = dist::world();
    if (group.size() == 1) {
      std::fprintf(errors, "anybit: error: %s\n", e.what());
      return 1;
    }
    std::fprintf(errors, "anybit: error (rank %d of %d): %s\n", group.rank(), group.size(), e.what());
    std::fflush(errors);
    nn::abort_processes(1);  // the other ranks may be waiting for this one in a collective call
  }
}
