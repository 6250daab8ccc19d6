// make_video_dataset.cpp - `anybit make-video-dataset`: a synthetic, labelled video set rendered
// from the images of an image dataset (data/video_synth.h says what the two variants are).
//
//   anybit make-video-dataset --variant motion --source datasets/mnist --out datasets/mnist_motion
//   anybit train --data datasets/mnist_motion ...          # the folder layout video.h reads
//
// The options are checked here, each error naming its option; the work is make_video_dataset().
#include <cstdio>

#include "apps/anybit/progress.h"
#include "apps/anybit/run.h"
#include "data/video_encode.h"
#include "data/video_synth.h"
#include "tensor/error.h"

namespace anybit::app {

std::vector<OptionInfo> make_video_dataset_options() {
  return {
      {"variant", "motion", "motion (8 classes: pans, zooms, rotations) or appearance (the source's classes)"},
      {"source", "", "the image dataset to render from (MNIST, CIFAR or an image folder)"},
      {"out", "", "the video set's folder: OUT/{train,test}/<class>/NNNNN.mp4 and OUT/classes.txt"},
      {"train", "1000", "training clips (from the source's train split), >= the number of classes"},
      {"test", "200", "test clips (from the source's test split), >= the number of classes"},
      {"size", "64", "frame width and height in pixels (even)"},
      {"frames", "16", "frames per clip (>= 2)"},
      {"fps", "15", "frames per second written in the files"},
      {"codec", "h264", "h264 (libx264, or mpeg4 where FFmpeg lacks it), mpeg4 or mjpeg"},
      {"quality", "-1", "libx264 CRF 0-51 or mpeg4/mjpeg qscale 1-31, lower is better (-1: 18 / 3)"},
      {"motion_scale", "1", "motion: every pan, zoom and rotation extent times this, in (0, 4] (< 1: harder)"},
      {"seed", "1", "the same seed gives byte-identical files"},
  };
}

int cmd_make_video_dataset(const std::vector<std::string>& args) {
  Config cfg(make_video_dataset_options());
  auto rest = cfg.parse_args(args);
  AB_CHECK(rest.empty(), "make-video-dataset: unexpected argument '", rest.empty() ? "" : rest[0], "'");
  data::VideoSynthOptions opt;
  std::string variant = cfg.str("variant");
  AB_CHECK(variant == "motion" || variant == "appearance", "--variant: expected motion or appearance, got '",
           variant, "'");
  opt.variant = data::parse_synth_variant(variant);
  opt.source = cfg.str("source");
  opt.out = cfg.str("out");
  AB_CHECK(!opt.source.empty(), "--source: required (an image dataset folder, e.g. datasets/mnist)");
  AB_CHECK(!opt.out.empty(), "--out: required (the folder to write the video set into)");
  opt.train_clips = cfg.integer("train");
  opt.test_clips = cfg.integer("test");
  AB_CHECK(opt.train_clips >= 1, "--train: must be >= 1, got ", opt.train_clips);
  AB_CHECK(opt.test_clips >= 1, "--test: must be >= 1, got ", opt.test_clips);
  opt.size = cfg.integer("size");
  AB_CHECK(opt.size >= 16 && opt.size <= 4096 && opt.size % 2 == 0, "--size: must be even and in 16..4096, got ",
           opt.size);
  opt.frames = cfg.integer("frames");
  AB_CHECK(opt.frames >= 2, "--frames: must be >= 2, got ", opt.frames);
  opt.fps = cfg.integer("fps");
  AB_CHECK(opt.fps >= 1 && opt.fps <= 1000, "--fps: must be in 1..1000, got ", opt.fps);
  opt.codec = cfg.str("codec");
  AB_CHECK(opt.codec == "h264" || opt.codec == "mpeg4" || opt.codec == "mjpeg",
           "--codec: expected h264, mpeg4 or mjpeg, got '", opt.codec, "'");
  opt.quality = cfg.integer("quality");
  opt.motion_scale = cfg.number("motion_scale");
  AB_CHECK(opt.motion_scale > 0 && opt.motion_scale <= 4, "--motion-scale: must be in (0, 4], got ", opt.motion_scale);
  int64_t seed = cfg.integer("seed");
  AB_CHECK(seed >= 0, "--seed: must be >= 0, got ", seed);
  opt.seed = (uint64_t)seed;

  std::fprintf(stderr, "make-video-dataset: %s set from %s, %lld train + %lld test clips of %lld frames %lldx%lld, "
               "encoder %s\n", variant.c_str(), opt.source.c_str(), (long long)opt.train_clips,
               (long long)opt.test_clips, (long long)opt.frames, (long long)opt.size, (long long)opt.size,
               data::resolve_video_codec(opt.codec).c_str());
  // The bar counts clips; its rate is in frames per second (rendered and encoded).
  Progress bar("clips", opt.train_clips + opt.test_clips, 100, "frames");
  auto summary = data::make_video_dataset(opt, [&](int64_t done, int64_t total) {
    bar.update(done, done * opt.frames, "");
  });
  std::printf("wrote %lld clips (%lld classes: ", (long long)summary.clips, (long long)summary.classes.size());
  for (size_t c = 0; c < summary.classes.size(); ++c)
    std::printf("%s%s", c ? " " : "", summary.classes[c].c_str());
  std::printf(") to %s: %.1f MB, %s, %.1f s\n", opt.out.c_str(), summary.bytes / 1e6, summary.encoder.c_str(),
              summary.seconds);
  return 0;
}

}  // namespace anybit::app
