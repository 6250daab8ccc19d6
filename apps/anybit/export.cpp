// export.cpp - `anybit export`: a trained multi-bit-width run as one deployment file
// (quant/export.h has the layout), with the bytes each bit-width needs against the FP checkpoint.
#include <sys/stat.h>

#include <cstdio>

#include "apps/anybit/run.h"
#include "nn/checkpoint.h"
#include "quant/export.h"
#include "quant/int_engine.h"
#include "quant/onnx_export.h"
#include "autograd/autograd.h"
#include "data/loader.h"

namespace anybit::app {

std::vector<OptionInfo> export_options() {
  return {{"run", "", "the run folder to export (model.safetensors + config.txt)"},
          {"out", "", "the file to write (default: <run>/export.safetensors)"},
          {"bits", "", "the bit-widths to export, e.g. 8,4 (default: the whole bit set)"},
          {"format", "anybit", "anybit (integer codes, quant/export.h), or onnx: that file and, from it, one QDQ graph per bit-width (<out>.b<bits>.onnx, quant/onnx_export.h)"},
          {"check_images", "0", "onnx: also write the first N test images with the fake-quantized logits of every bit-width, for scripts/check_onnx.js (<out>.check/)"},
          {"data", "", "onnx with --check-images: the dataset (default: the run's)"}};
}

int cmd_export(const std::vector<std::string>& args) {
  Config cli(export_options());
  auto rest = cli.parse_args(args);
  AB_CHECK(rest.empty(), "export: unexpected argument '", rest.empty() ? "" : rest[0], "'");
  const std::string dir = cli.str("run");
  AB_CHECK(!dir.empty(), "export: give the run folder with --run DIR");
  const std::string format = cli.str("format");
  AB_CHECK(format == "anybit" || format == "onnx", "--format: expected anybit or onnx, got '", format, "'");
  const int64_t check_images = cli.integer("check_images");
  AB_CHECK(check_images >= 0, "--check-images: must be >= 0, got ", check_images);
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
  std::string out = cli.str("out").empty() ? dir + "/export.safetensors" : cli.str("out");
  // onnx: --out is the prefix of the graphs (<out>.b<bits>.onnx); the anybit file they are made
  // from goes to <out>.safetensors.
  std::string prefix;
  if (format == "onnx") {
    prefix = cli.str("out").empty() ? dir + "/export" : cli.str("out");
    out = prefix + ".safetensors";
  }
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
  if (format != "onnx") return 0;

  nn::SafeTensors exported = nn::read_safetensors(out);
  std::vector<int> onnx_bits;
  for (int b : bits)
    if (b < 32) {
      quant::IntegerResNet engine(exported, b);
      const std::string path = prefix + ".b" + std::to_string(b) + ".onnx";
      quant::write_onnx(engine, path);
      stat(path.c_str(), &st);
      std::printf("wrote %s (%.1f KiB): the QDQ graph at %s\n", path.c_str(), st.st_size / 1024.0, bits_label(b).c_str());
      onnx_bits.push_back(b);
    }
  if (check_images == 0) return 0;

  // The reference for scripts/check_onnx.js: images, labels, and the fake-quantized logits.
  if (!cli.str("data").empty()) cfg.set("data", cli.str("data"));
  DataSetup d = open_data(cfg);
  const std::string check = prefix + ".check";
  mkdir(check.c_str(), 0755);
  data::LoaderOptions lo;
  lo.batch_size = 250;
  lo.shuffle = false;
  std::vector<std::FILE*> logits;
  for (int b : onnx_bits) {
    logits.push_back(std::fopen((check + "/logits.b" + std::to_string(b) + ".f32").c_str(), "wb"));
    AB_CHECK(logits.back(), "export: cannot write into ", check);
  }
  std::FILE* images = std::fopen((check + "/images.f32").c_str(), "wb");
  std::FILE* labels = std::fopen((check + "/labels.i64").c_str(), "wb");
  AB_CHECK(images && labels, "export: cannot write into ", check);
  net.module().eval();
  NoGradGuard ng;
  data::DataLoader loader(d.test, d.test_pipe, lo);
  loader.set_epoch(0);
  data::Batch batch;
  int64_t n = 0;
  Shape sample;
  while (n < check_images && loader.next(batch)) {
    const int64_t take = std::min<int64_t>(batch.labels.size(0), check_images - n);
    Tensor x = batch.images.slice(0, 0, take).contiguous(), y = batch.labels.slice(0, 0, take).contiguous();
    sample = Shape(x.shape().begin() + 1, x.shape().end());
    std::fwrite(x.data<float>(), sizeof(float), (size_t)x.numel(), images);
    std::fwrite(y.data<int64_t>(), sizeof(int64_t), (size_t)y.numel(), labels);
    for (size_t i = 0; i < onnx_bits.size(); ++i) {
      net.set_bits(onnx_bits[i]);
      Tensor l = net.forward(x).contiguous();
      std::fwrite(l.data<float>(), sizeof(float), (size_t)l.numel(), logits[i]);
    }
    n += take;
  }
  for (auto* f : logits) std::fclose(f);
  std::fclose(images);
  std::fclose(labels);
  std::string bits_json, shape_json;
  for (int b : onnx_bits) bits_json += (bits_json.empty() ? "" : ", ") + std::to_string(b);
  for (auto s : sample) shape_json += (shape_json.empty() ? "" : ", ") + std::to_string(s);
  std::FILE* meta = std::fopen((check + "/meta.json").c_str(), "w");
  AB_CHECK(meta, "export: cannot write into ", check);
  std::fprintf(meta, "{\"images\": %lld, \"shape\": [%s], \"classes\": %s, \"bits\": [%s], \"prefix\": \"%s\"}\n",
               (long long)n, shape_json.c_str(), ckpt.metadata.at("classes").c_str(), bits_json.c_str(), prefix.c_str());
  std::fclose(meta);
  std::printf("wrote %s: %lld test images with the fake-quantized logits (node scripts/check_onnx.js %s)\n", check.c_str(),
              (long long)n, prefix.c_str());
  return 0;
}

}  // namespace anybit::app
