// bench_data.cpp - data-loader throughput on the CIFAR-10 JPEG tree: read + decode (stb_image) +
// random crop (32, pad 4) + horizontal flip + to float + normalise, batched into (N, 3, 32, 32).
//
//   scripts/get-data.sh cifar10 /tmp/anybit-cifar10
//   build/bench_data --data /tmp/anybit-cifar10 [--split train] [--workers 2] [--batch 128]
//                    [--epochs 2] [--cache]
//
// Prints images/s for each full epoch (the first includes cold file reads) and, for context, the
// single-thread rate of each stage measured on the first 5000 files. Also checks the batches
// against a loader without workers (same seed: the batches must be identical).
// The figure goes in docs/BENCHMARKS.md, "Data loader".
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "tensor/error.h"

using namespace anybit;
using namespace anybit::data;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  try {
    std::string root = "/tmp/anybit-cifar10", split = "train";
    int workers = 2, epochs = 2;
    int64_t batch = 128;
    bool cache = false;
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
      else AB_FAIL("bench_data: unknown option ", a, " (see the comment at the top of apps/bench_data.cpp)");
    }
    auto ds = open_dataset(root, split);
    std::printf("dataset: %s\n", ds->describe().c_str());
    std::printf("machine: %u hardware threads; loader: %d workers, batch %lld, cache %s\n",
                std::thread::hardware_concurrency(), workers, (long long)batch, cache ? "on" : "off");

    Pipeline pipe;
    pipe.steps = {random_crop(32, 4), random_horizontal_flip()};
    pipe.mean = kCifar10Mean;
    pipe.std = kCifar10Std;
    std::printf("pipeline: %s\n", pipe.describe().c_str());

    // Stage rates on one thread (context for the loader figure).
    {
      auto* folder = dynamic_cast<const ImageFolderDataset*>(ds.get());
      const int64_t n = std::min<int64_t>(5000, ds->size());
      std::vector<float> out(3 * 32 * 32);
      if (folder) {
        double t0 = now();
        size_t bytes = 0;
        std::vector<std::vector<uint8_t>> files(n);
        for (int64_t i = 0; i < n; ++i) bytes += (files[i] = read_file(folder->path(i))).size();
        double t1 = now();
        std::vector<Image> images(n);
        for (int64_t i = 0; i < n; ++i) images[i] = decode_image(files[i], folder->path(i));
        double t2 = now();
        for (int64_t i = 0; i < n; ++i) {
          Generator g(i);
          pipe.to_chw(pipe.augment(images[i], g), out.data());
        }
        double t3 = now();
        std::printf("one thread, %lld files (%.1f KB each): read %.0f/s, decode %.0f/s, augment+normalise %.0f/s\n",
                    (long long)n, bytes / 1024.0 / n, n / (t1 - t0), n / (t2 - t1), n / (t3 - t2));
      }
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
