// test_video.cpp - video decoding against the ffmpeg tool, damaged files, clip sampling, the video
// datasets and loader, and the temporal models (TSN, TSM's shift).
//
// The reference for decoding is the `ffmpeg` command-line tool (Debian's ffmpeg package, which
// scripts/install-deps.sh installs): it writes every decoded frame, in presentation order and
// without frame-rate conversion (-fps_mode passthrough), as raw RGB. anybit's VideoReader must
// give the same number of frames and the same pixels.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/loader.h"
#include "data/video.h"
#include "data/video_decode.h"
#include "data/video_encode.h"
#include "nn/models.h"
#include "tests/helpers.h"
#include "tests/skips.h"

using namespace anybit;
using namespace anybit::data;
namespace fs = std::filesystem;

namespace {

// A scratch folder per test, removed at the end.
struct VideoTempDir : test::ScratchDir {
  VideoTempDir() : test::ScratchDir("anybit_video") {}
};

// True when the ffmpeg tool is on PATH; otherwise records, for the case asking, that it could not
// compare with it (tests/skips.h).
bool have_ffmpeg() {
  static int ok = -1;
  if (ok < 0) ok = test::run_command("ffmpeg -hide_banner -version", nullptr) == 0;
  if (!ok) test::skip_check("the ffmpeg tool is not installed (scripts/install-deps.sh installs Debian's ffmpeg)");
  return ok == 1;
}

// A 30-frame test pattern (moving, so every frame differs) encoded by the ffmpeg tool.
void make_video(const std::string& path, const std::string& codec_args, const std::string& filter = "",
                int frames = 30, const std::string& size = "64x48") {
  std::string cmd = "ffmpeg -hide_banner -v error -y -f lavfi -i testsrc2=size=" + size + ":rate=25 -frames:v " +
                    std::to_string(frames) + " " + (filter.empty() ? "" : "-vf \"" + filter + "\" ") + codec_args +
                    " " + path;
  std::string out;
  INFO(cmd << "\n" << out);
  REQUIRE(test::run_command(cmd, &out) == 0);
}

// Every frame the ffmpeg tool decodes from `path`, as RGB (optionally through a filter first).
std::vector<Image> ffmpeg_frames(const std::string& path, int64_t h, int64_t w, const std::string& filter = "") {
  std::string raw = path + ".rgb";
  std::string cmd = "ffmpeg -hide_banner -v error -y -i " + path + " -map 0:v:0 -fps_mode passthrough " +
                    (filter.empty() ? "" : "-vf \"" + filter + "\" ") + "-f rawvideo -pix_fmt rgb24 " + raw;
  std::string out;
  INFO(cmd << "\n" << out);
  REQUIRE(test::run_command(cmd, &out) == 0);
  std::vector<uint8_t> bytes = read_file(raw);
  const size_t frame_bytes = size_t(h * w * 3);
  REQUIRE(bytes.size() % frame_bytes == 0);
  std::vector<Image> frames;
  for (size_t off = 0; off < bytes.size(); off += frame_bytes) {
    Image img(h, w, 3);
    std::copy(bytes.begin() + off, bytes.begin() + off + frame_bytes, img.pixels.begin());
    frames.push_back(std::move(img));
  }
  fs::remove(raw);
  return frames;
}

int max_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.pixels.size() == b.pixels.size());
  int worst = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) worst = std::max(worst, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return worst;
}

// Where the shared EgoGestAR archive is, or "".
std::string egogestar_tar() {
  const char* env = std::getenv("ANYBIT_SHARED_DATASETS");
  std::string p = std::string(env ? env : "/work/shared/datasets") + "/egogestar-320x240.tar";
  return fs::exists(p) ? p : "";
}

}  // namespace

TEST_CASE("VideoReader: four codec/container pairs, B-frames and variable frame rate, equal the ffmpeg tool",
          "[data][video][ffmpeg]") {
  if (!have_ffmpeg()) return;
  VideoTempDir dir;
  struct Case {
    std::string name, args, filter;
  };
  // x264 with 2 B-frames and a GOP of 10; MPEG-4 part 2 in AVI; VP9 in WebM; MJPEG in Matroska;
  // and H.264 in MP4 at a variable frame rate (frames 0-9 at 25 fps, then every 3rd tick).
  const std::vector<Case> cases = {
      {"h264_bframes.mp4", "-c:v libx264 -bf 2 -g 10 -pix_fmt yuv420p", ""},
      {"mpeg4.avi", "-c:v mpeg4 -g 8 -q:v 4", ""},
      {"vp9.webm", "-c:v libvpx-vp9 -g 10 -deadline realtime -cpu-used 8 -b:v 200k", ""},
      {"mjpeg.mkv", "-c:v mjpeg -q:v 3", ""},
      {"h264_vfr.mp4", "-c:v libx264 -bf 2 -g 12 -pix_fmt yuv420p -fps_mode vfr",
       "setpts='if(lt(N,10),N,10+(N-10)*3)/(25*TB)'"},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      std::string path = dir / c.name;
      make_video(path, c.args, c.filter);
      VideoReader video(path);
      std::vector<Image> ref = ffmpeg_frames(path, video.height(), video.width());
      INFO(c.name << " (" << video.codec_name() << "): anybit " << video.num_frames() << " frames, ffmpeg "
                  << ref.size());
      REQUIRE(video.num_frames() == 30);
      REQUIRE(ref.size() == 30);
      // Sequential: every frame, one decode pass, no seek but the first.
      std::vector<Image> all = video.read_all();
      REQUIRE(video.seeks() == 1);
      for (size_t i = 0; i < all.size(); ++i) {
        INFO("frame " << i);
        REQUIRE(max_abs_diff(all[i], ref[i]) == 0);
      }
      // Random access, out of order and repeated, from a fresh reader and from a used one.
      const std::vector<int64_t> picks = {17, 3, 29, 3, 0, 11, 28, 12};
      for (int fresh = 0; fresh < 2; ++fresh) {
        VideoReader other(path);
        VideoReader& r = fresh ? other : video;
        std::vector<Image> got = r.read(picks);
        REQUIRE(got.size() == picks.size());
        for (size_t j = 0; j < picks.size(); ++j) {
          INFO("random access to frame " << picks[j] << (fresh ? " (fresh reader)" : " (used reader)"));
          REQUIRE(max_abs_diff(got[j], ref[picks[j]]) == 0);
        }
      }
      if (c.name == "h264_vfr.mp4") {
        // The index gives the real times: 1/25 s apart for the first ten frames, 3/25 s after.
        REQUIRE(video.time_of(9) == Approx(9 / 25.0));
        REQUIRE(video.time_of(12) == Approx((10 + 2 * 3) / 25.0));
      }
    }
  }
}

TEST_CASE("VideoReader: frames scaled in swscale match the ffmpeg tool's bilinear scale", "[data][video][ffmpeg]") {
  if (!have_ffmpeg()) return;
  VideoTempDir dir;
  std::string path = dir / "scale.mp4";
  make_video(path, "-c:v libx264 -bf 2 -g 10 -pix_fmt yuv420p", "", 12, "160x120");
  std::vector<Image> ref = ffmpeg_frames(path, 45, 60, "scale=60:45:flags=bilinear,format=rgb24");
  VideoReader video(path);
  std::vector<Image> got = video.read({0, 5, 11}, 45, 60);
  REQUIRE(ref.size() == 12);
  // The same swscale call (flags, sizes, formats) as the ffmpeg tool's scale filter: equal pixels
  // up to the filter graph's own rounding, which this test found to be none or one level.
  for (int j = 0; j < 3; ++j) REQUIRE(max_abs_diff(got[j], ref[std::vector<int>{0, 5, 11}[j]]) <= 1);
}

// Runs in every build: in one without FFmpeg (-DANYBIT_VIDEO=OFF, as scripts/gpu-check.sh builds)
// it checks the errors that replace video; in a full build, that video_available() says so.
TEST_CASE("a build without FFmpeg says so, naming the file, when a video is opened for reading or writing",
          "[data][video]") {
  if (video_available()) {
    REQUIRE(video_unavailable_reason().empty());
    return;
  }
  REQUIRE_THAT(video_unavailable_reason(), Catch::Contains("ANYBIT_VIDEO"));
  REQUIRE_THROWS_WITH(VideoReader("clips/a.mp4"), Catch::Contains("clips/a.mp4") && Catch::Contains("without FFmpeg"));
  VideoWriterOptions opt;
  REQUIRE_THROWS_WITH(VideoWriter("out/b.mp4", opt), Catch::Contains("out/b.mp4") && Catch::Contains("without FFmpeg"));
  REQUIRE_THROWS_WITH(resolve_video_codec("h264"), Catch::Contains("without FFmpeg"));
}

TEST_CASE("VideoReader: missing, empty, non-video, truncated and bit-flipped files end in an error naming the file",
          "[data][video][ffmpeg]") {
  VideoTempDir dir;
  auto expect_error = [&](const std::string& path, const std::string& what) {
    try {
      VideoReader v(path);
      v.read_all();
      FAIL(what << ": no error");
    } catch (const Error& e) {
      INFO(what << ": " << e.what());
      REQUIRE(std::string(e.what()).find(path) != std::string::npos);
    }
  };
  expect_error(dir / "missing.mp4", "a missing file");
  { std::ofstream(dir / "empty.mp4"); }
  expect_error(dir / "empty.mp4", "a zero-length file");
  {
    std::ofstream f(dir / "text.mp4");
    f << "this is not a video\n";
  }
  expect_error(dir / "text.mp4", "a text file");
  if (!have_ffmpeg()) return;  // the files below are made with the ffmpeg tool
  // An audio-only file: no video stream.
  std::string audio = dir / "audio.mkv", out;
  REQUIRE(test::run_command("ffmpeg -hide_banner -v error -y -f lavfi -i sine=duration=0.2 -c:a pcm_s16le " + audio,
                            &out) == 0);
  expect_error(audio, "an audio-only file");

  // Damaged copies of real clips (two of EgoGestAR, H.264 with B-frames and MPEG-4, when the
  // archive is at hand) and of generated ones: each one either decodes every frame its index
  // lists, or throws an anybit::Error naming the file. Never a crash, a hang, or another exception.
  std::vector<std::string> originals;
  for (const char* args : {"-c:v libx264 -bf 2 -g 10 -pix_fmt yuv420p", "-c:v mpeg4 -g 8"}) {
    std::string p = dir / ("orig" + std::to_string(originals.size()) + (originals.empty() ? ".mp4" : ".avi"));
    make_video(p, args, "", 20);
    originals.push_back(p);
  }
  if (std::string tar = egogestar_tar(); !tar.empty()) {
    REQUIRE(test::run_command("tar xf " + tar + " -C " + dir.path.string() +
                                  " egogestar/videos/left/left_01.mp4 egogestar/videos/tick/tick_16.mp4",
                              &out) == 0);
    for (const char* f : {"egogestar/videos/left/left_01.mp4", "egogestar/videos/tick/tick_16.mp4"})
      originals.push_back(dir / f);
  } else {
    test::skip_check("the EgoGestAR archive is not in the shared datasets: damaged copies of generated clips only");
  }
  std::mt19937_64 rng(20261130);
  int decoded = 0, refused = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string& orig : originals) {
    std::vector<uint8_t> bytes = read_file(orig);
    for (int k = 0; k < 24; ++k) {
      std::vector<uint8_t> b = bytes;
      if (k % 2 == 0) {
        b.resize(rng() % b.size());  // truncated
      } else {
        for (int n = 1 + int(rng() % 20); n--;) b[rng() % b.size()] ^= uint8_t(1u << (rng() % 8));  // bit flips
      }
      std::string path = dir / ("damaged" + std::to_string(k) + fs::path(orig).extension().string());
      std::ofstream(path, std::ios::binary).write((const char*)b.data(), (std::streamsize)b.size());
      try {
        VideoReader v(path);
        std::vector<Image> all = v.read_all(24, 32);
        REQUIRE((int64_t)all.size() == v.num_frames());
        ++decoded;
      } catch (const Error& e) {
        INFO(e.what());
        REQUIRE(std::string(e.what()).find(path) != std::string::npos);
        ++refused;
      }
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(decoded << " damaged files decoded, " << refused << " refused, in " << secs << " s");
  REQUIRE(decoded + refused == 24 * (int)originals.size());
  REQUIRE(refused > 0);
}

TEST_CASE("sample_clip: TSN segments and dense clips, training and evaluation, short videos", "[data][video]") {
  ClipSpec seg;
  seg.frames = 4;
  // Evaluation: the centre of each of 4 segments of 20 frames: floor((j + 1/2) * 5).
  REQUIRE(sample_clip(20, seg, nullptr) == std::vector<int64_t>{2, 7, 12, 17});
  // Two clips: positions 1/4 and 3/4 of each segment.
  REQUIRE(sample_clip(20, seg, nullptr, 0, 2) == std::vector<int64_t>{1, 6, 11, 16});
  REQUIRE(sample_clip(20, seg, nullptr, 1, 2) == std::vector<int64_t>{3, 8, 13, 18});
  // Training: one frame inside each segment, every frame of a segment drawn sooner or later.
  Generator gen(7);
  std::vector<std::vector<int>> seen(4, std::vector<int>(20, 0));
  for (int k = 0; k < 400; ++k) {
    auto idx = sample_clip(20, seg, &gen);
    for (int j = 0; j < 4; ++j) {
      REQUIRE(idx[j] >= 5 * j);
      REQUIRE(idx[j] < 5 * (j + 1));
      seen[j][idx[j]]++;
    }
  }
  for (int j = 0; j < 4; ++j)
    for (int f = 5 * j; f < 5 * (j + 1); ++f) REQUIRE(seen[j][f] > 0);
  // Shorter than the clip: frames repeat in order.
  seg.frames = 8;
  REQUIRE(sample_clip(4, seg, nullptr) == std::vector<int64_t>{0, 0, 1, 1, 2, 2, 3, 3});
  auto tr = sample_clip(3, seg, &gen);
  REQUIRE(std::is_sorted(tr.begin(), tr.end()));
  REQUIRE(tr.back() <= 2);

  ClipSpec dense;
  dense.sampling = ClipSampling::Dense;
  dense.frames = 4;
  dense.stride = 2;  // spans 7 frames
  REQUIRE(sample_clip(20, dense, nullptr) == std::vector<int64_t>{6, 8, 10, 12});  // start (20 - 7) / 2
  REQUIRE(sample_clip(20, dense, nullptr, 0, 3) == std::vector<int64_t>{0, 2, 4, 6});
  REQUIRE(sample_clip(20, dense, nullptr, 2, 3) == std::vector<int64_t>{13, 15, 17, 19});
  for (int k = 0; k < 100; ++k) {
    auto idx = sample_clip(20, dense, &gen);
    REQUIRE(idx[0] <= 13);
    for (int i = 1; i < 4; ++i) REQUIRE(idx[i] == idx[0] + 2 * i);
  }
  // Shorter than the span: the clip loops.
  REQUIRE(sample_clip(5, dense, nullptr) == std::vector<int64_t>{0, 2, 4, 1});
  REQUIRE_THROWS_AS(sample_clip(0, dense, nullptr), Error);
}

TEST_CASE("VideoDataset and DataLoader: list files, class folders, one crop per clip", "[data][video][ffmpeg]") {
  if (!have_ffmpeg()) return;
  VideoTempDir dir;
  // Two classes of two clips each, in the class-folder layout and in a list file.
  fs::create_directories(dir.path / "train" / "a");
  fs::create_directories(dir.path / "train" / "b");
  make_video(dir / "train/a/1.mp4", "-c:v libx264 -bf 2 -g 10 -pix_fmt yuv420p", "", 16);
  make_video(dir / "train/a/2.avi", "-c:v mpeg4", "", 12);
  make_video(dir / "train/b/1.mkv", "-c:v mjpeg", "", 9);
  make_video(dir / "train/b/2.mp4", "-c:v libx264 -pix_fmt yuv420p", "hflip", 20);
  {
    std::ofstream list(dir / "test.txt");
    list << "train/b/2.mp4 1\n# a comment\n\ntrain/a/1.mp4 0\n";
    std::ofstream classes(dir / "classes.txt");
    classes << "a\nb\n";
  }
  REQUIRE(is_video_dataset(dir.path.string(), "train"));
  REQUIRE(is_video_dataset(dir.path.string(), "test"));
  VideoOptions vo;
  vo.clip.frames = 4;
  vo.short_side = 30;  // 64x48 -> 40x30
  auto train = open_video_dataset(dir.path.string(), "train", vo);
  REQUIRE(train->size() == 4);
  REQUIRE(train->class_names() == std::vector<std::string>{"a", "b"});
  REQUIRE(train->frames_per_example() == 4);
  vo.train = false;
  vo.num_clips = 2;
  auto test = open_video_dataset(dir.path.string(), "test", vo);
  REQUIRE(test->size() == 2);
  REQUIRE(test->label(0) == 1);
  REQUIRE(test->frames_per_example() == 8);
  Example ex = test->get(0);
  REQUIRE(ex.frames.size() == 8);
  REQUIRE(ex.frames[0].height == 30);
  REQUIRE(ex.frames[0].width == 40);

  // A batch of clips: (N * F, C, H, W), and every frame of a clip cut by the same random crop:
  // with a static video all frames of a clip come out equal, different clips generally not.
  fs::create_directories(dir.path / "static" / "train" / "s");
  std::string png = dir / "still.png", out;
  REQUIRE(test::run_command("ffmpeg -hide_banner -v error -y -f lavfi -i testsrc2=size=96x72 -frames:v 1 " + png,
                            &out) == 0);
  for (int i = 0; i < 3; ++i)  // MJPEG at a fixed quality codes every frame alike: 12 equal frames
    REQUIRE(test::run_command("ffmpeg -hide_banner -v error -y -loop 1 -i " + png + " -frames:v 12 -c:v mjpeg -q:v 3 " +
                                  dir / ("static/train/s/" + std::to_string(i) + ".mkv"),
                              &out) == 0);
  vo.train = true;
  vo.num_clips = 1;
  vo.short_side = 0;
  auto still = open_video_dataset((dir.path / "static").string(), "train", vo);
  Pipeline pipe;
  pipe.steps.push_back(multi_scale_crop(32));
  LoaderOptions lo;
  lo.batch_size = 3;
  lo.num_workers = 2;
  lo.seed = 3;
  DataLoader loader(still, pipe, lo);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(b.images.shape() == Shape{12, 3, 32, 32});
  REQUIRE(b.frames_per_example == 4);
  const float* x = b.images.data<float>();
  const int64_t frame = 3 * 32 * 32;
  for (int n = 0; n < 3; ++n)
    for (int f = 1; f < 4; ++f)
      REQUIRE(std::equal(x + (n * 4 + f) * frame, x + (n * 4 + f + 1) * frame, x + n * 4 * frame));
  // The three clips show the same picture; their crops (drawn per clip) are not all the same.
  bool crops_differ = !std::equal(x, x + frame, x + 4 * frame) || !std::equal(x, x + frame, x + 8 * frame);
  REQUIRE(crops_differ);
  // A cached video loader would freeze its clips: refused.
  lo.cache = true;
  REQUIRE_THROWS_AS(DataLoader(still, pipe, lo), Error);

  // skip_bad_files: a damaged video is dropped at construction, counted, and the rest load.
  {
    std::vector<uint8_t> good = read_file(dir / "train/a/1.mp4");
    good.resize(good.size() / 3);
    std::ofstream(dir / "train/a/3.mp4", std::ios::binary).write((const char*)good.data(), (std::streamsize)good.size());
    VideoOptions skip = vo;
    skip.skip_bad_files = true;
    auto kept = VideoDataset::from_folder(dir / "train", skip);
    REQUIRE(kept->size() == 4);
    REQUIRE(kept->num_skipped() == 1);
    REQUIRE(kept->describe().find("1 bad files skipped") != std::string::npos);
    auto strict = VideoDataset::from_folder(dir / "train", vo);
    REQUIRE(strict->size() == 5);
    int64_t bad = -1;
    for (int64_t i = 0; i < strict->size(); ++i)
      if (strict->path(i).find("3.mp4") != std::string::npos) bad = i;
    REQUIRE(bad >= 0);
    try {
      strict->get(bad);
      FAIL("a truncated video loaded");
    } catch (const Error& e) {
      REQUIRE(std::string(e.what()).find("3.mp4") != std::string::npos);
    }
  }

  // A list file with a bad line names the file and the line.
  {
    std::ofstream list(dir / "bad.txt");
    list << "train/a/1.mp4 0\ntrain/a/2.avi x\n";
  }
  try {
    VideoDataset::from_list(dir / "bad.txt", dir.path.string(), vo);
    FAIL("no error");
  } catch (const Error& e) {
    REQUIRE(std::string(e.what()).find("bad.txt line 2") != std::string::npos);
  }
}

TEST_CASE("temporal_shift: the formula, zero padding at the clip ends, and its gradient", "[video][autograd]") {
  // 2 clips of 3 frames, 8 channels (fold 1 with fold_div 8), 1x2 pixels.
  const int64_t N = 2, T = 3, C = 8, HW = 2;
  Tensor x = test::randn({N * T, C, 1, HW}, 5);
  Tensor y = temporal_shift(x, T, 8);
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  auto at = [&](const std::vector<double>& v, int64_t n, int64_t t, int64_t c, int64_t i) {
    return v[((n * T + t) * C + c) * HW + i];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) {
          double want = c == 0 ? (t + 1 < T ? at(xv, n, t + 1, c, i) : 0.0)
                        : c == 1 ? (t >= 1 ? at(xv, n, t - 1, c, i) : 0.0)
                                 : at(xv, n, t, c, i);
          REQUIRE(at(yv, n, t, c, i) == want);
        }
  Tensor xg = test::randn({N * T, 16, 2, 2}, 6).requires_grad_();
  REQUIRE(test::gradcheck([&](const std::vector<Tensor>& in) { return temporal_shift(in[0], T, 4); }, {xg}) > 0);
  REQUIRE_THROWS_AS(temporal_shift(test::randn({5, 8, 1, 1}, 1), 3), Error);  // 5 rows, clips of 3
}

TEST_CASE("TSN and TSM models: clip logits, the backbone's parameter names, the shift in every block",
          "[video][nn]") {
  nn::ModelOptions image, tsn, tsm;
  tsn.segments = tsm.segments = 4;
  tsm.temporal_shift = true;
  auto base = nn::make_model("resnet20", 10, image, 1);
  auto m_tsn = nn::make_model("resnet20", 10, tsn, 1);
  auto m_tsm = nn::make_model("resnet20", 10, tsm, 1);
  // The same parameter names in the same order, and (same seed) the same initial values.
  auto sb = base->state_dict(), st = m_tsn->state_dict();
  REQUIRE(sb.size() == st.size());
  for (size_t i = 0; i < sb.size(); ++i) {
    REQUIRE(sb[i].first == st[i].first);
    REQUIRE(sb[i].second.to_vector<float>() == st[i].second.to_vector<float>());
  }
  m_tsm->load_state_dict(sb);
  base->eval();
  m_tsn->eval();
  m_tsm->eval();
  NoGradGuard ng;
  // 2 clips of 4 frames: TSN's output is the mean of the backbone's per-frame logits.
  Tensor frames = test::randn({8, 3, 32, 32}, 3, DType::F32);
  Tensor per_frame = base->forward(frames), clip = m_tsn->forward(frames);
  REQUIRE(clip.shape() == Shape{2, 10});
  test::require_close(clip, mean(per_frame.reshape({2, 4, 10}), {1}), 1e-5, 1e-6, "TSN = mean of frames");
  // TSM mixes the frames of a clip and only of that clip: changing clip 1 leaves clip 0's output.
  Tensor a = m_tsm->forward(frames);
  Tensor frames2 = frames.clone();
  float* p = frames2.data<float>();
  for (int64_t i = 4 * 3 * 32 * 32; i < frames2.numel(); ++i) p[i] += 1.0f;
  Tensor b = m_tsm->forward(frames2);
  auto av = a.to_vector<float>(), bv = b.to_vector<float>();
  for (int k = 0; k < 10; ++k) REQUIRE(av[k] == bv[k]);
  bool clip1_changed = false;
  for (int k = 10; k < 20; ++k) clip1_changed = clip1_changed || av[k] != bv[k];
  REQUIRE(clip1_changed);
  // ... and the order of the frames matters to TSM, not to TSN.
  Tensor reversed = frames.clone();
  float* r = reversed.data<float>();
  const float* f = frames.data<float>();
  const int64_t one = 3 * 32 * 32;
  for (int n = 0; n < 2; ++n)
    for (int t = 0; t < 4; ++t) std::copy(f + (n * 4 + t) * one, f + (n * 4 + t + 1) * one, r + (n * 4 + 3 - t) * one);
  test::require_close(m_tsn->forward(reversed), clip, 1e-5, 1e-6, "TSN ignores frame order");
  auto rv = m_tsm->forward(reversed).to_vector<float>();
  double moved = 0;
  for (int k = 0; k < 20; ++k) moved = std::max(moved, (double)std::abs(rv[k] - av[k]));
  REQUIRE(moved > 1e-4);
  // A clip is one sample: its MACs are 4 frames' worth.
  REQUIRE(nn::macs_per_sample(*m_tsn, {3, 32, 32}) == 4 * nn::macs_per_sample(*base, {3, 32, 32}));
  REQUIRE_THROWS_AS(nn::make_model("lenet5", 10, tsm, 1), Error);  // no residual blocks to shift
  // Every residual block of the ImageNet ResNets shifts: 8 in ResNet-18, 16 in ResNet-50.
  for (auto [name, blocks] : {std::pair<const char*, int>{"resnet18", 8}, {"resnet50", 16}}) {
    auto m = nn::make_model(name, 10, tsm, 1);
    int shifting = 0;
    for (auto& [n, mod] : m->named_modules())
      if (auto* b = dynamic_cast<nn::TemporalShiftable*>(mod.get())) shifting += b->shifts();
    REQUIRE(shifting == blocks);
  }
}

TEST_CASE("anybit train/eval on a video set: TSM with bit set {32,4,2}, two test clips per video, confusion",
          "[app][video][ffmpeg]") {
  if (!have_ffmpeg()) return;
  VideoTempDir dir;
  const std::string anybit = std::string(ANYBIT_BINARY_DIR) + "/anybit";
  // Two classes of clips in the class-folder layout, rendered by the ffmpeg tool.
  for (const char* cls : {"a", "b"})
    for (const char* split : {"train", "test"}) {
      fs::create_directories(dir.path / split / cls);
      for (int i = 0; i < 2; ++i)
        make_video(dir / (std::string(split) + "/" + cls + "/" + std::to_string(i) + ".mp4"),
                   "-c:v libx264 -pix_fmt yuv420p", cls[0] == 'a' ? "" : "vflip", 10, "48x32");
    }
  std::string out;
  std::string cmd = anybit + " train --model resnet20 --data " + dir.path.string() +
                    " --frames 4 --temporal-shift 1 --bits 32,4,2 --short-side 32 --video-crop 32 --batch-size 2"
                    " --epochs 1 --test-clips 2 --lr 0.01 --threads 1 --workers 1 --out " + dir / "run";
  INFO(cmd << "\n" << out);
  REQUIRE(test::run_command(cmd, &out) == 0);
  INFO(out);
  REQUIRE(out.find("clips/s") != std::string::npos);
  std::vector<uint8_t> report = read_file(dir / "run/report.md");
  std::string md(report.begin(), report.end());
  for (const char* want : {"W32A32", "W4A4", "W2A2", "Confusion at W2A2"}) REQUIRE(md.find(want) != std::string::npos);
  // eval re-reads the run's configuration: the same video model, here with 3 clips per test video.
  REQUIRE(test::run_command(anybit + " eval --run " + dir / "run" + " --test-clips 3 --threads 1 --out " + dir / "eval",
                            &out) == 0);
  REQUIRE(out.find("W2A2") != std::string::npos);
  // An FP TSN run, then one initialised from it but for its classifier (init_exclude).
  std::string fp = anybit + " train --model resnet20 --data " + dir.path.string() +
                   " --frames 4 --short-side 32 --video-crop 32 --batch-size 2 --epochs 1 --threads 1 --workers 1";
  REQUIRE(test::run_command(fp + " --out " + dir / "fp", &out) == 0);
  REQUIRE(test::run_command(fp + " --init " + dir / "fp/model.safetensors" + " --init-exclude fc --out " + dir / "fp2",
                            &out) == 0);
  REQUIRE(out.find("(except fc)") != std::string::npos);
  REQUIRE(test::run_command(fp + " --init " + dir / "fp/model.safetensors" + " --init-exclude nosuch --out " +
                                dir / "fp3",
                            &out) != 0);
  REQUIRE(out.find("no tensor under these names") != std::string::npos);
  // info prints the TSM of the data set's clips, its costs per clip.
  REQUIRE(test::run_command(anybit + " info --model resnet20 --data " + dir.path.string() +
                                " --frames 4 --temporal-shift 1 --input 3,32,32",
                            &out) == 0);
  REQUIRE(out.find("TSM of ResNet20, segments=4") != std::string::npos);
  REQUIRE(out.find("per clip of 4 frames") != std::string::npos);
}
