// main.cpp - the `anybit` program: train, eval and info (README.md shows examples).
//
// Every failure prints one clear line, "anybit: error: <what>", and exits non-zero.
#include <cstdio>
#include <string>
#include <vector>

#include "apps/anybit/run.h"
#include "tensor/error.h"

using namespace anybit;

static void usage() {
  std::printf(
      "usage: anybit <command> [--config FILE] [--option value ...]\n"
      "commands:\n"
      "  train   train a model (full precision, or adaptive bit-width with --bits)\n"
      "  eval    evaluate trained runs at every bit-width: table, report and plot\n"
      "  info    print a model's layers, parameters and MACs per sample\n"
      "  help    list the options\n"
      "examples:\n"
      "  anybit train --config configs/mnist_ours.cfg --data datasets/mnist --out runs/mnist_ours\n"
      "  anybit eval --run runs/mnist_ours --run runs/mnist_adabits --out runs/compare\n"
      "  anybit info --model resnet20 --bits 8,4,2\n");
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    usage();
    return args.empty() ? 2 : 0;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "train") return app::cmd_train(args);
    if (cmd == "eval") return app::cmd_eval(args);
    if (cmd == "info") return app::cmd_info(args);
    if (cmd == "help") {
      usage();
      std::printf("options (config file keys use _ instead of -):\n%s",
                  app::Config(app::train_options()).help().c_str());
      return 0;
    }
    std::fprintf(stderr, "anybit: error: unknown command '%s' (expected train, eval, info or help)\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "anybit: error: %s\n", e.what());
    return 1;
  }
}
