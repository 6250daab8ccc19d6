// test_image_decode.cpp - decode_image (data/image_decode.cpp) on clean and on hostile files.
//
// 1. Clean JPEGs decoded by libjpeg-turbo agree with stb_image's decode of the same bytes (the
//    decoder anybit used before; both implement the IJG reference IDCT and upsampling, but not
//    bit for bit) within a few levels, for 4:2:0, 4:4:4, greyscale, progressive and CMYK files.
// 2. Reduced-size decoding (min_short_side) picks the expected scale and gives the expected size,
//    and its pixels are close to a 2x2 / 4x4 box average of the full-size decode.
// 3. The format is recognised by the first bytes, not the name.
// 4. The fuzz test: a few thousand JPEG and PNG files made here (encoded with TurboJPEG and
//    stb_image_write from generated images), mutated with a fixed seed (bit flips, tampered
//    header bytes, absurd sizes, truncation), each fed through decode_image. Each must give either
//    an anybit::Error naming the file or a well-formed RGB image; anything else (another exception
//    type, a crash, a sanitizer report under `make sanitize`) fails. A truncated JPEG must be an
//    error (our policy: libjpeg would fill the rest with grey). A sample also goes through an
//    ImageFolderDataset with skip_bad_files, to cover the folder's path.
// Tag [data].
#include <turbojpeg.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/dataset.h"
#include "tensor/error.h"

// stb_image_write's implementation lives in test_data.cpp; here only its declarations.
#include <stb_image_write.h>

// stb_image's JPEG decoder, private to this file (STB_IMAGE_STATIC), as the reference the
// libjpeg-turbo decode is compared with. The library itself no longer compiles it.
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
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// A photo-like test image: smooth gradients, a few hard-edged discs, and some noise, so that the
// JPEG has both low and high frequencies (c = 1, 3 or 4 channels).
std::vector<uint8_t> make_photo(int h, int w, int c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  double fx = 2 + 4 * u(rng), fy = 2 + 4 * u(rng), phase = 6.28 * u(rng);
  double cx = w * u(rng), cy = h * u(rng), r = (0.15 + 0.2 * u(rng)) * std::min(h, w);
  std::vector<uint8_t> px((size_t)h * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) {
        double v = 128 + 80 * std::sin(fx * x / w * 3.14 + fy * y / h * 3.14 + phase + k);
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r) v = 40 + 60 * k;
        v += 12 * (u(rng) - 0.5);
        px[((size_t)y * w + x) * c + k] = (uint8_t)std::clamp(v, 0.0, 255.0);
      }
  return px;
}

// Encodes with TurboJPEG: pf = TJPF_RGB, TJPF_GRAY or TJPF_CMYK (written as YCCK).
std::vector<uint8_t> encode_jpeg(const std::vector<uint8_t>& px, int h, int w, int pf, int subsamp,
                                 int quality, int flags = 0) {
  tjhandle tj = tjInitCompress();
  REQUIRE(tj);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  int rc = tjCompress2(tj, px.data(), w, 0, h, pf, &buf, &size, subsamp, quality, flags);
  INFO("tjCompress2: " << tjGetErrorStr2(tj));
  REQUIRE(rc == 0);
  std::vector<uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

std::vector<uint8_t> encode_png(const std::vector<uint8_t>& px, int h, int w, int c) {
  std::vector<uint8_t> out;
  auto append = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), (uint8_t*)data, (uint8_t*)data + size);
  };
  REQUIRE(stbi_write_png_to_func(append, &out, w, h, c, px.data(), w * c));
  return out;
}

// stb_image's decode to RGB (the reference); the image must decode.
Image stb_decode(const std::vector<uint8_t>& bytes) {
  int w = 0, h = 0, comp = 0;
  uint8_t* p = stbi_load_from_memory(bytes.data(), (int)bytes.size(), &w, &h, &comp, 3);
  INFO("stb_image: " << (p ? "" : stbi_failure_reason()));
  REQUIRE(p);
  Image img(h, w, 3);
  img.pixels.assign(p, p + (size_t)w * h * 3);
  stbi_image_free(p);
  return img;
}

int max_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.height == b.height);
  REQUIRE(a.width == b.width);
  REQUIRE(a.channels == b.channels);
  int worst = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i)
    worst = std::max(worst, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return worst;
}

// The offset of the first SOFn marker's height field (FF C0..C2, then length, precision), or -1.
int sof_size_offset(const std::vector<uint8_t>& jpg) {
  for (size_t i = 2; i + 9 < jpg.size(); ++i)
    if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC1 || jpg[i + 1] == 0xC2)) return int(i + 5);
  return -1;
}

}  // namespace

TEST_CASE("decode_image: clean JPEGs match stb_image's decode within a few levels", "[data]") {
  struct Case {
    const char* what;
    int h, w, pf, subsamp, quality, flags, max_diff;
  };
  // The differences seen with libjpeg-turbo 2.1.5 vs stb_image 2.27 (Debian bookworm): at most
  // 2 levels (mean under 0.1; 3 in 4:2:2), from rounding in the IDCT, colour conversion and chroma upsampling;
  // except in 4:2:2 files, where the last-but-one column differs by up to 16 levels: there
  // stb_image's horizontal chroma upsampling of the last chroma sample is not libjpeg's (the
  // reference). max_diff is that, rounded up; away from the right edge every case is <= 3.
  const Case cases[] = {
      {"4:2:0 q90", 32, 32, TJPF_RGB, TJSAMP_420, 90, 0, 4},
      {"4:2:0 q75 odd size", 37, 53, TJPF_RGB, TJSAMP_420, 75, 0, 4},
      {"4:4:4 q95", 40, 24, TJPF_RGB, TJSAMP_444, 95, 0, 4},
      {"4:2:2 q85", 33, 48, TJPF_RGB, TJSAMP_422, 85, 0, 20},
      {"grey q90", 32, 40, TJPF_GRAY, TJSAMP_GRAY, 90, 0, 4},
      {"progressive 4:2:0", 48, 64, TJPF_RGB, TJSAMP_420, 90, TJFLAG_PROGRESSIVE, 4},
      {"CMYK (YCCK) 4:4:4", 32, 32, TJPF_CMYK, TJSAMP_444, 95, 0, 4},
  };
  int overall = 0, overall_inner = 0;
  for (const auto& c : cases) {
    const int ch = tjPixelSize[c.pf];
    std::vector<uint8_t> jpg = encode_jpeg(make_photo(c.h, c.w, ch, 7), c.h, c.w, c.pf, c.subsamp, c.quality, c.flags);
    Image ours = decode_image(jpg, c.what);
    REQUIRE(ours.height == c.h);
    REQUIRE(ours.width == c.w);
    REQUIRE(ours.channels == 3);
    Image ref = stb_decode(jpg);
    int d = max_abs_diff(ours, ref), inner = 0;
    double mean = 0;
    for (int y = 0; y < c.h; ++y)
      for (int x = 0; x < c.w; ++x)
        for (int k = 0; k < 3; ++k) {
          int e = std::abs(int(ours.at(y, x, k)) - int(ref.at(y, x, k)));
          mean += e;
          if (x < c.w - 2) inner = std::max(inner, e);
        }
    mean /= ref.pixels.size();
    INFO(c.what << ": max |libjpeg-turbo - stb_image| = " << d << " (" << inner
                << " away from the right edge), mean " << mean);
    CHECK(inner <= 3);
    CHECK(d <= c.max_diff);
    CHECK(mean < 0.5);
    overall = std::max(overall, d);
    overall_inner = std::max(overall_inner, inner);
  }
  WARN("max |libjpeg-turbo - stb_image| over the clean JPEGs: " << overall << " levels, "
       << overall_inner << " away from the right edge");
}

TEST_CASE("decode_image: min_short_side decodes JPEGs at 1/2, 1/4, 1/8", "[data]") {
  const int h = 150, w = 200;
  std::vector<uint8_t> jpg = encode_jpeg(make_photo(h, w, 3, 3), h, w, TJPF_RGB, TJSAMP_444, 95);
  Image full = decode_image(jpg, "a.jpg");
  REQUIRE((full.height == 150 && full.width == 200));
  // Shorter side 150: /2 = 75, /4 = 37.5 -> 38 (sides round up), /8 = 18.75 -> 19.
  struct Want {
    int64_t min_side, h, w;
  };
  for (Want want : {Want{0, 150, 200}, Want{151, 150, 200}, Want{150, 150, 200}, Want{76, 150, 200},
                    Want{75, 75, 100}, Want{39, 75, 100}, Want{38, 38, 50}, Want{20, 38, 50},
                    Want{19, 19, 25}, Want{1, 19, 25}}) {
    Image img = decode_image(jpg, "a.jpg", want.min_side);
    INFO("min_short_side " << want.min_side);
    REQUIRE(img.height == want.h);
    REQUIRE(img.width == want.w);
    REQUIRE(img.pixels.size() == size_t(want.h * want.w * 3));
  }
  // The reduced decode is (close to) the box average of the full one: the scaled IDCT keeps the
  // low frequencies of each 8x8 block.
  for (int f : {2, 4}) {
    Image small = decode_image(jpg, "a.jpg", h / f);
    REQUIRE(small.height == h / f + (h % f ? 1 : 0));
    double total = 0;
    int64_t n = 0;
    for (int y = 0; y + 1 < small.height; ++y)  // the last row/column may be a partial box
      for (int x = 0; x + 1 < small.width; ++x)
        for (int c = 0; c < 3; ++c) {
          double box = 0;
          for (int dy = 0; dy < f; ++dy)
            for (int dx = 0; dx < f; ++dx) box += full.at(y * f + dy, x * f + dx, c);
          total += std::abs(box / (f * f) - small.at(y, x, c));
          ++n;
        }
    INFO("1/" << f << ": mean |scaled decode - box average of full decode| = " << total / n);
    REQUIRE(total / n < 4.0);
  }
  // PNG ignores min_short_side.
  std::vector<uint8_t> png = encode_png(make_photo(h, w, 3, 3), h, w, 3);
  REQUIRE(decode_image(png, "a.png", 19).height == 150);

  // The image folder passes its option through.
  fs::path dir = fs::temp_directory_path() / ("anybit_test_decode_" + std::to_string(getpid()));
  fs::create_directories(dir / "c");
  {
    std::ofstream f(dir / "c/x.jpg", std::ios::binary);
    f.write((const char*)jpg.data(), (std::streamsize)jpg.size());
    REQUIRE(f.good());
  }
  ImageFolderDataset::Options opt;
  opt.min_short_side = 38;
  ImageFolderDataset ds(dir.string(), opt);
  Example ex = ds.get(0);
  fs::remove_all(dir);
  REQUIRE((ex.image.height == 38 && ex.image.width == 50));
  REQUIRE_THAT(ds.describe(), Contains("shorter side >= 38"));
  opt.min_short_side = -1;
  REQUIRE_THROWS_WITH(ImageFolderDataset(dir.string(), opt), Contains("min_short_side must be >= 0"));
}

TEST_CASE("decode_image: the format comes from the first bytes, not the name", "[data]") {
  std::vector<uint8_t> px = make_photo(9, 11, 3, 1);
  std::vector<uint8_t> jpg = encode_jpeg(px, 9, 11, TJPF_RGB, TJSAMP_444, 90);
  std::vector<uint8_t> png = encode_png(px, 9, 11, 3);
  REQUIRE(image_format(jpg) == ImageFormat::Jpeg);
  REQUIRE(image_format(png) == ImageFormat::Png);
  REQUIRE(image_format({'B', 'M', 0}) == ImageFormat::Bmp);
  REQUIRE(image_format({0xFF, 0xD8}) == ImageFormat::Unknown);
  REQUIRE(decode_image(png, "really_a_png.jpg").pixels == px);  // lossless: it went to the PNG decoder
  REQUIRE(decode_image(jpg, "really_a_jpeg.png").width == 11);
  REQUIRE_THROWS_WITH(decode_image({'G', 'I', 'F', '8', '9', 'a'}, "anim.gif"),
                      Contains("anim.gif") && Contains("not a JPEG, PNG or BMP") && Contains("47 49 46 38"));
  REQUIRE_THROWS_WITH(decode_image({}, "empty.jpg"), Contains("empty.jpg") && Contains("empty file"));
  // A header claiming 60000 x 60000 pixels is refused before anything is allocated (libjpeg's own
  // limit is 65500 per side).
  int at = sof_size_offset(jpg);
  REQUIRE(at > 0);
  for (int i : {0, 2}) {
    jpg[at + i] = 0xEA;
    jpg[at + i + 1] = 0x60;
  }
  REQUIRE_THROWS_WITH(decode_image(jpg, "huge.jpg"), Contains("huge.jpg") && Contains("60000x60000") &&
                                                          Contains("over the limit"));
  // The same for PNG (IHDR width and height at bytes 16 and 20).
  for (int i : {16, 20}) {
    png[i] = 0;
    png[i + 1] = 0;
    png[i + 2] = 0xEA;
    png[i + 3] = 0x60;
  }
  REQUIRE_THROWS_WITH(decode_image(png, "huge.png"), Contains("huge.png"));
}

TEST_CASE("decode_image: thousands of mutated JPEG and PNG files: an error naming the file or an image",
          "[data]") {
  auto t0 = std::chrono::steady_clock::now();
  // The clean originals: CIFAR-size and a few larger, every JPEG flavour, and PNGs.
  std::vector<std::pair<std::string, std::vector<uint8_t>>> originals;
  const int sampl[] = {TJSAMP_420, TJSAMP_444, TJSAMP_422};
  for (uint32_t i = 0; i < 6; ++i) {
    int h = i < 4 ? 32 : 61, w = i < 4 ? 32 : 80;
    std::vector<uint8_t> rgb = make_photo(h, w, 3, 100 + i);
    originals.push_back({"baseline" + std::to_string(i) + ".jpg",
                         encode_jpeg(rgb, h, w, TJPF_RGB, sampl[i % 3], 60 + 7 * i)});
    const int png_channels = i % 3 == 0 ? 3 : i % 3 == 1 ? 1 : 4;
    originals.push_back({"png" + std::to_string(i) + ".png",
                         encode_png(make_photo(h, w, png_channels, 200 + i), h, w, png_channels)});
  }
  originals.push_back({"progressive.jpg", encode_jpeg(make_photo(32, 32, 3, 9), 32, 32, TJPF_RGB, TJSAMP_420, 85,
                                                      TJFLAG_PROGRESSIVE)});
  originals.push_back({"grey.jpg", encode_jpeg(make_photo(32, 32, 1, 10), 32, 32, TJPF_GRAY, TJSAMP_GRAY, 80)});
  originals.push_back({"cmyk.jpg", encode_jpeg(make_photo(32, 32, 4, 11), 32, 32, TJPF_CMYK, TJSAMP_420, 80)});
  for (auto& [name, bytes] : originals) REQUIRE(decode_image(bytes, name).channels == 3);

  std::mt19937_64 rng(20261130);
  auto below = [&](size_t n) { return size_t(rng() % n); };
  const int kPerOriginal = 400;  // x 15 originals = 6,000 files
  int decoded = 0, refused = 0, truncated_jpegs = 0;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> sample;  // for the folder check below
  for (auto& [orig_name, orig] : originals) {
    const bool is_jpeg = image_format(orig) == ImageFormat::Jpeg;
    for (int k = 0; k < kPerOriginal; ++k) {
      std::vector<uint8_t> b = orig;
      std::string how;
      switch (k % 5) {
        case 0:  // 1-8 random bit flips anywhere
          for (size_t n = 1 + below(8); n--;) b[below(b.size())] ^= uint8_t(1u << below(8));
          how = "bitflip";
          break;
        case 1:  // 1-4 random bytes of the headers (the first 700 bytes hold all of them here)
          for (size_t n = 1 + below(4); n--;) {
            const uint8_t values[] = {0x00, 0xFF, 0x80, 0x7F, 0x01, uint8_t(rng())};
            b[below(std::min<size_t>(700, b.size()))] = values[below(6)];
          }
          how = "header";
          break;
        case 2: {  // a random size in the frame header (JPEG SOF, PNG IHDR)
          size_t at = is_jpeg ? (size_t)sof_size_offset(b) : 16;  // PNG: IHDR width, height
          b[at + below(is_jpeg ? 4 : 8)] = uint8_t(rng());
          how = "size";
          break;
        }
        case 3:  // cut at a random length
          b.resize(below(b.size()));
          how = "truncated";
          break;
        case 4:  // cut and flip together
          b.resize(1 + below(b.size()));
          b[below(b.size())] ^= uint8_t(1u << below(8));
          how = "truncated+bitflip";
          break;
      }
      const std::string name = "mutant_" + std::to_string(k) + "_" + how + "_" + orig_name;
      try {
        Image img = decode_image(b, name);
        INFO(name);
        REQUIRE(img.channels == 3);
        REQUIRE(img.height > 0);
        REQUIRE(img.width > 0);
        REQUIRE(img.pixels.size() == size_t(img.height * img.width * 3));
        if (is_jpeg) REQUIRE(how != "truncated");  // a cut JPEG is an error, never a grey-filled image
        ++decoded;
      } catch (const Error& e) {
        // Any other exception type escapes and fails the test case.
        INFO(e.what());
        REQUIRE_THAT(e.what(), Contains(name));
        ++refused;
        if (is_jpeg && how == "truncated") ++truncated_jpegs;
      }
      if (k < 5) sample.push_back({name, b});
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("mutated files: " << decoded + refused << " (" << decoded << " decoded to an image, " << refused
                         << " refused with an error naming the file) in " << seconds << " s");
  REQUIRE(decoded + refused == kPerOriginal * (int)originals.size());
  REQUIRE(decoded > 200);   // the mutations are not all fatal (flips in entropy data often are not)
  REQUIRE(refused > 2000);  // and the decoders do notice most of them
  REQUIRE(truncated_jpegs == kPerOriginal / 5 * 9);

  // The same through the image folder: skip_bad_files drops exactly the files decode_image refuses.
  fs::path dir = fs::temp_directory_path() / ("anybit_test_fuzz_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "all");
  int bad = 0;
  for (auto& [name, bytes] : sample) {
    std::ofstream f(dir / "all" / name, std::ios::binary);
    f.write((const char*)bytes.data(), (std::streamsize)bytes.size());
    REQUIRE(f.good());
    try {
      decode_image(bytes, name);
    } catch (const Error&) {
      ++bad;
    }
  }
  // (The folder lists each skipped file on stderr: a few dozen lines.)
  ImageFolderDataset::Options opt;
  opt.skip_bad_files = true;
  ImageFolderDataset ds(dir.string(), opt);
  REQUIRE(ds.num_skipped() == bad);
  REQUIRE(ds.size() == (int64_t)sample.size() - bad);
  for (int64_t i = 0; i < ds.size(); ++i) REQUIRE(ds.get(i).image.channels == 3);
  fs::remove_all(dir);
}
