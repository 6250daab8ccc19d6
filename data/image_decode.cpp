// image_decode.cpp - decode_image: an image file held in memory -> 8-bit RGB HWC (dataset.h).
//
// Which decoder reads a file is decided by its first bytes (its "magic"), never by its name:
//   FF D8 FF                   JPEG -> libjpeg-turbo through its TurboJPEG API (turbojpeg.h)
//   89 'P' 'N' 'G' 0D 0A 1A 0A PNG  -> stb_image
//   'B' 'M'                    BMP  -> stb_image
// anything else is an error naming the file and its first bytes.
//
// Why libjpeg-turbo and not stb_image for JPEG. Image folders are untrusted input (downloaded
// datasets hold corrupt and odd files). Fed 1,600 mutated CIFAR-10 JPEGs, the stb_image that
// Debian ships wrote past the end of its Huffman size table on 10 of them (stb_image.h:1990,
// UBSan: "index 257 out of bounds for type 'stbi_uc [257]'"): memory corruption from a file.
// libjpeg-turbo is the reference implementation everyone fuzzes (OSS-Fuzz), it is faster (SIMD:
// 1.4x on 32x32 CIFAR files, 2-2.5x on 500x375 and larger, docs/BENCHMARKS.md), and it can
// decode at 1/2, 1/4 or 1/8 of the size straight from the DCT coefficients, which is what
// ImageNet-size training wants (min_short_side below). stb_image stays for PNG and BMP, and is
// compiled without its JPEG decoder, so no file can reach that code.
//
// Our JPEG policy, stricter than libjpeg's default:
//   * Warnings are errors (TJFLAG_STOPONWARNING). libjpeg "warns" and carries on when the entropy
//     data is corrupt (bad Huffman code, a marker in the middle of the data) or ends early (a
//     truncated file): it then fills the rest of the image with grey. For training data such an
//     image is not the image it claims to be, so decode_image throws instead, naming the file and
//     libjpeg's message ("Premature end of JPEG file", ...). The price: a few real-world files
//     whose only fault is benign (e.g. "extraneous bytes before marker") are rejected too;
//     ImageFolderDataset's skip_bad_files drops and lists them.
//   * Progressive JPEGs with an absurd number of scans are refused (TJFLAG_LIMITSCANS, a known
//     denial-of-service pattern), and so are images over kMaxPixels pixels (a tampered header
//     must not make us allocate gigabytes).
//   * CMYK/YCCK JPEGs (a few dozen in ImageNet) are converted to RGB the way stb_image did
//     (Adobe's inverted CMYK: R = C * K / 255, ...), so no file that used to load stops loading.
// The header's own checks (dimensions, sampling factors, table indices) are libjpeg's.
//
// TurboJPEG handles are not thread-safe but cheap to keep, so each thread keeps one
// (thread_local), created on first use: the DataLoader's worker threads decode concurrently.
// stb keeps its failure reason in a thread-local, so it is safe from the workers too.
// Read next: image_folder.cpp (the dataset that calls this), transforms.h.
#include <turbojpeg.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

#include "data/dataset.h"
#include "tensor/error.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP  // no STBI_ONLY_JPEG: JPEG goes to libjpeg-turbo (see the file comment)
#define STBI_NO_STDIO  // we read files ourselves (read_file), so errors name them uniformly
#include <stb_image.h>

namespace anybit::data {

ImageFormat image_format(const std::vector<uint8_t>& bytes) {
  auto starts = [&](std::initializer_list<uint8_t> magic) {
    if (bytes.size() < magic.size()) return false;
    size_t i = 0;
    for (uint8_t m : magic)
      if (bytes[i++] != m) return false;
    return true;
  };
  if (starts({0xFF, 0xD8, 0xFF})) return ImageFormat::Jpeg;
  if (starts({0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A})) return ImageFormat::Png;
  if (starts({'B', 'M'})) return ImageFormat::Bmp;
  return ImageFormat::Unknown;
}

namespace {

// The largest image (width * height, before any scaling) we agree to decode: 64 Mpixel, 192 MB
// as RGB, far above any training image (ImageNet's largest is about 10 Mpixel) and far below what
// a tampered header can claim (65535 x 65535 = 4.3 Gpixel).
constexpr int64_t kMaxPixels = int64_t(1) << 26;

// One TurboJPEG decompressor per thread (see the file comment), destroyed at thread exit.
struct ThreadDecompressor {
  tjhandle h = nullptr;
  ~ThreadDecompressor() { reset(); }
  void reset() {
    if (h) tjDestroy(h);
    h = nullptr;
  }
};
thread_local ThreadDecompressor tls_decompressor;

tjhandle thread_decompressor(const std::string& name) {
  if (!tls_decompressor.h) {
    tls_decompressor.h = tjInitDecompress();
    AB_CHECK(tls_decompressor.h, "decode_image: cannot create a TurboJPEG decompressor for ", name, ": ",
             tjGetErrorStr2(nullptr));
  }
  return tls_decompressor.h;
}

// libjpeg's message ("warning" when libjpeg would have carried on, see the file comment), for the
// exception. Then the handle is thrown away: libjpeg-turbo 2.1's tjDecompressHeader3 leaves the
// decompressor mid-file after an error, and the next file then fails with "two SOI markers"
// (found by the test in tests/test_image_decode.cpp). A new handle costs microseconds, and only
// on a bad file.
std::string tj_reason_and_reset(tjhandle h) {
  std::string reason = detail::cat(tjGetErrorCode(h) == TJERR_WARNING ? "corrupt data (libjpeg warning): " : "",
                                   tjGetErrorStr2(h));
  tls_decompressor.reset();
  return reason;
}

Image decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& name, int64_t min_short_side) {
  tjhandle h = thread_decompressor(name);
  const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  // TurboJPEG 2.x takes the size as unsigned long; our vectors are far below that.
  if (tjDecompressHeader3(h, bytes.data(), (unsigned long)bytes.size(), &width, &height, &subsamp,
                          &colorspace) != 0)
    AB_FAIL("decode_image: cannot decode JPEG ", name, ": bad header: ", tj_reason_and_reset(h),
            " (corrupt or truncated file)");
  // tjDecompressHeader3 does not fail on a file that ends inside the header: it returns 0x0.
  AB_CHECK(width > 0 && height > 0, "decode_image: cannot decode JPEG ", name, ": the header gives size ",
           width, "x", height, " (truncated file?)");
  AB_CHECK(int64_t(width) * height <= kMaxPixels, "decode_image: cannot decode JPEG ", name, ": it claims ", width, "x",
           height, " pixels, over the limit of ", kMaxPixels,
           " pixels (tampered header? data/image_decode.cpp: kMaxPixels)");

  // The scale: the smallest of 1/8, 1/4, 1/2 whose shorter side is still >= min_short_side, else
  // full size. libjpeg-turbo also offers n/8 for other n, but these three have its specialised
  // reduced IDCTs (SIMD for 1/2 and 1/4), and halving steps keep the choice easy to predict.
  tjscalingfactor scale{1, 1};
  if (min_short_side > 0) {
    for (int denom : {8, 4, 2}) {
      tjscalingfactor s{1, denom};
      if (std::min(TJSCALED(width, s), TJSCALED(height, s)) >= min_short_side) {
        scale = s;
        break;
      }
    }
  }
  const int out_w = TJSCALED(width, scale), out_h = TJSCALED(height, scale);

  // CMYK and YCCK images (Adobe) are decoded to CMYK, then converted below.
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const int channels = cmyk ? 4 : 3;
  std::vector<uint8_t> buf;
  Image img(out_h, out_w, 3);
  uint8_t* dst = img.pixels.data();
  if (cmyk) {
    buf.resize(size_t(out_w) * out_h * 4);
    dst = buf.data();
  }
  if (tjDecompress2(h, bytes.data(), (unsigned long)bytes.size(), dst, out_w, out_w * channels, out_h,
                    cmyk ? TJPF_CMYK : TJPF_RGB, flags) != 0)
    AB_FAIL("decode_image: cannot decode JPEG ", name, " (", width, "x", height, "): ", tj_reason_and_reset(h),
            " (corrupt or truncated file)");
  if (cmyk) {
    // Adobe writes CMYK inverted (255 = no ink), so with the stored values c, m, y, k:
    // R = c * k / 255, G = m * k / 255, B = y * k / 255 (what stb_image and PIL do).
    const size_t n = size_t(out_w) * out_h;
    for (size_t i = 0; i < n; ++i) {
      const unsigned k = buf[i * 4 + 3];
      for (int c = 0; c < 3; ++c) img.pixels[i * 3 + c] = uint8_t((buf[i * 4 + c] * k + 127) / 255);
    }
  }
  return img;
}

Image decode_stb(const std::vector<uint8_t>& bytes, const std::string& name, const char* format) {
  AB_CHECK(bytes.size() <= size_t(INT32_MAX), "decode_image: ", format, " ", name, " is ", bytes.size(),
           " bytes, more than stb_image reads (2 GB)");
  int w = 0, h = 0, comp = 0;
  AB_CHECK(stbi_info_from_memory(bytes.data(), (int)bytes.size(), &w, &h, &comp), "decode_image: cannot decode ",
           format, " ", name, ": bad header: ", stbi_failure_reason(), " (corrupt or truncated file)");
  AB_CHECK(int64_t(w) * h <= kMaxPixels, "decode_image: cannot decode ", format, " ", name, ": it claims ", w, "x", h,
           " pixels, over the limit of ", kMaxPixels, " pixels (tampered header? data/image_decode.cpp: kMaxPixels)");
  uint8_t* px = stbi_load_from_memory(bytes.data(), (int)bytes.size(), &w, &h, &comp, 3);
  AB_CHECK(px, "decode_image: cannot decode ", format, " ", name, ": ", stbi_failure_reason(),
           " (corrupt or truncated file)");
  Image img;
  img.height = h;
  img.width = w;
  img.channels = 3;
  img.pixels.assign(px, px + (size_t)w * h * 3);
  stbi_image_free(px);
  return img;
}

}  // namespace

Image decode_image(const std::vector<uint8_t>& bytes, const std::string& name, int64_t min_short_side) {
  AB_CHECK(!bytes.empty(), "decode_image: ", name, " is an empty file");
  switch (image_format(bytes)) {
    case ImageFormat::Jpeg: return decode_jpeg(bytes, name, min_short_side);
    case ImageFormat::Png: return decode_stb(bytes, name, "PNG");
    case ImageFormat::Bmp: return decode_stb(bytes, name, "BMP");
    case ImageFormat::Unknown: break;
  }
  char first[64];
  const uint8_t* b = bytes.data();
  if (bytes.size() >= 4)
    std::snprintf(first, sizeof first, "%02X %02X %02X %02X", b[0], b[1], b[2], b[3]);
  else
    std::snprintf(first, sizeof first, "%zu bytes", bytes.size());
  AB_FAIL("decode_image: cannot decode ", name, ": not a JPEG, PNG or BMP file (it starts with ", first,
          "; the format is recognised by these first bytes, not by the file name)");
}

}  // namespace anybit::data
