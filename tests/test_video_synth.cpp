// test_video_synth.cpp - writing video (VideoWriter) and the synthetic video sets (video_synth.h).
//
//   round trip      frames written by VideoWriter, read back by VideoReader: count, size, pixels
//                   within a lossy codec's error, for each codec in a different container;
//                   byte-identical files from identical frames; the errors
//   motion set      a tiny set opens with open_video_dataset, has the 8 motions as labels; the
//                   same seed gives byte-identical files, another seed other files
//   motion is real  decoded pan clips: the image's centre of mass moves the named way; a
//                   pan_left clip is exactly a pan_right clip played backwards
//   command         `anybit make-video-dataset --help`; bad options fail, naming the option
//
// The source images are MNIST's when the shared copy is there ($ANYBIT_SHARED_DATASETS/mnist or
// /work/shared/datasets/mnist), else a stand-in set of random strokes made here (the test says so).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "data/video.h"
#include "data/video_decode.h"
#include "data/video_encode.h"
#include "data/video_synth.h"
#include "tests/helpers.h"
#include "tests/skips.h"

using namespace anybit;
using namespace anybit::data;
namespace fs = std::filesystem;

namespace {

// A scratch folder per test, removed at the end.
struct SynthTempDir : test::ScratchDir {
  SynthTempDir() : test::ScratchDir("anybit_synth") {}
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Frame i of a smooth moving test picture: colour gradients plus a bright square moving right.
// Smooth content keeps a lossy codec's error small and predictable.
Image test_frame(int64_t i, int64_t h, int64_t w) {
  Image img(h, w, 3);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      bool square = x >= 4 + 2 * i && x < 14 + 2 * i && y >= 8 && y < 18;
      img.at(y, x, 0) = square ? 240 : uint8_t(40 + 3 * x);
      img.at(y, x, 1) = square ? 230 : uint8_t(30 + 4 * y);
      img.at(y, x, 2) = square ? 220 : uint8_t(120 + i * 5);
    }
  return img;
}

double mean_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.pixels.size() == b.pixels.size());
  double sum = 0;
  for (size_t k = 0; k < a.pixels.size(); ++k) sum += std::abs((int)a.pixels[k] - (int)b.pixels[k]);
  return sum / a.pixels.size();
}

// Where the shared MNIST copy is, or "" (as tests/test_data.cpp looks for it).
std::string mnist_dir() {
  const char* env = std::getenv("ANYBIT_SHARED_DATASETS");
  std::string dir = std::string(env ? env : "/work/shared/datasets") + "/mnist";
  if (fs::exists(dir + "/train-images-idx3-ubyte.gz") || fs::exists(dir + "/train-images-idx3-ubyte")) return dir;
  return "";
}

// A stand-in for MNIST: 28x28 grey images, each a few bright random strokes on black.
class StrokeDataset : public Dataset {
 public:
  explicit StrokeDataset(uint64_t seed) {
    for (int i = 0; i < 20; ++i) {
      Image img(28, 28, 1);
      Generator g(seed * 100 + i);
      for (int s = 0; s < 3; ++s) {
        double x = 6 + g.uniform() * 16, y = 6 + g.uniform() * 16, a = g.uniform() * 6.283;
        for (int step = 0; step < 12; ++step, x += std::cos(a), y += std::sin(a))
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
              int px = (int)x + dx, py = (int)y + dy;
              if (px >= 0 && py >= 0 && px < 28 && py < 28) img.at(py, px, 0) = 255;
            }
      }
      images_.push_back(img);
    }
  }
  int64_t size() const override { return (int64_t)images_.size(); }
  Example get(int64_t index) const override {
    Example e;
    e.image = images_.at(index);
    e.label = index % 10;
    return e;
  }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string describe() const override { return "stroke images"; }

 private:
  std::vector<Image> images_;
  std::vector<std::string> names_ = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
};

// The source splits for the synthetic sets: MNIST when available, else the stand-in.
struct Sources {
  std::shared_ptr<Dataset> train, test;
  Sources() {
    std::string dir = mnist_dir();
    if (!dir.empty()) {
      train = open_dataset(dir, "train");
      test = open_dataset(dir, "test");
    } else {
      WARN("no MNIST at $ANYBIT_SHARED_DATASETS/mnist or /work/shared/datasets/mnist: the synthetic sets are "
           "rendered from random strokes instead");
      train = std::make_shared<StrokeDataset>(1);
      test = std::make_shared<StrokeDataset>(2);
    }
  }
};

VideoSynthOptions tiny_motion_options(const std::string& out, uint64_t seed) {
  VideoSynthOptions opt;
  opt.variant = SynthVariant::Motion;
  opt.out = out;
  opt.train_clips = 16;
  opt.test_clips = 8;
  opt.size = 32;
  opt.frames = 8;
  opt.seed = seed;
  return opt;
}

// Every video file under root, relative path -> bytes.
std::map<std::string, std::string> video_files(const std::string& root) {
  std::map<std::string, std::string> files;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file() && e.path().extension() == ".mp4")
      files[fs::relative(e.path(), root).string()] = read_bytes(e.path().string());
  return files;
}

// The centre of mass (x, y) of the bright pixels of a frame: the background stays <= 160 and a
// grey source's strokes are >= 190 where opaque, so weights max(0, luma - 170) see the image only.
std::pair<double, double> bright_centre(const Image& f) {
  double sum = 0, sx = 0, sy = 0;
  for (int64_t y = 0; y < f.height; ++y)
    for (int64_t x = 0; x < f.width; ++x) {
      double luma = (f.at(y, x, 0) + f.at(y, x, 1) + f.at(y, x, 2)) / 3.0;
      double w = std::max(0.0, luma - 170);
      sum += w;
      sx += w * (x + 0.5);
      sy += w * (y + 0.5);
    }
  REQUIRE(sum > 0);
  return {sx / sum, sy / sum};
}

}  // namespace

TEST_CASE("VideoWriter round trip through VideoReader, per codec and container", "[data][video][ffmpeg]") {
  SynthTempDir tmp;
  const int64_t h = 32, w = 48, n = 12;
  std::vector<Image> frames;
  for (int64_t i = 0; i < n; ++i) frames.push_back(test_frame(i, h, w));
  struct Case {
    std::string codec, file, decoder;
  };
  std::string h264 = resolve_video_codec("h264") == "libx264" ? "h264" : "mpeg4";
  for (const Case& c : {Case{"h264", "a.mp4", h264}, Case{"mpeg4", "b.mkv", "mpeg4"}, Case{"mjpeg", "c.avi", "mjpeg"}}) {
    INFO(c.codec << " in " << c.file);
    VideoWriterOptions opt;
    opt.width = w;
    opt.height = h;
    opt.fps = 12;
    opt.codec = c.codec;
    opt.gop = 5;
    {
      VideoWriter writer(tmp / c.file, opt);
      for (auto& f : frames) writer.write(f);
      writer.finish();
      REQUIRE(writer.frames_written() == n);
    }
    VideoReader reader(tmp / c.file);
    REQUIRE(reader.codec_name() == c.decoder);
    REQUIRE(reader.num_frames() == n);
    REQUIRE(reader.width() == w);
    REQUIRE(reader.height() == h);
    REQUIRE(reader.average_fps() == Approx(12.0).epsilon(0.01));  // Matroska keeps milliseconds
    std::vector<Image> back = reader.read_all();
    REQUIRE((int64_t)back.size() == n);
    // Lossy codecs at their default quality (x264 CRF 18, qscale 3) on this smooth picture: a mean
    // absolute error of 1.8-2.4 levels out of 255 per frame with FFmpeg 5.1 (4:2:0 chroma blurs
    // the square's edges most). The bound, 6, leaves room for other encoder versions; a swapped
    // or shifted frame is off by far more (the square moves 2 pixels a frame).
    for (int64_t i = 0; i < n; ++i) {
      double err = mean_abs_diff(back[i], frames[i]);
      INFO("frame " << i << ": mean |decoded - written| = " << err);
      REQUIRE(err < 6.0);
    }
    // The same frames give the same bytes.
    {
      VideoWriter again(tmp / ("again_" + c.file), opt);
      for (auto& f : frames) again.write(f);
      again.finish();
    }
    REQUIRE(read_bytes(tmp / c.file) == read_bytes(tmp / ("again_" + c.file)));
  }
}

TEST_CASE("VideoWriter errors name the file; an unfinished file is removed", "[data][video][ffmpeg]") {
  SynthTempDir tmp;
  VideoWriterOptions opt;
  opt.width = 32;
  opt.height = 32;
  REQUIRE_THROWS_WITH(VideoWriter(tmp / "x.webm", opt), Catch::Contains("x.webm") && Catch::Contains(".mp4"));
  opt.width = 33;
  REQUIRE_THROWS_WITH(VideoWriter(tmp / "odd.mp4", opt), Catch::Contains("odd.mp4") && Catch::Contains("even"));
  opt.width = 32;
  opt.codec = "vp9";
  REQUIRE_THROWS_WITH(VideoWriter(tmp / "c.mp4", opt), Catch::Contains("vp9"));
  opt.codec = "h264";
  REQUIRE_THROWS_WITH(VideoWriter("/nonexistent/dir/v.mp4", opt), Catch::Contains("/nonexistent/dir/v.mp4"));
  {
    VideoWriter writer(tmp / "partial.mp4", opt);
    REQUIRE_THROWS_WITH(writer.write(Image(16, 16, 3)), Catch::Contains("partial.mp4") && Catch::Contains("32x32x3"));
    REQUIRE_THROWS_WITH(writer.finish(), Catch::Contains("before any frame"));
    writer.write(test_frame(0, 32, 32));
    REQUIRE(fs::exists(tmp / "partial.mp4"));
  }
  REQUIRE_FALSE(fs::exists(tmp / "partial.mp4"));  // destroyed before finish(): deleted
}

TEST_CASE("synthetic motion set: layout, labels, same seed same bytes", "[data][video][ffmpeg]") {
  Sources src;
  SynthTempDir tmp;
  std::vector<int64_t> seen;
  auto summary = make_video_dataset(tiny_motion_options(tmp / "a", 1), *src.train, *src.test,
                                    [&](int64_t done, int64_t total) { seen.push_back(done); });
  REQUIRE(summary.clips == 24);
  REQUIRE(summary.classes == motion_class_names());
  REQUIRE(seen.size() == 24);
  REQUIRE(seen.back() == 24);

  // The layout is the one the video loader reads, labels in classes.txt's order.
  std::ifstream classes(tmp / "a/classes.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(classes, line);) lines.push_back(line);
  REQUIRE(lines == motion_class_names());
  VideoOptions vopt;
  vopt.clip.frames = 4;
  vopt.train = false;
  auto train = open_video_dataset(tmp / "a", "train", vopt);
  auto test = open_video_dataset(tmp / "a", "test", vopt);
  REQUIRE(train->size() == 16);
  REQUIRE(test->size() == 8);
  REQUIRE(train->class_names() == motion_class_names());
  REQUIRE(test->class_names() == motion_class_names());
  for (int64_t i = 0; i < train->size(); ++i)
    REQUIRE(fs::path(train->path(i)).parent_path().filename() == train->class_names()[train->label(i)]);
  Example ex = test->get(0);
  REQUIRE(ex.frames.size() == 4);
  REQUIRE(ex.frames[0].height == 32);
  REQUIRE(ex.frames[0].width == 32);
  REQUIRE(ex.frames[0].channels == 3);
  VideoReader clip(train->path(0));
  REQUIRE(clip.num_frames() == 8);

  // Same seed: byte-identical files. Another seed: every clip differs.
  make_video_dataset(tiny_motion_options(tmp / "b", 1), *src.train, *src.test);
  make_video_dataset(tiny_motion_options(tmp / "c", 2), *src.train, *src.test);
  auto a = video_files(tmp / "a"), b = video_files(tmp / "b"), c = video_files(tmp / "c");
  REQUIRE(a.size() == 24);
  REQUIRE(a == b);
  REQUIRE(c.size() == 24);
  for (auto& [name, bytes] : a) {
    INFO(name);
    REQUIRE(c.at(name) != bytes);
  }

  // The output folder is not overwritten; too few clips for the classes is an error.
  REQUIRE_THROWS_WITH(make_video_dataset(tiny_motion_options(tmp / "a", 3), *src.train, *src.test),
                      Catch::Contains("already exists"));
  VideoSynthOptions few = tiny_motion_options(tmp / "d", 1);
  few.test_clips = 7;
  REQUIRE_THROWS_WITH(make_video_dataset(few, *src.train, *src.test), Catch::Contains("--test"));
}

TEST_CASE("synthetic motion set: pans move the image the named way; pan_left is pan_right reversed",
          "[data][video][ffmpeg]") {
  Sources src;
  SynthTempDir tmp;
  VideoSynthOptions opt = tiny_motion_options(tmp / "m", 7);
  make_video_dataset(opt, *src.train, *src.test);
  // Every pan clip of both splits: the bright centre's move from the first to the last frame.
  // A pan covers 0.25-0.4 of the frame (8-12.8 pixels at size 32); the image may leave the frame
  // in part, which shortens its centre's path, so the check asks for half the smallest (MNIST,
  // seed 7: 7.9 to 12.7 pixels).
  struct Pan {
    std::string name;
    double dx, dy;  // the expected direction
  };
  int checked = 0;
  for (const Pan& pan : {Pan{"pan_right", 1, 0}, Pan{"pan_left", -1, 0}, Pan{"pan_down", 0, 1}, Pan{"pan_up", 0, -1}})
    for (const std::string split : {"train", "test"})
      for (auto& e : fs::directory_iterator(fs::path(tmp / "m") / split / pan.name)) {
        VideoReader video(e.path().string());
        std::vector<Image> frames = video.read_all();
        REQUIRE(frames.size() == 8);
        auto first = bright_centre(frames.front()), last = bright_centre(frames.back());
        double along = (last.first - first.first) * pan.dx + (last.second - first.second) * pan.dy;
        double across = (last.first - first.first) * pan.dy + (last.second - first.second) * pan.dx;
        INFO(e.path().string() << ": moved " << along << " px along, " << across << " across");
        REQUIRE(along > 0.5 * 0.25 * opt.size);
        REQUIRE(std::abs(across) < 0.1 * opt.size);
        ++checked;
      }
  REQUIRE(checked == 12);  // 2 train + 1 test clips of each of the 4 pans

  // With the same draws, each class of a pair is the other played backwards, frame for frame.
  Image source = src.train->get(0).image;
  for (auto [fwd, back] : {std::pair{Motion::PanRight, Motion::PanLeft}, std::pair{Motion::ZoomIn, Motion::ZoomOut},
                           std::pair{Motion::RotateCw, Motion::RotateCcw}}) {
    Generator g1(5), g2(5);
    auto a = render_motion_clip(source, fwd, 32, 8, g1);
    auto b = render_motion_clip(source, back, 32, 8, g2);
    for (size_t f = 0; f < a.size(); ++f) REQUIRE(a[f].pixels == b[a.size() - 1 - f].pixels);
    REQUIRE(a.front().pixels != a.back().pixels);
  }

  // --motion-scale: the same draws, the extent times the scale. The digit's pixels (its colour
  // is >= 190 in every channel, the background <= 160) travel half as far at scale 0.5.
  auto bright_centre_x = [](const Image& im) {
    double sum = 0, n = 0;
    for (int64_t y = 0; y < im.height; ++y)
      for (int64_t x = 0; x < im.width; ++x)
        if (im.at(y, x, 0) > 185 && im.at(y, x, 1) > 185 && im.at(y, x, 2) > 185) sum += x, n += 1;
    REQUIRE(n > 0);
    return sum / n;
  };
  Generator g1(9), g2(9);
  auto full = render_motion_clip(source, Motion::PanRight, 64, 8, g1, 1.0);
  auto half = render_motion_clip(source, Motion::PanRight, 64, 8, g2, 0.5);
  double travel_full = bright_centre_x(full.back()) - bright_centre_x(full.front());
  double travel_half = bright_centre_x(half.back()) - bright_centre_x(half.front());
  REQUIRE(travel_full > 0.2 * 64);  // a pan of 0.25..0.4 of the frame
  REQUIRE(travel_half / travel_full == Approx(0.5).margin(0.1));
  REQUIRE(full[3].pixels != half[3].pixels);
}

TEST_CASE("anybit make-video-dataset: --help, and bad options fail naming the option", "[data][video][ffmpeg]") {
  const std::string anybit = std::string(ANYBIT_BINARY_DIR) + "/anybit";
  if (!fs::exists(anybit)) {
    test::skip_check("no " + anybit + " (build the anybit target)");
    return;
  }
  SynthTempDir tmp;
  std::string out;
  auto run = [&](const std::string& args) { return test::run_command(anybit + " make-video-dataset " + args, &out); };
  REQUIRE(run("--help") == 0);
  REQUIRE_THAT(out, Catch::Contains("--variant") && Catch::Contains("--seed"));
  REQUIRE(run("--variant sideways --source x --out " + tmp / "o") != 0);
  REQUIRE_THAT(out, Catch::Contains("--variant"));
  REQUIRE(run("--out " + tmp / "o") != 0);
  REQUIRE_THAT(out, Catch::Contains("--source"));
  REQUIRE(run("--source x --out " + tmp / "o" + " --size 33") != 0);
  REQUIRE_THAT(out, Catch::Contains("--size"));
  REQUIRE(run("--source x --out " + tmp / "o" + " --codec vp9") != 0);
  REQUIRE_THAT(out, Catch::Contains("--codec"));
  REQUIRE(run("--source x --out " + tmp / "o" + " --frames many") != 0);
  REQUIRE_THAT(out, Catch::Contains("frames"));
  REQUIRE(run("--source /nonexistent/images --out " + tmp / "o") != 0);
  REQUIRE_THAT(out, Catch::Contains("/nonexistent/images"));
}
