// run.cpp - options, data, model building, evaluation and reports shared by the subcommands.
#include "apps/anybit/run.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "apps/anybit/progress.h"
#include "data/video.h"
#include "autograd/autograd.h"
#include "nn/models.h"
#include "quant/joint_trainer.h"
#include "tensor/cpu/kernels.h"
#include "tensor/process_group.h"

namespace anybit::app {

std::vector<OptionInfo> train_options() {
  return {
      // what and where
      {"model", "lenet5", "architecture: lenet5, resnet20, preact_resnet20, resnet18, resnet50, mobilenetv2"},
      {"width", "1", "width multiplier (preact_resnet20, mobilenetv2)"},
      {"small_input", "0", "resnet18/50, mobilenetv2: the stem for 32x32 inputs (3x3 stride 1, no max-pool)"},
      {"data", "datasets/mnist", "dataset folder: MNIST IDX files, CIFAR binaries, or an image folder tree"},
      {"out", "runs/run", "output folder: config, metrics, checkpoints, report"},
      {"name", "", "label of the run in reports (default: the method; fp32 without --bits)"},
      {"decode_min_side", "0", "image folders: decode JPEGs at the smallest 1/2, 1/4 or 1/8 scale whose shorter side stays >= N (0: full size; e.g. resize_size with transform imagenet)"},
      {"skip_bad_files", "0", "image folders: skip (count and log) images that cannot be decoded instead of stopping"},
      {"augment", "auto", "training augmentation: auto (crop+flip for 32x32 RGB, none otherwise), none, crop_flip"},
      {"transform", "auto", "preprocessing: auto (MNIST/CIFAR statistics, --augment), imagenet (random-resized crop + flip; resize + centre crop for testing; ImageNet mean/std)"},
      {"crop_size", "224", "transform imagenet: side of the training crop and of the test centre crop"},
      {"resize_size", "256", "transform imagenet: test images are resized so their shorter side is this, then centre-cropped"},
      // video (a data folder of videos: a list file per split, or <split>/<class>/<videos>)
      {"frames", "8", "video: frames per clip (TSN segments, or the frames of a dense clip); the model averages their logits"},
      {"sampling", "segments", "video: segments (TSN: one frame per equal segment) or dense (frames at frame_stride)"},
      {"frame_stride", "1", "video, dense sampling: frames between two frames of a clip"},
      {"test_clips", "1", "video: clips per test video, their logits averaged"},
      {"short_side", "128", "video: frames are decoded scaled so their shorter side is this (0: native size)"},
      {"video_crop", "112", "video: side of the square crop fed to the model"},
      {"video_augment", "multiscale", "video training augmentation: multiscale (TSN's multi-scale crop), crop (random crop), none (centre crop)"},
      {"video_flip", "0", "video: random horizontal flips in training (never on data sets where direction is the class)"},
      {"temporal_shift", "0", "video: TSM, a temporal shift in every residual block (0: TSN)"},
      {"shift_div", "8", "video, TSM: 1/shift_div of the channels move one frame back, 1/shift_div one forward"},
      // schedule
      {"epochs", "3", "training epochs"},
      {"batch_size", "128", "batch size"},
      {"optimizer", "sgd", "sgd, adam or adamw"},
      {"lr", "0.1", "learning rate"},
      {"momentum", "0.9", "SGD momentum"},
      {"nesterov", "0", "SGD Nesterov momentum"},
      {"weight_decay", "5e-4", "weight decay of the weights"},
      {"schedule", "cosine", "learning-rate schedule: cosine (per iteration) or multistep"},
      {"warmup_epochs", "0", "linear warm-up epochs (cosine)"},
      {"milestones", "", "multistep: epochs at which lr is multiplied by gamma, e.g. 100,150"},
      {"gamma", "0.1", "multistep factor"},
      {"bn_lr", "-1", "learning rate of BN's gamma and beta, in a group of their own (-1: the weights' lr)"},
      {"bn_wd", "-1", "weight decay of BN's gamma and beta, in a group of their own (-1: weight_decay)"},
      {"label_smoothing", "0", "label smoothing of the cross-entropy with the labels (every bit-width; not KD)"},
      // the method
      {"method", "ours", "label of the configuration: dedicated, adabits, anyprec, ckt, dbs, ours"},
      {"bits", "", "bit set, e.g. 8,6,4,2 or 32,4,2; empty: a plain full-precision model"},
      {"dedicated", "0", "train one separate model per bit-width instead of one joint model"},
      {"teacher", "collab", "teacher rule: none, highest, next, random, collab"},
      {"kd_temperature", "1", "distillation temperature T"},
      {"kd_weight", "1", "distillation weight lambda"},
      {"fp_teacher", "", "FP checkpoint of the same model: the highest bit-width also distils from it (frozen)"},
      {"fp_kd_weight", "1", "weight of the distillation from --fp-teacher"},
      {"student_ce", "1", "students also learn from the labels (0: KD only, Any-Precision)"},
      {"swap", "1", "dynamic block swapping"},
      {"swap_p0", "0.5", "swap probability at the start of training"},
      {"swap_end", "0.75", "fraction of training at which the swap probability reaches 0"},
      {"swap_const", "-1", "constant swap probability (>= 0 replaces the schedule)"},
      {"swap_mode", "independent", "independent (each block) or prefix (the first k blocks)"},
      {"weight_store", "round", "round or truncate (one stored B-bit model)"},
      {"weight_scale", "none", "none, sat (AdaBits' rescaling) or mean (Any-Precision: w_q times mean|w| at every bit-width)"},
      {"weight_quant", "dorefa", "weight quantizer: " + quant::weight_quantizer_names()},
      {"act_quant", "pact", "activation quantizer: " + quant::act_quantizer_names()},
      {"clip_init", "8", "initial PACT clip value (2 when fine-tuning from FP weights)"},
      {"clip_lr", "-1", "learning rate of the quantizers' parameters (clip values, steps): one value, or per bit, e.g. 32:0.1,4:0.1,2:0.01 (-1: the weights' lr)"},
      {"clip_wd", "", "quantizer parameter weight decay per bit, e.g. 4:0,2:5e-4 (default 0 at b >= 4, else weight_decay)"},
      {"init", "", "full-precision checkpoint to start from (model.safetensors of an FP run)"},
      {"init_exclude", "", "names (comma-separated) that keep their own initialisation instead of --init's, e.g. fc for another number of classes (FP models)"},
      {"recalibrate_bn", "0", "re-estimate each bit-width's BN statistics on N training batches before evaluation"},
      // machinery
      {"seed", "1", "random seed"},
      {"threads", "2", "CPU threads"},
      {"workers", "2", "data loader threads"},
      {"device", "cpu", "cpu or cuda"},
      {"cuda_tf32", "0", "with --device cuda: float32 GEMMs (convolutions, linear layers) on the tensor cores in TF32, inputs rounded to a 10-bit mantissa (faster, less precise; PyTorch's default for convolutions)"},
      {"cuda_graph", "0", "with --device cuda: record the FP trainer's forward and backward once as a CUDA graph and replay it every step (one process, not the joint trainer)"},
      {"sync_bn", "0", "under mpirun: batch norm with the statistics of the whole global batch (default: each process's part, as PyTorch DDP)"},
      {"resume", "0", "continue from the checkpoint in --out"},
      {"save_every", "0", "also checkpoint every N steps inside an epoch (0: at epoch ends only)"},
      {"eval_every", "1", "evaluate on the test set every N epochs (and at the end)"},
      {"log_every", "50", "steps between progress lines in a log"},
      {"max_steps", "0", "stop each epoch after N steps (0: full epochs; for smoke tests)"},
      {"eval_batches", "0", "evaluate on the first N test batches only (0: all)"},
      {"run", "", "eval: run folder(s), comma-separated"},
      {"engine", "float", "eval: float (the fake-quantized network) or int (the run's export file on the integer engine, quant/int_engine.h)"},
      {"export_file", "", "eval --engine int: the export file (default: <run>/export.safetensors, written by anybit export)"},
      {"input", "", "info: input shape of one sample, e.g. 3,32,32"},
      {"classes", "10", "info: number of classes"},
  };
}

std::string bits_label(int b) {
  if (b == 0) return "fp32";
  return "W" + std::to_string(b) + "A" + std::to_string(b);
}

std::string report_name(const Config& cfg) {
  if (!cfg.str("name").empty()) return cfg.str("name");
  return cfg.str("bits").empty() ? bits_label(0) : cfg.str("method");
}

std::vector<int> Network::bits() const { return q ? q->bits_descending() : std::vector<int>{0}; }

static nn::ModelOptions model_options(const Config& cfg) {
  nn::ModelOptions mo;
  mo.width = cfg.number("width");
  mo.small_input = cfg.flag("small_input");
  // A video data set makes the model a TSN (or TSM) over the frames of each clip.
  if (data::is_video_dataset(cfg.str("data"), "train")) {
    mo.segments = cfg.integer("frames");
    mo.temporal_shift = cfg.flag("temporal_shift");
    mo.shift_div = cfg.integer("shift_div");
  } else {
    AB_CHECK(!cfg.flag("temporal_shift"), "--temporal-shift needs a video data set; ", cfg.str("data"),
             " holds images");
  }
  return mo;
}

Network build_network(const Config& cfg, int64_t num_classes) {
  Network net;
  net.arch = cfg.str("model");
  std::string bits = cfg.str("bits");
  uint64_t seed = (uint64_t)cfg.integer("seed");
  if (bits.empty()) {
    net.fp = nn::make_model(net.arch, num_classes, model_options(cfg), seed);
  } else {
    quant::QuantOptions qo;
    qo.bit_set = quant::parse_bit_set(bits);
    std::string ws = cfg.str("weight_store"), sc = cfg.str("weight_scale");
    AB_CHECK(ws == "round" || ws == "truncate", "--weight-store: '", ws, "' (expected round or truncate)");
    AB_CHECK(sc == "none" || sc == "sat" || sc == "mean", "--weight-scale: '", sc, "' (expected none, sat or mean)");
    qo.weight.store = ws == "round" ? quant::WeightStore::Round : quant::WeightStore::Truncate;
    qo.weight.scale = sc == "none" ? quant::WeightScale::None
                      : sc == "sat" ? quant::WeightScale::Sat
                                    : quant::WeightScale::Mean;
    qo.weight_quant = cfg.str("weight_quant");
    qo.act_quant = cfg.str("act_quant");
    qo.clip_init = cfg.number("clip_init");
    AB_CHECK(qo.clip_init > 0, "--clip-init must be positive, got ", qo.clip_init);
    net.q = std::make_shared<quant::QuantModel>(net.arch, num_classes, qo, seed, model_options(cfg));
  }
  return net;
}

// Video: clips of `frames` frames decoded at the shorter side `short_side`, a square crop of
// video_crop (TSN's multi-scale crop, a random crop, or the centre) and ImageNet's statistics.
static DataSetup open_video_data(const Config& cfg) {
  DataSetup d;
  std::string root = cfg.str("data"), sampling = cfg.str("sampling"), aug = cfg.str("video_augment");
  AB_CHECK(sampling == "segments" || sampling == "dense", "--sampling: '", sampling, "' (expected segments or dense)");
  AB_CHECK(aug == "multiscale" || aug == "crop" || aug == "none", "--video-augment: '", aug,
           "' (expected multiscale, crop or none)");
  data::VideoOptions vo;
  vo.clip.sampling = sampling == "segments" ? data::ClipSampling::Segments : data::ClipSampling::Dense;
  vo.clip.frames = cfg.integer("frames");
  vo.clip.stride = cfg.integer("frame_stride");
  vo.short_side = cfg.integer("short_side");
  vo.skip_bad_files = cfg.flag("skip_bad_files");
  const int64_t crop = cfg.integer("video_crop");
  AB_CHECK(crop > 0, "--video-crop must be positive, got ", crop);
  AB_CHECK(vo.short_side == 0 || vo.short_side >= crop, "--short-side ", vo.short_side,
           " is smaller than --video-crop ", crop);
  vo.train = true;
  d.train = data::open_video_dataset(root, "train", vo);
  vo.train = false;
  vo.num_clips = cfg.integer("test_clips");
  d.test = data::open_video_dataset(root, "test", vo);
  if (aug == "multiscale") d.train_pipe.steps.push_back(data::multi_scale_crop(crop));
  else if (aug == "crop") d.train_pipe.steps.push_back(data::random_crop(crop));
  else d.train_pipe.steps.push_back(data::center_crop(crop));
  if (cfg.flag("video_flip")) d.train_pipe.steps.push_back(data::random_horizontal_flip());
  d.test_pipe.steps.push_back(data::center_crop(crop));
  d.train_pipe.mean = d.test_pipe.mean = data::kImageNetMean;
  d.train_pipe.std = d.test_pipe.std = data::kImageNetStd;
  d.input = {3, crop, crop};
  return d;
}

DataSetup open_data(const Config& cfg) {
  std::string root = cfg.str("data");
  if (data::is_video_dataset(root, "train")) return open_video_data(cfg);
  DataSetup d;
  const int64_t min_side = cfg.integer("decode_min_side");
  AB_CHECK(min_side >= 0, "--decode-min-side must be >= 0, got ", min_side);
  d.train = data::open_dataset(root, "train", cfg.flag("skip_bad_files"), min_side);
  d.test = data::open_dataset(root, "test", cfg.flag("skip_bad_files"), min_side);
  std::string aug = cfg.str("augment"), tf = cfg.str("transform");
  AB_CHECK(aug == "auto" || aug == "none" || aug == "crop_flip", "--augment: '", aug,
           "' (expected auto, none or crop_flip)");
  AB_CHECK(tf == "auto" || tf == "imagenet", "--transform: '", tf, "' (expected auto or imagenet)");
  if (tf == "imagenet") {
    // Images of any size (an ImageNet-style folder): every example leaves the pipeline at
    // crop x crop, so the batches have one shape whatever the files hold.
    AB_CHECK(aug == "auto", "--augment ", aug, " does not combine with --transform imagenet (its augmentation is "
             "the random-resized crop and the flip)");
    int64_t crop = cfg.integer("crop_size"), resize = cfg.integer("resize_size");
    AB_CHECK(crop > 0 && resize >= crop, "--crop-size ", crop, " must be positive and at most --resize-size ", resize);
    d.train_pipe = data::imagenet_train_pipeline(crop);
    d.test_pipe = data::imagenet_eval_pipeline(resize, crop);
    d.input = {3, crop, crop};
    return d;
  }
  data::Example e = d.test->get(0);
  d.input = {e.image.channels, e.image.height, e.image.width};
  bool mnist = e.image.channels == 1;
  bool crop_flip = aug == "crop_flip" || (aug == "auto" && !mnist && e.image.height == 32);
  if (crop_flip) {
    d.train_pipe.steps.push_back(data::random_crop(e.image.height, 4));
    d.train_pipe.steps.push_back(data::random_horizontal_flip());
  }
  d.train_pipe.mean = d.test_pipe.mean = mnist ? data::kMnistMean : data::kCifar10Mean;
  d.train_pipe.std = d.test_pipe.std = mnist ? data::kMnistStd : data::kCifar10Std;
  return d;
}

std::vector<BitResult> evaluate(Network& net, const DataSetup& d, const Config& cfg, bool with_costs,
                                int64_t max_batches) {
  data::LoaderOptions lo;
  lo.batch_size = cfg.integer("batch_size");
  lo.shuffle = false;
  lo.num_workers = (int)cfg.integer("workers");
  // Data-parallel: each process evaluates its part of every batch; the counts are summed below.
  dist::ProcessGroup& group = dist::world();
  lo.shard = group.rank();
  lo.shards = group.size();
  std::vector<BitResult> out;
  NoGradGuard ng;
  net.module().eval();
  Device dev = config_device(cfg);
  for (int b : net.bits()) {
    net.set_bits(b);
    data::DataLoader loader(d.test, d.test_pipe, lo);
    loader.set_epoch(0);
    int64_t top1 = 0, top5 = 0, n = 0;
    double loss = 0;
    const int64_t K = d.test->num_classes();
    std::vector<int64_t> confusion(K * K, 0);
    data::Batch batch;
    const int64_t batches = max_batches > 0 ? std::min(max_batches, loader.num_batches()) : loader.num_batches();
    Progress bar("test " + bits_label(b), batches, 0, d.test->frames_per_example() > 0 ? "clips" : "img");
    bar.transient(30);
    int64_t k = 0;  // batches taken
    while (loader.next(batch)) {
      if (max_batches > 0 && k >= max_batches) break;
      bar.update(k++, n * group.size(), "");
      if (batch.labels.size(0) == 0) continue;  // this process's part of a short last batch
      Tensor x = batch.images.to(dev), y = batch.labels.to(dev);
      Tensor logits = net.forward(x);
      // Several clips per test video: one row of logits per clip, averaged per video.
      if (logits.size(0) != y.size(0))
        logits = mean(logits.reshape({y.size(0), logits.size(0) / y.size(0), logits.size(1)}), {1});
      loss += cross_entropy(logits, y).item<double>() * y.size(0);
      quant::count_correct(logits, y, &top1, &top5);
      AB_CHECK(logits.size(1) == K, "evaluate: the model gives ", logits.size(1), " logits for the ", K,
               " classes of ", d.test->describe());
      std::vector<int64_t> pred = quant::predicted_classes(logits), truth = y.to_vector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) confusion[truth[i] * K + pred[i]]++;
      n += y.size(0);
    }
    bar.update(batches, n * group.size(), "");  // done: erased
    std::vector<int64_t> counts = {top1, top5, n};
    group.sum(counts.data(), 3);
    top1 = counts[0], top5 = counts[1], n = counts[2];
    group.sum(&loss, 1);
    group.sum(confusion.data(), (int64_t)confusion.size());
    BitResult r;
    r.bits = b;
    r.top1 = 100.0 * top1 / std::max<int64_t>(n, 1);
    r.top5 = 100.0 * top5 / std::max<int64_t>(n, 1);
    r.loss = loss / std::max<int64_t>(n, 1);
    r.confusion = confusion;
    if (with_costs) {
      Shape in = d.input;
      if (net.q) {
        auto st = net.q->deploy_stats(b, in);
        r.bitops = st.bitops;
        r.weight_bytes = st.weight_bytes;
        r.macs = st.macs;
      } else {
        r.macs = (double)nn::macs_per_sample(*net.fp, in);
        r.bitops = r.macs * 32 * 32;
        double params = 0;
        for (auto& p : net.fp->state_dict())
          if (p.first.find("num_batches_tracked") == std::string::npos) params += p.second.numel();
        r.weight_bytes = params * 4;
      }
    }
    out.push_back(r);
  }
  net.module().train();
  if (net.q) net.set_bits(net.bits().front());
  return out;
}

void recalibrate_bn(Network& net, const DataSetup& d, const Config& cfg, int64_t n) {
  if (!net.q || n <= 0) return;
  NoGradGuard ng;
  Device dev = config_device(cfg);
  for (int b : net.bits()) {
    net.set_bits(b);
    // Reset this bit-width's running statistics and average them over n batches (cumulative
    // average: batch k gets weight 1 / (k + 1), as PyTorch's momentum=None).
    std::vector<nn::BatchNorm2d*> sets;
    for (auto& [name, m] : net.module().named_modules())
      if (auto* mb = dynamic_cast<quant::MultiBatchNorm2d*>(m.get())) sets.push_back(&mb->set(b));
    for (auto* s : sets) {
      s->running_mean_.fill_(0);
      s->running_var_.fill_(1);
    }
    data::LoaderOptions lo;
    lo.batch_size = cfg.integer("batch_size");
    lo.num_workers = (int)cfg.integer("workers");
    lo.seed = (uint64_t)cfg.integer("seed") + 77;
    data::DataLoader loader(d.train, d.train_pipe, lo);
    loader.set_epoch(0);
    data::Batch batch;
    net.module().train();
    const int64_t batches = std::min(n, loader.num_batches());
    Progress bar("BN statistics " + bits_label(b), batches, 0, d.train->frames_per_example() > 0 ? "clips" : "img");
    bar.transient(30);
    int64_t seen = 0;
    for (int64_t k = 0; k < n && loader.next(batch); ++k) {
      bar.update(k, seen, "");
      for (auto* s : sets) s->set_momentum(1.0 / (k + 1));
      net.forward(batch.images.to(dev));
      seen += batch.images.size(0);
    }
    bar.update(batches, seen, "");  // done: erased
    for (auto* s : sets) s->set_momentum(0.1);
  }
  net.set_bits(net.bits().front());
}

// ---- reports ----------------------------------------------------------------------------------

static std::string fmt(double v, int prec) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(prec);
  os << v;
  return os.str();
}

static std::string human_ops(double v) {
  if (v >= 1e9) return fmt(v / 1e9, 2) + " G";
  if (v >= 1e6) return fmt(v / 1e6, 2) + " M";
  return fmt(v / 1e3, 2) + " K";
}

std::string report_table(const Report& r) {
  bool top5 = r.num_classes > 10;
  std::ostringstream os;
  os << "| bits | top-1 (%) |" << (top5 ? " top-5 (%) |" : "") << " BitOPs / sample | weights (KiB) |\n";
  os << "| --- | ---: |" << (top5 ? " ---: |" : "") << " ---: | ---: |\n";
  for (auto& row : r.rows) {
    os << "| " << bits_label(row.bits) << " | " << fmt(row.top1, 2) << " |";
    if (top5) os << " " << fmt(row.top5, 2) << " |";
    os << " " << human_ops(row.bitops) << " | " << fmt(row.weight_bytes / 1024, 1) << " |\n";
  }
  return os.str();
}

// One confusion matrix per bit-width (test counts; rows: true class, columns: predicted), for data
// sets of at most 20 classes.
static std::string confusion_tables(const Report& r) {
  std::ostringstream os;
  const int64_t K = r.num_classes;
  if (K > 20) return "";
  for (auto& row : r.rows) {
    if ((int64_t)row.confusion.size() != K * K) continue;
    os << "\n### Confusion at " << bits_label(row.bits) << " (rows: true class, columns: predicted)\n\n| |";
    auto name = [&](int64_t k) { return k < (int64_t)r.class_names.size() ? r.class_names[k] : std::to_string(k); };
    for (int64_t k = 0; k < K; ++k) os << " " << name(k) << " |";
    os << "\n| --- |";
    for (int64_t k = 0; k < K; ++k) os << " ---: |";
    os << "\n";
    for (int64_t t = 0; t < K; ++t) {
      os << "| " << name(t) << " |";
      for (int64_t p = 0; p < K; ++p) os << " " << row.confusion[t * K + p] << " |";
      os << "\n";
    }
  }
  return os.str();
}

void write_report(const Report& r, const std::string& dir) {
  {
    std::ofstream js(dir + "/report.json.tmp");
    js << "{\n  \"name\": \"" << r.name << "\",\n  \"num_classes\": " << r.num_classes << ",\n  \"results\": [\n";
    for (size_t i = 0; i < r.rows.size(); ++i) {
      auto& row = r.rows[i];
      js << "    {\"bits\": " << row.bits << ", \"label\": \"" << bits_label(row.bits) << "\", \"top1\": "
         << fmt(row.top1, 4) << ", \"top5\": " << fmt(row.top5, 4) << ", \"loss\": " << fmt(row.loss, 6)
         << ", \"bitops\": " << fmt(row.bitops, 0) << ", \"macs\": " << fmt(row.macs, 0)
         << ", \"weight_bytes\": " << fmt(row.weight_bytes, 0) << ", \"confusion\": [";
      for (size_t k = 0; k < row.confusion.size(); ++k) js << (k ? ", " : "") << row.confusion[k];
      js << "]}" << (i + 1 < r.rows.size() ? "," : "") << "\n";
    }
    js << "  ]\n}\n";
    AB_CHECK(js.good(), "cannot write ", dir, "/report.json");
  }
  std::rename((dir + "/report.json.tmp").c_str(), (dir + "/report.json").c_str());
  std::ofstream md(dir + "/report.md");
  md << "# " << r.name << "\n\n" << report_table(r);
  md << confusion_tables(r);
  AB_CHECK(md.good(), "cannot write ", dir, "/report.md");
}

void write_plot(const std::vector<Report>& reports, const std::string& path) {
  // A small hand-written SVG: x = bit-width (categorical, descending), y = top-1.
  std::vector<int> xs;
  double lo = 100, hi = 0;
  for (auto& r : reports)
    for (auto& row : r.rows) {
      if (std::find(xs.begin(), xs.end(), row.bits) == xs.end()) xs.push_back(row.bits);
      lo = std::min(lo, row.top1);
      hi = std::max(hi, row.top1);
    }
  std::sort(xs.begin(), xs.end(), [](int a, int b) { return (a == 0 ? 99 : a) > (b == 0 ? 99 : b); });
  lo = std::floor(std::max(0.0, lo - 1));
  hi = std::ceil(std::min(100.0, hi + 1));
  if (hi <= lo) hi = lo + 1;
  const double W = 640, H = 420, L = 70, R = 170, T = 40, B = 60;
  auto px = [&](int b) {
    size_t i = std::find(xs.begin(), xs.end(), b) - xs.begin();
    return L + (xs.size() > 1 ? (W - L - R) * i / (xs.size() - 1) : (W - L - R) / 2);
  };
  auto py = [&](double v) { return T + (H - T - B) * (hi - v) / (hi - lo); };
  const char* colors[] = {"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};
  std::ofstream f(path);
  f << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='13'>\n<rect width='100%' height='100%' fill='white'/>\n";
  f << "<text x='" << W / 2 - 60 << "' y='22' font-size='15'>top-1 accuracy per bit-width</text>\n";
  for (int k = 0; k <= 5; ++k) {
    double v = lo + (hi - lo) * k / 5;
    f << "<line x1='" << L << "' x2='" << W - R << "' y1='" << py(v) << "' y2='" << py(v)
      << "' stroke='#ddd'/><text x='" << L - 8 << "' y='" << py(v) + 4 << "' text-anchor='end'>" << fmt(v, 1)
      << "</text>\n";
  }
  for (int b : xs)
    f << "<text x='" << px(b) << "' y='" << H - B + 20 << "' text-anchor='middle'>" << bits_label(b) << "</text>\n";
  f << "<text x='" << (L + W - R) / 2 << "' y='" << H - 15 << "' text-anchor='middle'>bit-width (weights and activations)</text>\n";
  f << "<text x='18' y='" << (T + H - B) / 2 << "' transform='rotate(-90 18 " << (T + H - B) / 2
    << ")' text-anchor='middle'>top-1 (%)</text>\n";
  for (size_t i = 0; i < reports.size(); ++i) {
    const char* c = colors[i % 7];
    std::string pts;
    for (auto& row : reports[i].rows) pts += fmt(px(row.bits), 1) + "," + fmt(py(row.top1), 1) + " ";
    f << "<polyline fill='none' stroke='" << c << "' stroke-width='2' points='" << pts << "'/>\n";
    for (auto& row : reports[i].rows)
      f << "<circle cx='" << px(row.bits) << "' cy='" << py(row.top1) << "' r='4' fill='" << c << "'/>\n";
    f << "<rect x='" << W - R + 15 << "' y='" << T + 20 * i << "' width='12' height='12' fill='" << c
      << "'/><text x='" << W - R + 32 << "' y='" << T + 20 * i + 11 << "'>" << reports[i].name << "</text>\n";
  }
  f << "</svg>\n";
  AB_CHECK(f.good(), "cannot write the plot ", path);
}

}  // namespace anybit::app
