// bench_video.cpp - video decoding and video loading throughput (docs/BENCHMARKS.md, "Video").
//
//   scripts/get-data.sh egogestar datasets/egogestar
//   build/bench_video --data datasets/egogestar [--repeats 3] [--workers 2] [--frames 8] [--crop 112]
//
// 1. Decoding. Every video of the data set (both splits) decoded from the first frame to the
//    last, sequentially, on one thread, converted to RGB at its native size:
//      anybit   VideoReader::read_all() (open + packet index + decode + RGB), file after file
//      ffmpeg   one `ffmpeg -threads 1` process that decodes all the same files to RGB and
//               discards them (-f null), one output per input, so process start-up is paid once
//    run alternately --repeats times; prints frames/s of each and the ratio anybit / ffmpeg, by
//    wall time and by CPU time (this process's, the ffmpeg child's: getrusage), the second being
//    steadier on a shared machine. The ffmpeg tool also reads each file's header and probes its
//    streams, as VideoReader does.
// 2. Random access. One evaluation clip (--frames TSN segment centres) of every training video,
//    each from a freshly opened reader, decoded at 128x170: frames the decoder output per clip
//    (the targets plus the frames it could not skip), against the frames per video, and ms/clip.
// 3. Loading. The DataLoader on the training split as `anybit train` uses it for video: TSN
//    segments of --frames frames, decoded at a shorter side of 128, TSN's multi-scale crop to
//    --crop, normalised, --workers threads, batches of 16 clips; clips/s over 2 epochs (the first
//    also builds each file's packet index).
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/video.h"
#include "data/video_decode.h"
#include "tensor/error.h"

using namespace anybit;
using namespace anybit::data;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU seconds used by this process (all its threads) and by its finished children: on a shared
// machine the CPU time a decoder needs moves less than the wall time it takes.
static double cpu_self() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static double cpu_children() {
  rusage r;
  getrusage(RUSAGE_CHILDREN, &r);
  return r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

int main(int argc, char** argv) {
  try {
    std::string root = "datasets/egogestar";
    int repeats = 3, workers = 2;
    int64_t frames = 8, crop = 112;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        AB_CHECK(i + 1 < argc, "bench_video: ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--data") root = value();
      else if (a == "--repeats") repeats = std::stoi(value());
      else if (a == "--workers") workers = std::stoi(value());
      else if (a == "--frames") frames = std::stoll(value());
      else if (a == "--crop") crop = std::stoll(value());
      else AB_FAIL("bench_video: unknown option ", a, " (see the comment at the top of apps/bench_video.cpp)");
    }
    VideoOptions vo;
    vo.clip.frames = frames;
    vo.short_side = 128;
    auto train = open_video_dataset(root, "train", vo);
    vo.train = false;
    auto test = open_video_dataset(root, "test", vo);
    std::vector<std::string> files;
    for (auto* ds : {train.get(), test.get()})
      for (int64_t i = 0; i < ds->size(); ++i) files.push_back(ds->path(i));
    std::printf("bench_video: %zu videos of %s\n", files.size(), root.c_str());

    // ---- 1. decoding --------------------------------------------------------------------------
    std::string cmd = "ffmpeg -hide_banner -v error -nostdin -threads 1";
    for (auto& f : files) cmd += " -threads 1 -i '" + f + "'";
    for (size_t i = 0; i < files.size(); ++i)
      cmd += " -map " + std::to_string(i) + ":v:0 -threads 1 -fps_mode passthrough -pix_fmt rgb24 -f null -";
    int64_t total_frames = 0;
    std::vector<double> ours, theirs, ours_cpu, theirs_cpu;
    for (int r = 0; r < repeats; ++r) {
      double t0 = now(), c0 = cpu_self();
      int64_t n = 0;
      for (auto& f : files) {
        VideoReader v(f);
        n += (int64_t)v.read_all().size();
      }
      ours.push_back(n / (now() - t0));
      ours_cpu.push_back(n / (cpu_self() - c0));
      total_frames = n;
      t0 = now();
      c0 = cpu_children();
      AB_CHECK(std::system(cmd.c_str()) == 0, "bench_video: the ffmpeg tool failed (is it installed?)");
      theirs.push_back(n / (now() - t0));
      theirs_cpu.push_back(n / (cpu_children() - c0));
      std::printf("  round %d: anybit %.0f frames/s (%.0f per CPU second), ffmpeg -threads 1 %.0f frames/s (%.0f per "
                  "CPU second)\n",
                  r + 1, ours.back(), ours_cpu.back(), theirs.back(), theirs_cpu.back());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    double mo = median(ours), mt = median(theirs), co = median(ours_cpu), ct = median(theirs_cpu);
    std::printf("decoding %ld frames to RGB, 1 thread, median of %d: anybit %.0f frames/s, ffmpeg %.0f frames/s, "
                "ratio %.2f; per CPU second %.0f vs %.0f, ratio %.2f\n",
                (long)total_frames, repeats, mo, mt, mo / mt, co, ct, co / ct);

    // ---- 2. random access: what one clip costs --------------------------------------------------
    // Frames the decoder gives out (targets, and frames it could not skip on the way) per clip,
    // and the time per clip, over one evaluation clip of every training video.
    {
      int64_t out_frames = 0, video_frames = 0;
      double t0 = now();
      for (int64_t i = 0; i < train->size(); ++i) {
        VideoReader v(train->path(i));
        v.read(sample_clip(v.num_frames(), vo.clip, nullptr), 128, 170);
        out_frames += v.frames_decoded();
        video_frames += v.num_frames();
      }
      std::printf("random access: %ld-frame clips, 1 thread: %.1f frames decoded per clip (videos average %.1f "
                  "frames), %.1f ms per clip\n",
                  (long)frames, double(out_frames) / train->size(), double(video_frames) / train->size(),
                  1e3 * (now() - t0) / train->size());
    }

    // ---- 3. loading ---------------------------------------------------------------------------
    Pipeline pipe;
    pipe.steps.push_back(multi_scale_crop(crop));
    pipe.mean = kImageNetMean;
    pipe.std = kImageNetStd;
    LoaderOptions lo;
    lo.batch_size = 16;
    lo.num_workers = workers;
    lo.seed = 1;
    DataLoader loader(train, pipe, lo);
    for (int epoch = 0; epoch < 2; ++epoch) {
      loader.set_epoch(epoch);
      Batch b;
      int64_t clips = 0;
      double t0 = now();
      while (loader.next(b)) clips += b.labels.size(0);
      std::printf("loader epoch %d: %ld clips of %ld frames at %ldx%ld, %d workers: %.1f clips/s (%.0f frames/s)\n",
                  epoch + 1, (long)clips, (long)frames, (long)crop, (long)crop, workers, clips / (now() - t0),
                  clips * frames / (now() - t0));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_video: error: %s\n", e.what());
    return 1;
  }
}
