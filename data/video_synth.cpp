// video_synth.cpp - rendering and writing the synthetic video sets (video_synth.h says what they
// are and why the motion set needs temporal order).
//
// The pieces, in the order a clip goes through them:
//   make_background   the clip's textured background, drawn once
//   Pose / trajectory one pose (centre, scale, angle) per frame
//   render_frame      background + the source image under one pose (inverse mapping, bilinear)
//   write_split       one OpenMP task per clip: its generator, its source image, render, encode
#include "data/video_synth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "data/video_encode.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace anybit::data {

namespace {

constexpr double kPi = 3.14159265358979323846;

double uniform(Generator& gen, double lo, double hi) { return lo + (hi - lo) * gen.uniform(); }

uint8_t to_byte(double v) { return (uint8_t)std::lround(std::clamp(v, 0.0, 255.0)); }

// ---- background -----------------------------------------------------------------------------
// A smooth colour field: a (kGrid + 1) x (kGrid + 1) lattice of random colours around one base
// colour, bilinearly interpolated over the frame, plus fixed per-pixel noise. Values stay in
// [0, 160]: darker than the image's colour (>= 190), so a grey source stays visible.
Image make_background(int64_t size, Generator& gen) {
  constexpr int kGrid = 4;
  double base[3], lattice[kGrid + 1][kGrid + 1][3];
  for (double& b : base) b = uniform(gen, 20, 110);
  for (auto& row : lattice)
    for (auto& cell : row)
      for (int c = 0; c < 3; ++c) cell[c] = std::clamp(base[c] + uniform(gen, -40, 40), 0.0, 150.0);
  Image bg(size, size, 3);
  for (int64_t y = 0; y < size; ++y) {
    double gy = (y + 0.5) / size * kGrid;
    int iy = std::min((int)gy, kGrid - 1);
    double fy = gy - iy;
    for (int64_t x = 0; x < size; ++x) {
      double gx = (x + 0.5) / size * kGrid;
      int ix = std::min((int)gx, kGrid - 1);
      double fx = gx - ix;
      for (int c = 0; c < 3; ++c) {
        double v = (1 - fy) * ((1 - fx) * lattice[iy][ix][c] + fx * lattice[iy][ix + 1][c]) +
                   fy * ((1 - fx) * lattice[iy + 1][ix][c] + fx * lattice[iy + 1][ix + 1][c]);
        bg.at(y, x, c) = to_byte(std::clamp(v + uniform(gen, -12, 12), 0.0, 160.0));
      }
    }
  }
  return bg;
}

// ---- poses ----------------------------------------------------------------------------------
// Where the source image is in a frame: its centre (frame pixels), its scale (frame pixels per
// source pixel) and its angle (radians, clockwise on screen, since y points down).
struct Pose {
  double cx = 0, cy = 0, scale = 1, angle = 0;
};

// Frame f of F at time t in [-1/2, 1/2]; a one-frame clip sits at t = 0.
double frame_time(int64_t f, int64_t frames) { return frames > 1 ? (double)f / (frames - 1) - 0.5 : 0.0; }

// The image's scale at the middle of a clip: 0.55 of the frame for the longer source side.
double base_scale(const Image& src, int64_t size) { return 0.55 * size / std::max(src.height, src.width); }

// ---- rendering ------------------------------------------------------------------------------
// One frame: background, with the source image composited under `pose`.
// Inverse mapping: frame pixel (x, y) has its centre at (x + 1/2, y + 1/2); relative to the
// image's centre that is d = (dx, dy). The forward map takes a source point p (relative to the
// source's centre) to d = scale * R(angle) p, so p = R(-angle) d / scale:
//   u = ( cos a dx + sin a dy) / scale + w / 2        (source x, continuous: pixel j is [j, j+1))
//   v = (-sin a dx + cos a dy) / scale + h / 2
// and the source is sampled bilinearly around (u - 1/2, v - 1/2), pixels outside it counting as
// transparent. A grey source is the alpha; an RGB source is opaque where it covers the pixel.
Image render_frame(const Image& src, const Image& background, const double colour[3], const Pose& pose) {
  const int64_t size = background.height, h = src.height, w = src.width;
  const bool grey = src.channels == 1;
  const double ca = std::cos(pose.angle), sa = std::sin(pose.angle), inv = 1.0 / pose.scale;
  Image frame = background;
  for (int64_t y = 0; y < size; ++y) {
    for (int64_t x = 0; x < size; ++x) {
      double dx = x + 0.5 - pose.cx, dy = y + 0.5 - pose.cy;
      double u = (ca * dx + sa * dy) * inv + w * 0.5 - 0.5;
      double v = (-sa * dx + ca * dy) * inv + h * 0.5 - 0.5;
      if (u <= -1 || v <= -1 || u >= w || v >= h) continue;  // no source pixel within reach
      int64_t x0 = (int64_t)std::floor(u), y0 = (int64_t)std::floor(v);
      double fx = u - x0, fy = v - y0;
      // alpha: how much of the pixel the image covers; premult: its colour times alpha.
      double alpha = 0, premult[3] = {0, 0, 0};
      for (int k = 0; k < 4; ++k) {
        int64_t sx = x0 + (k & 1), sy = y0 + (k >> 1);
        if (sx < 0 || sy < 0 || sx >= w || sy >= h) continue;
        double weight = ((k & 1) ? fx : 1 - fx) * ((k >> 1) ? fy : 1 - fy);
        if (grey) {
          alpha += weight * src.at(sy, sx, 0) / 255.0;
        } else {
          alpha += weight;
          for (int c = 0; c < 3; ++c) premult[c] += weight * src.at(sy, sx, c);
        }
      }
      if (grey)
        for (int c = 0; c < 3; ++c) premult[c] = alpha * colour[c];
      for (int c = 0; c < 3; ++c) frame.at(y, x, c) = to_byte(frame.at(y, x, c) * (1 - alpha) + premult[c]);
    }
  }
  return frame;
}

// Background and colour are drawn first, then the poses; see video_synth.h for the order.
std::vector<Image> render_poses(const Image& src, const std::vector<Pose>& poses, const Image& background,
                                const double colour[3]) {
  std::vector<Image> frames;
  frames.reserve(poses.size());
  for (const Pose& p : poses) frames.push_back(render_frame(src, background, colour, p));
  return frames;
}

void check_render_args(const Image& src, int64_t size, int64_t frames) {
  AB_CHECK(src.channels == 1 || src.channels == 3, "synthetic video: the source image has ", src.channels,
           " channels (expected 1 or 3)");
  AB_CHECK(src.height > 0 && src.width > 0 && (int64_t)src.pixels.size() == src.height * src.width * src.channels,
           "synthetic video: the source image is empty or its pixel count does not match its shape");
  AB_CHECK(size >= 8, "synthetic video: frame size must be >= 8, got ", size);
  AB_CHECK(frames >= 1, "synthetic video: frames per clip must be >= 1, got ", frames);
}

// The background, and the image's colour when the source is grey (drawn for RGB sources too, so
// the generator advances alike).
Image draw_scene(int64_t size, Generator& gen, double colour[3]) {
  Image bg = make_background(size, gen);
  for (int c = 0; c < 3; ++c) colour[c] = uniform(gen, 190, 255);
  return bg;
}

// ---- writing --------------------------------------------------------------------------------

bool valid_folder_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

int64_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : (int64_t)n;
}

// What one split needs to render its clips.
struct SplitJob {
  int split = 0;             // 0: train, 1: test (clip_seed)
  std::string name;          // "train", "test"
  const Dataset* source = nullptr;
  int64_t clips = 0;
  // Appearance: the source images of each class (indexed by source label).
  std::vector<std::vector<int64_t>> by_class;
};

// The source labels of every image, without decoding image files when the dataset can say.
std::vector<int64_t> source_labels(const Dataset& ds) {
  std::vector<int64_t> labels(ds.size());
  if (auto folder = dynamic_cast<const ImageFolderDataset*>(&ds)) {
    for (int64_t i = 0; i < ds.size(); ++i) labels[i] = folder->label(i);
  } else {
    for (int64_t i = 0; i < ds.size(); ++i) labels[i] = ds.get(i).label;
  }
  return labels;
}

}  // namespace

SynthVariant parse_synth_variant(const std::string& name) {
  if (name == "motion") return SynthVariant::Motion;
  if (name == "appearance") return SynthVariant::Appearance;
  AB_FAIL("synthetic video: variant '", name, "' is not one of motion, appearance");
}

const std::vector<std::string>& motion_class_names() {
  static const std::vector<std::string> names = {"pan_down",   "pan_left",  "pan_right", "pan_up",
                                                 "rotate_ccw", "rotate_cw", "zoom_in",   "zoom_out"};
  return names;
}

uint64_t clip_seed(uint64_t seed, int split, int64_t index) {
  auto mix = [](uint64_t z) {  // splitmix64's finaliser
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed) ^ (uint64_t)split) ^ (uint64_t)index);
}

std::vector<Image> render_motion_clip(const Image& src, Motion motion, int64_t size, int64_t frames, Generator& gen,
                                      double extent) {
  check_render_args(src, size, frames);
  AB_CHECK(extent > 0 && extent <= 4, "render_motion_clip: the motion scale must be in (0, 4], got ", extent);
  double colour[3];
  Image bg = draw_scene(size, gen, colour);
  // The pose at the clip's middle (t = 0), the same distribution for every class.
  Pose mid;
  mid.cx = uniform(gen, 0.35, 0.65) * size;
  mid.cy = uniform(gen, 0.35, 0.65) * size;
  mid.scale = base_scale(src, size) * std::exp(uniform(gen, -0.2, 0.2));
  mid.angle = uniform(gen, -kPi, kPi);
  // The extents, all drawn whatever the class.
  double pan = uniform(gen, 0.25, 0.4) * size * extent, zoom = uniform(gen, 0.5, 0.9) * extent,
         turn = uniform(gen, 0.5, 0.8) * kPi * extent;
  std::vector<Pose> poses(frames, mid);
  for (int64_t f = 0; f < frames; ++f) {
    double t = frame_time(f, frames);
    Pose& p = poses[f];
    switch (motion) {
      case Motion::PanRight: p.cx += t * pan; break;
      case Motion::PanLeft: p.cx -= t * pan; break;
      case Motion::PanDown: p.cy += t * pan; break;  // y points down
      case Motion::PanUp: p.cy -= t * pan; break;
      case Motion::ZoomIn: p.scale *= std::exp(t * zoom); break;
      case Motion::ZoomOut: p.scale *= std::exp(-t * zoom); break;
      case Motion::RotateCw: p.angle += t * turn; break;  // clockwise on screen (y down)
      case Motion::RotateCcw: p.angle -= t * turn; break;
    }
  }
  return render_poses(src, poses, bg, colour);
}

std::vector<Image> render_appearance_clip(const Image& src, int64_t size, int64_t frames, Generator& gen) {
  check_render_args(src, size, frames);
  double colour[3];
  Image bg = draw_scene(size, gen, colour);
  Pose mid;
  mid.cx = uniform(gen, 0.35, 0.65) * size;
  mid.cy = uniform(gen, 0.35, 0.65) * size;
  mid.scale = base_scale(src, size) * std::exp(uniform(gen, -0.2, 0.2));
  mid.angle = uniform(gen, -15, 15) * kPi / 180;
  // A slow drift through the middle pose, in a random direction.
  double direction = uniform(gen, 0, 2 * kPi), drift = uniform(gen, 0.05, 0.15) * size;
  std::vector<Pose> poses(frames, mid);
  for (int64_t f = 0; f < frames; ++f) {
    double t = frame_time(f, frames);
    poses[f].cx += t * drift * std::cos(direction);
    poses[f].cy += t * drift * std::sin(direction);
  }
  return render_poses(src, poses, bg, colour);
}

VideoSynthSummary make_video_dataset(const VideoSynthOptions& opt, const SynthProgress& progress) {
  AB_CHECK(!opt.source.empty(), "synthetic video: no source dataset folder given");
  std::shared_ptr<Dataset> train = open_dataset(opt.source, "train");
  std::shared_ptr<Dataset> test = open_dataset(opt.source, "test");
  return make_video_dataset(opt, *train, *test, progress);
}

VideoSynthSummary make_video_dataset(const VideoSynthOptions& opt, const Dataset& train_source,
                                     const Dataset& test_source, const SynthProgress& progress) {
  auto start = std::chrono::steady_clock::now();
  const bool motion = opt.variant == SynthVariant::Motion;
  AB_CHECK(opt.size >= 16 && opt.size <= 4096 && opt.size % 2 == 0, "synthetic video: size must be even and in ",
           "16..4096, got ", opt.size);
  AB_CHECK(opt.frames >= 2, "synthetic video: frames must be >= 2 (the motion is in their order), got ", opt.frames);
  AB_CHECK(!opt.out.empty(), "synthetic video: no output folder given");
  AB_CHECK(train_source.size() > 0 && test_source.size() > 0, "synthetic video: the source dataset has an empty ",
           train_source.size() == 0 ? "train" : "test", " split");
  // The encoder is resolved (and a bad codec name reported) before anything is written.
  VideoSynthSummary summary;
  summary.encoder = resolve_video_codec(opt.codec);

  // Class names: the motions, or the source's classes. classes.txt lists them sorted, since the
  // folder loader numbers the class folders in sorted order.
  std::vector<std::string> names = motion ? motion_class_names() : train_source.class_names();
  AB_CHECK(motion || test_source.class_names() == names, "synthetic video: the source's train and test splits ",
           "name different classes");
  for (auto& n : names)
    AB_CHECK(valid_folder_name(n), "synthetic video: class name '", n, "' cannot be a folder name");
  summary.classes = names;
  std::sort(summary.classes.begin(), summary.classes.end());
  AB_CHECK(std::adjacent_find(summary.classes.begin(), summary.classes.end()) == summary.classes.end(),
           "synthetic video: the source has two classes of one name");
  const int64_t num_classes = (int64_t)names.size();
  AB_CHECK(opt.train_clips >= num_classes && opt.test_clips >= num_classes, "synthetic video: --train and --test ",
           "must each be at least the number of classes (", num_classes,
           ") so that every class folder gets a clip; got ",
           opt.train_clips, " and ", opt.test_clips);

  SplitJob jobs[2];
  jobs[0] = {0, "train", &train_source, opt.train_clips, {}};
  jobs[1] = {1, "test", &test_source, opt.test_clips, {}};
  for (SplitJob& job : jobs) {
    AB_CHECK(!fs::exists(fs::path(opt.out) / job.name), "synthetic video: ", (fs::path(opt.out) / job.name).string(),
             " already exists: remove it or choose another output folder");
    if (motion) continue;
    job.by_class.assign(num_classes, {});
    std::vector<int64_t> labels = source_labels(*job.source);
    for (int64_t i = 0; i < (int64_t)labels.size(); ++i) {
      AB_CHECK(labels[i] >= 0 && labels[i] < num_classes, "synthetic video: source image ", i, " has label ",
               labels[i], " outside 0..", num_classes - 1);
      job.by_class[labels[i]].push_back(i);
    }
    for (int64_t c = 0; c < num_classes; ++c)
      AB_CHECK(!job.by_class[c].empty(), "synthetic video: the source's ", job.name, " split has no image of class ",
               names[c]);
  }

  // The folders and classes.txt.
  for (SplitJob& job : jobs)
    for (auto& n : summary.classes) fs::create_directories(fs::path(opt.out) / job.name / n);
  {
    std::string path = (fs::path(opt.out) / "classes.txt").string();
    std::ofstream out(path);
    for (auto& n : summary.classes) out << n << "\n";
    out.close();
    AB_CHECK(out, "synthetic video: cannot write ", path);
  }

  VideoWriterOptions wopt;
  wopt.width = wopt.height = opt.size;
  wopt.fps = opt.fps;
  wopt.codec = opt.codec;
  wopt.gop = opt.frames;  // one key frame per clip: the clips are short
  wopt.quality = opt.quality;
  const int64_t total = opt.train_clips + opt.test_clips;
  std::atomic<int64_t> bytes{0};
  int64_t done = 0;
  std::exception_ptr failure;
  std::mutex mu;  // guards done, failure and the progress call

  for (SplitJob& job : jobs) {
    // One clip per iteration; dynamic scheduling since clips cost alike but threads may not.
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < job.clips; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (failure) continue;  // an earlier clip failed: skip the rest
      }
      try {
        Generator gen(clip_seed(opt.seed, job.split, i));
        int64_t source_class = i % num_classes;  // the label in the source's (or the motions') order
        int64_t index = motion ? (int64_t)gen.below(job.source->size())
                               : job.by_class[source_class][gen.below(job.by_class[source_class].size())];
        Image src = job.source->get(index).image;
        std::vector<Image> frames = motion ? render_motion_clip(src, (Motion)source_class, opt.size, opt.frames, gen, opt.motion_scale)
                                           : render_appearance_clip(src, opt.size, opt.frames, gen);
        char file[32];
        std::snprintf(file, sizeof file, "%05lld.mp4", (long long)i);
        std::string path = (fs::path(opt.out) / job.name / names[source_class] / file).string();
        VideoWriter writer(path, wopt);
        for (const Image& f : frames) writer.write(f);
        writer.finish();
        bytes += file_size(path);
        std::lock_guard<std::mutex> lock(mu);
        ++done;
        if (progress) progress(done, total);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }
  summary.clips = total;
  summary.bytes = bytes;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace anybit::data
