// export.cpp - `anybit export`: a trained multi-bit-width run as one deployment file
// (quant/export.h has the layout), with the bytes each bit-width needs against the FP checkpoint.
#include <sys/stat.h>

#include <cstdio>

#include "apps/anybit/run.h"
#include "nn/checkpoint.h"
#include "quant/export.h"

namespace anybit::app {

std::vector<OptionInfo> export_options() {
  return {{"run", "", "the run folder to export (model.safetensors + config.txt)"},
          {"out", "", "the file to write (default: <run>/export.safetensors)"},
          {"bits", "", "the bit-widths to export, e.g. 8,4 (default: the whole bit set)"},
          {"format", "anybit", "anybit (integer codes, quant/export.h); onnx is not written yet"}};
}

int cmd_export(const std::vector<std::string>& args) {
  Config cli(export_options());
  auto rest = cli.parse_args(args);
  AB_CHECK(rest.empty(), "export: unexpected argument '", rest.empty() ? "" : rest[0], "'");
  const std::string dir = cli.str("run");
  AB_CHECK(!dir.empty(), "export: give the run folder with --run DIR");
  AB_CHECK(cli.str("format") == "anybit", "--format: '", cli.str("format"),
           "' (only anybit is written so far; ONNX export is not implemented yet)");
  Config cfg(train_options());
  struct stat st;
  AB_CHECK(stat((dir + "/config.txt").c_str(), &st) == 0, "--run: '", dir, "' has no config.txt (is it an anybit run folder?)");
  cfg.load_file(dir + "/config.txt");
  AB_CHECK(!cfg.str("bits").empty(), "export: ", dir, " is a full-precision run (no bits): nothing to quantize");
  AB_CHECK(!cfg.flag("dedicated"), "export: ", dir, " holds one model per bit-width (dedicated); export each b<bits> folder's run");
  const std::string model_path = dir + "/model.safetensors";
  nn::SafeTensors ckpt = nn::read_safetensors(model_path);
  AB_CHECK(ckpt.metadata.count("classes"), "export: ", model_path, " does not say its number of classes");
  Network net = build_network(cfg, std::stoll(ckpt.metadata.at("classes")));
  net.module().load_state_dict(ckpt.tensors, true);
  std::vector<int> bits = cli.str("bits").empty() ? net.bits() : quant::parse_bit_set(cli.str("bits"));
  const std::string out = cli.str("out").empty() ? dir + "/export.safetensors" : cli.str("out");
  auto sizes = quant::export_model(*net.q, bits, out, {{"config", cfg.dump()}, {"classes", ckpt.metadata.at("classes")}});
  stat(model_path.c_str(), &st);
  const double fp_bytes = (double)st.st_size;
  stat(out.c_str(), &st);
  std::printf("wrote %s (%.1f KiB; the training checkpoint %s: %.1f KiB)\n", out.c_str(), st.st_size / 1024.0,
              model_path.c_str(), fp_bytes / 1024.0);
  std::printf("| bits | KiB to run at this bit-width | vs checkpoint |\n| --- | ---: | ---: |\n");
  for (auto& s : sizes)
    std::printf("| %s | %.1f | %.3f |\n", bits_label(s.bits).c_str(), s.bytes / 1024.0, s.bytes / fp_bytes);
  std::printf("every quantized layer's weights at every exported bit-width were read back and checked\n");
  return 0;
}

}  // namespace anybit::app
