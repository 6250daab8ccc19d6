// bench_data.cpp - data-loader throughput on a JPEG image-folder tree: read + decode + augment +
// to float + normalise, batched into (N, 3, H, W) float32.
//
//   scripts/get-data.sh cifar10 /tmp/anybit-cifar10
//   build/bench_data --data /tmp/anybit-cifar10 [--split train] [--workers 2] [--batch 128]
//                    [--epochs 2] [--cache] [--decoder turbo|stb] [--min-side N] [--imagenet]
//                    [--stage-files 5000]
//   build/bench_data --make-jpegs OUT --data /tmp/anybit-cifar10 --size 500x375 --count 300
//
// Pipelines: the CIFAR one (random crop 32 pad 4, flip) by default; with --imagenet the ImageNet
// one: resize the shorter side to 256, random 224 crop, flip.
// Decoders: turbo is the library's decode_image (libjpeg-turbo for JPEG); stb is stb_image's JPEG
// decoder, compiled into this program only (the library dropped it: data/image_decode.cpp says
// why), kept here to measure the change in the same run. --min-side N decodes JPEGs at the
// smallest of 1/8, 1/4, 1/2 whose shorter side stays >= N (ImageFolderDataset::Options).
// --make-jpegs writes OUT/train/<class>/<n>.jpg: `count` CIFAR training images upscaled
// (bilinear) to the given size, with a little noise added so that they hold photo-like detail
// (upscaled 32x32 images alone compress to almost nothing), encoded by TurboJPEG at quality 90.
//
// Prints images/s for each full epoch (the first includes cold file reads) and, for context, the
// single-thread rate of each stage measured on the first --stage-files files, every decoder on
// the same files in the same run. Also checks the batches against a loader without workers
// (same seed: the batches must be identical).
// The figures go in docs/BENCHMARKS.md, "Data loader" and "JPEG decoding".
#include <turbojpeg.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "tensor/error.h"
#include "tensor/random.h"

// stb_image's JPEG decoder, private to this program (STB_IMAGE_STATIC): the "before" decoder.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
#include <stb_image.h>
#pragma GCC diagnostic pop

using namespace anybit;
using namespace anybit::data;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The old decode path: stb_image, forced to RGB.
static Image stb_decode(const std::vector<uint8_t>& bytes, const std::string& name) {
  int w = 0, h = 0, comp = 0;
  uint8_t* px = stbi_load_from_memory(bytes.data(), (int)bytes.size(), &w, &h, &comp, 3);
  AB_CHECK(px, "bench_data: stb_image cannot decode ", name, ": ", stbi_failure_reason());
  Image img(h, w, 3);
  img.pixels.assign(px, px + (size_t)w * h * 3);
  stbi_image_free(px);
  return img;
}

// An image folder decoded by stb_image instead of decode_image (same files, same labels).
class StbFolder : public Dataset {
 public:
  explicit StbFolder(std::shared_ptr<const ImageFolderDataset> f) : f_(std::move(f)) {}
  int64_t size() const override { return f_->size(); }
  Example get(int64_t i) const override {
    Example ex;
    ex.label = f_->label(i);
    ex.image = stb_decode(read_file(f_->path(i)), f_->path(i));
    return ex;
  }
  const std::vector<std::string>& class_names() const override { return f_->class_names(); }
  std::string describe() const override { return f_->describe() + ", decoded by stb_image"; }

 private:
  std::shared_ptr<const ImageFolderDataset> f_;
};

// --make-jpegs: see the file comment.
static void make_jpegs(const std::string& out, const std::string& root, int64_t w, int64_t h, int64_t count) {
  auto src = open_dataset(root, "train");
  AB_CHECK(count > 0 && count <= src->size(), "bench_data: --count ", count, " must be in [1, ", src->size(), "]");
  tjhandle tj = tjInitCompress();
  AB_CHECK(tj, "bench_data: tjInitCompress: ", tjGetErrorStr2(nullptr));
  Generator noise(7);
  size_t total = 0;
  for (int64_t i = 0; i < count; ++i) {
    // Spread over the training set: every class appears.
    Example ex = src->get(i * (src->size() / count));
    Image big = resize_bilinear(ex.image, h, w);
    for (auto& p : big.pixels) p = (uint8_t)std::clamp<int>(p + int(noise.below(21)) - 10, 0, 255);
    unsigned char* jpg = nullptr;
    unsigned long size = 0;
    AB_CHECK(tjCompress2(tj, big.pixels.data(), (int)w, 0, (int)h, TJPF_RGB, &jpg, &size, TJSAMP_420, 90, 0) == 0,
             "bench_data: tjCompress2: ", tjGetErrorStr2(tj));
    std::filesystem::path dir = std::filesystem::path(out) / "train" / src->class_names().at(ex.label);
    std::filesystem::create_directories(dir);
    std::string path = (dir / (std::to_string(i) + ".jpg")).string();
    std::ofstream f(path, std::ios::binary);
    f.write((const char*)jpg, (std::streamsize)size);
    tjFree(jpg);
    AB_CHECK(f.good(), "bench_data: cannot write ", path);
    total += size;
  }
  tjDestroy(tj);
  std::printf("wrote %lld JPEGs of %lldx%lld (quality 90, 4:2:0, %.1f KB each on average) to %s/train\n",
              (long long)count, (long long)w, (long long)h, total / 1024.0 / count, out.c_str());
}

int main(int argc, char** argv) {
  try {
    std::string root = "/tmp/anybit-cifar10", split = "train", decoder = "turbo", make_out, size = "500x375";
    int workers = 2, epochs = 2;
    int64_t batch = 128, min_side = 0, stage_files = 5000, count = 300;
    bool cache = false, imagenet = false;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        AB_CHECK(i + 1 < argc, "bench_data: ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--data") root = value();
      else if (a == "--split") split = value();
      else if (a == "--workers") workers = std::stoi(value());
      else if (a == "--batch") batch = std::stoll(value());
      else if (a == "--epochs") epochs = std::stoi(value());
      else if (a == "--cache") cache = true;
      else if (a == "--decoder") decoder = value();
      else if (a == "--min-side") min_side = std::stoll(value());
      else if (a == "--imagenet") imagenet = true;
      else if (a == "--stage-files") stage_files = std::stoll(value());
      else if (a == "--make-jpegs") make_out = value();
      else if (a == "--size") size = value();
      else if (a == "--count") count = std::stoll(value());
      else AB_FAIL("bench_data: unknown option ", a, " (see the comment at the top of apps/bench_data.cpp)");
    }
    if (!make_out.empty()) {
      int64_t w = 0, h = 0;
      AB_CHECK(std::sscanf(size.c_str(), "%ldx%ld", &w, &h) == 2 && w > 0 && h > 0,
               "bench_data: --size must be WIDTHxHEIGHT, got ", size);
      make_jpegs(make_out, root, w, h, count);
      return 0;
    }
    AB_CHECK(decoder == "turbo" || decoder == "stb", "bench_data: --decoder must be turbo or stb, got ", decoder);
    AB_CHECK(decoder == "turbo" || min_side == 0, "bench_data: --min-side needs --decoder turbo");
    // An image folder with the options asked for; anything else (CIFAR binary, MNIST) as found.
    std::shared_ptr<const ImageFolderDataset> folder;
    std::shared_ptr<Dataset> ds;
    if (std::filesystem::is_directory(std::filesystem::path(root) / split)) {
      ImageFolderDataset::Options fo;
      fo.min_short_side = min_side;
      auto f = std::make_shared<ImageFolderDataset>((std::filesystem::path(root) / split).string(), fo);
      folder = f;
      ds = decoder == "stb" ? std::shared_ptr<Dataset>(std::make_shared<StbFolder>(f)) : f;
    } else {
      AB_CHECK(decoder == "turbo" && min_side == 0, "bench_data: --decoder stb and --min-side need an image folder");
      ds = open_dataset(root, split);
    }
    std::printf("dataset: %s\n", ds->describe().c_str());
    std::printf("machine: %u hardware threads; loader: %d workers, batch %lld, cache %s\n",
                std::thread::hardware_concurrency(), workers, (long long)batch, cache ? "on" : "off");

    Pipeline pipe;
    if (imagenet)
      pipe.steps = {resize_shorter_side(256), random_crop(224), random_horizontal_flip()};
    else
      pipe.steps = {random_crop(32, 4), random_horizontal_flip()};
    pipe.mean = kCifar10Mean;
    pipe.std = kCifar10Std;
    std::printf("pipeline: %s\n", pipe.describe().c_str());

    // Stage rates on one thread (context for the loader figure), every decoder on the same files.
    if (folder) {
      const int64_t n = std::min<int64_t>(stage_files, ds->size());
      std::vector<float> out;
      double t0 = now();
      size_t bytes = 0;
      std::vector<std::vector<uint8_t>> files(n);
      for (int64_t i = 0; i < n; ++i) bytes += (files[i] = read_file(folder->path(i))).size();
      double t1 = now();
      std::vector<Image> images(n);
      for (int64_t i = 0; i < n; ++i) images[i] = stb_decode(files[i], folder->path(i));
      double t2 = now();
      for (int64_t i = 0; i < n; ++i) images[i] = decode_image(files[i], folder->path(i));
      double t3 = now();
      std::printf("one thread, %lld files (%.1f KB each, %lldx%lld): read %.0f/s, decode stb_image %.0f/s, "
                  "libjpeg-turbo %.0f/s (%.2fx)",
                  (long long)n, bytes / 1024.0 / n, (long long)images[0].width, (long long)images[0].height,
                  n / (t1 - t0), n / (t2 - t1), n / (t3 - t2), (t2 - t1) / (t3 - t2));
      if (min_side > 0) {
        double t4 = now();
        for (int64_t i = 0; i < n; ++i) images[i] = decode_image(files[i], folder->path(i), min_side);
        double t5 = now();
        std::printf(", libjpeg-turbo min-side %lld (%lldx%lld) %.0f/s (%.2fx stb_image)", (long long)min_side,
                    (long long)images[0].width, (long long)images[0].height, n / (t5 - t4), (t2 - t1) / (t5 - t4));
      }
      double t6 = now();
      for (int64_t i = 0; i < n; ++i) {
        Generator g(i);
        Image a = pipe.augment(images[i], g);
        out.resize(size_t(a.height * a.width * 3));
        pipe.to_chw(a, out.data());
      }
      double t7 = now();
      std::printf(", augment+normalise %.0f/s\n", n / (t7 - t6));
    }

    LoaderOptions opt;
    opt.batch_size = batch;
    opt.num_workers = workers;
    opt.cache = cache;
    opt.seed = 1;
    DataLoader loader(ds, pipe, opt);
    double checksum = 0;
    for (int e = 0; e < epochs; ++e) {
      loader.set_epoch(e);
      Batch b;
      int64_t images = 0;
      double t0 = now();
      while (loader.next(b)) {
        images += b.images.size(0);
        checksum += b.images.data<float>()[0];  // touch the batch like a trainer would
      }
      double dt = now() - t0;
      std::printf("epoch %d: %lld images in %.2f s = %.0f images/s (%lld batches)\n", e, (long long)images, dt,
                  images / dt, (long long)loader.num_batches());
    }

    // Validation: the first batches equal those of a loader that builds them on this thread.
    opt.num_workers = 0;
    DataLoader serial(ds, pipe, opt);
    loader.set_epoch(0);
    Batch a, b;
    for (int k = 0; k < 3 && loader.next(a) && serial.next(b); ++k)
      AB_CHECK(a.images.to_vector<float>() == b.images.to_vector<float>() &&
                   a.labels.to_vector<int64_t>() == b.labels.to_vector<int64_t>(),
               "bench_data: batch ", k, " differs between ", workers, " workers and none");
    std::printf("check: first 3 batches identical with %d workers and with none (checksum %.3f)\n", workers,
                checksum);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data: error: %s\n", e.what());
    return 1;
  }
}
