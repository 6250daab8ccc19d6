// transforms.cpp - the preprocessing and augmentation steps of transforms.h.
#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace anybit::data {

const std::vector<float> kMnistMean = {0.1307f}, kMnistStd = {0.3081f};
const std::vector<float> kCifar10Mean = {0.4914f, 0.4822f, 0.4465f};
const std::vector<float> kCifar10Std = {0.2470f, 0.2435f, 0.2616f};
const std::vector<float> kImageNetMean = {0.485f, 0.456f, 0.406f};
const std::vector<float> kImageNetStd = {0.229f, 0.224f, 0.225f};

// ---- primitives ---------------------------------------------------------------------------------

Image crop(const Image& in, int64_t y0, int64_t x0, int64_t h, int64_t w, uint8_t fill) {
  AB_CHECK(h > 0 && w > 0, "crop: window ", h, "x", w, " must be non-empty");
  const int64_t C = in.channels;
  Image out(h, w, C);
  std::fill(out.pixels.begin(), out.pixels.end(), fill);
  // The part of the window inside the image: rows [ya, yb), columns [xa, xb) of the output.
  int64_t ya = std::max<int64_t>(0, -y0), yb = std::min<int64_t>(h, in.height - y0);
  int64_t xa = std::max<int64_t>(0, -x0), xb = std::min<int64_t>(w, in.width - x0);
  if (xa >= xb) return out;
  for (int64_t y = ya; y < yb; ++y) {
    const uint8_t* src = &in.pixels[((y + y0) * in.width + (xa + x0)) * C];
    std::copy(src, src + (xb - xa) * C, &out.pixels[(y * w + xa) * C]);
  }
  return out;
}

Image flip_horizontal(const Image& in) {
  const int64_t C = in.channels, W = in.width;
  Image out(in.height, W, C);
  for (int64_t y = 0; y < in.height; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < C; ++c) out.pixels[(y * W + x) * C + c] = in.pixels[(y * W + W - 1 - x) * C + c];
  return out;
}

// For each output coordinate along one axis: the two source indices and the weight of the second.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> t;
};
static Taps bilinear_taps(int64_t in, int64_t out) {
  Taps taps;
  double scale = double(in) / double(out);
  for (int64_t o = 0; o < out; ++o) {
    double s = (o + 0.5) * scale - 0.5;  // half-pixel centres
    s = std::clamp(s, 0.0, double(in - 1));
    int64_t a = (int64_t)std::floor(s);
    int64_t b = std::min(a + 1, in - 1);
    taps.i0.push_back(a);
    taps.i1.push_back(b);
    taps.t.push_back(float(s - a));
  }
  return taps;
}

Image resize_bilinear(const Image& in, int64_t h, int64_t w) {
  AB_CHECK(h > 0 && w > 0 && in.height > 0 && in.width > 0, "resize_bilinear: cannot resize ",
           in.height, "x", in.width, " to ", h, "x", w);
  if (h == in.height && w == in.width) return in;
  const int64_t C = in.channels;
  Taps ty = bilinear_taps(in.height, h), tx = bilinear_taps(in.width, w);
  Image out(h, w, C);
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* r0 = &in.pixels[ty.i0[y] * in.width * C];
    const uint8_t* r1 = &in.pixels[ty.i1[y] * in.width * C];
    float fy = ty.t[y];
    for (int64_t x = 0; x < w; ++x) {
      int64_t a = tx.i0[x] * C, b = tx.i1[x] * C;
      float fx = tx.t[x];
      for (int64_t c = 0; c < C; ++c) {
        // out = (1-fy) [(1-fx) p00 + fx p01] + fy [(1-fx) p10 + fx p11], rounded to nearest
        float top = r0[a + c] + fx * (r0[b + c] - r0[a + c]);
        float bot = r1[a + c] + fx * (r1[b + c] - r1[a + c]);
        float v = top + fy * (bot - top);
        out.pixels[(y * w + x) * C + c] = (uint8_t)std::clamp(std::lround(v), 0L, 255L);
      }
    }
  }
  return out;
}

// PIL's resampling coefficients along one axis (precompute_coeffs in libImaging/Resample.c) with
// the bilinear (triangle) filter: for each output index its first input index and weights.
struct AxisFilter {
  std::vector<int64_t> first;
  std::vector<std::vector<float>> weights;
};
static AxisFilter antialias_taps(int64_t in, int64_t out) {
  AxisFilter f;
  const double scale = double(in) / double(out), fscale = std::max(scale, 1.0), support = fscale;
  for (int64_t o = 0; o < out; ++o) {
    double centre = (o + 0.5) * scale;
    int64_t lo = std::max<int64_t>(0, (int64_t)std::floor(centre - support + 0.5));
    int64_t hi = std::min<int64_t>(in, (int64_t)std::floor(centre + support + 0.5));
    std::vector<double> w;
    double total = 0;
    for (int64_t i = lo; i < hi; ++i) {
      double d = std::abs((i + 0.5 - centre) / fscale);
      w.push_back(d < 1 ? 1 - d : 0);
      total += w.back();
    }
    std::vector<float> wf;
    for (double v : w) wf.push_back(float(total > 0 ? v / total : 0));
    f.first.push_back(lo);
    f.weights.push_back(wf);
  }
  return f;
}

Image resize_bilinear_antialias(const Image& in, int64_t h, int64_t w) {
  AB_CHECK(h > 0 && w > 0 && in.height > 0 && in.width > 0, "resize_bilinear_antialias: cannot resize ",
           in.height, "x", in.width, " to ", h, "x", w);
  if (h == in.height && w == in.width) return in;
  const int64_t C = in.channels, W = in.width;
  AxisFilter fy = antialias_taps(in.height, h), fx = antialias_taps(W, w);
  // Pass 1, along y: rows (h, W, C) in float.
  std::vector<float> mid((size_t)h * W * C, 0.0f);
  for (int64_t y = 0; y < h; ++y) {
    float* dst = &mid[(size_t)y * W * C];
    const auto& wy = fy.weights[y];
    for (size_t k = 0; k < wy.size(); ++k) {
      const uint8_t* src = &in.pixels[(size_t)(fy.first[y] + (int64_t)k) * W * C];
      for (int64_t i = 0; i < W * C; ++i) dst[i] += wy[k] * src[i];
    }
  }
  // Pass 2, along x, rounded once.
  Image out(h, w, C);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const auto& wx = fx.weights[x];
      for (int64_t c = 0; c < C; ++c) {
        float v = 0;
        for (size_t k = 0; k < wx.size(); ++k) v += wx[k] * mid[((size_t)y * W + fx.first[x] + (int64_t)k) * C + c];
        out.pixels[(y * w + x) * C + c] = (uint8_t)std::clamp(std::lround(v), 0L, 255L);
      }
    }
  return out;
}

// ---- float CHW ----------------------------------------------------------------------------------

// out[c, y, x] = px(y, x, c) * scale[c] + bias[c]; the one loop behind to_float and to_chw.
static void hwc_to_chw(const Image& img, const float* scale, const float* bias, float* out) {
  const int64_t C = img.channels, HW = img.height * img.width;
  const uint8_t* px = img.pixels.data();
  for (int64_t c = 0; c < C; ++c) {
    float s = scale[c], b = bias[c];
    float* o = out + c * HW;
    for (int64_t i = 0; i < HW; ++i) o[i] = px[i * C + c] * s + b;
  }
}

Tensor to_float(const Image& img) {
  Tensor out = Tensor::empty({img.channels, img.height, img.width}, DType::F32);
  std::vector<float> scale(img.channels, 1.0f / 255.0f), bias(img.channels, 0.0f);
  hwc_to_chw(img, scale.data(), bias.data(), out.data<float>());
  return out;
}

void normalize_(Tensor& x, const std::vector<float>& mean, const std::vector<float>& std) {
  AB_CHECK(x.dtype() == DType::F32 && x.is_contiguous() && (x.dim() == 3 || x.dim() == 4),
           "normalize_: x must be a contiguous float32 (C, H, W) or (N, C, H, W) tensor, got ", x.str(),
           " ", shape_str(x.shape()));
  const int64_t C = x.size(-3), HW = x.size(-1) * x.size(-2), N = x.numel() / (C * HW);
  AB_CHECK((int64_t)mean.size() == C && (int64_t)std.size() == C, "normalize_: x ", shape_str(x.shape()),
           " has ", C, " channels but mean has ", mean.size(), " and std ", std.size(), " values");
  float* p = x.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      AB_CHECK(std[c] > 0, "normalize_: std[", c, "] = ", std[c], " must be positive");
      float m = mean[c], inv = 1.0f / std[c];
      float* q = p + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) q[i] = (q[i] - m) * inv;
    }
}

// ---- transform objects --------------------------------------------------------------------------

namespace {

struct RandomCrop : Transform {
  int64_t size, pad;
  RandomCrop(int64_t s, int64_t p) : size(s), pad(p) {}
  Image apply(const Image& in, Generator& gen) const override {
    AB_CHECK(size <= in.height + 2 * pad && size <= in.width + 2 * pad, name(), ": image ", in.height, "x",
             in.width, " padded by ", pad, " is smaller than the crop");
    // top-left corner in padded coordinates, uniform over every position that fits
    int64_t oy = (int64_t)gen.below(in.height + 2 * pad - size + 1);
    int64_t ox = (int64_t)gen.below(in.width + 2 * pad - size + 1);
    return crop(in, oy - pad, ox - pad, size, size);
  }
  std::string name() const override { return detail::cat("random_crop(", size, ", pad ", pad, ")"); }
};

struct RandomFlip : Transform {
  double p;
  explicit RandomFlip(double p_) : p(p_) {}
  Image apply(const Image& in, Generator& gen) const override {
    return gen.uniform() < p ? flip_horizontal(in) : in;
  }
  std::string name() const override { return detail::cat("random_horizontal_flip(", p, ")"); }
};

struct ResizeShorter : Transform {
  int64_t size;
  bool antialias;
  ResizeShorter(int64_t s, bool aa) : size(s), antialias(aa) {}
  Image apply(const Image& in, Generator&) const override {
    // The longer side becomes int(size * long / short), truncated, as torchvision's Resize(size).
    int64_t h = size, w = size;
    if (in.height < in.width)
      w = std::max<int64_t>(1, (int64_t)(double(size) * in.width / in.height));
    else
      h = std::max<int64_t>(1, (int64_t)(double(size) * in.height / in.width));
    return antialias ? resize_bilinear_antialias(in, h, w) : resize_bilinear(in, h, w);
  }
  std::string name() const override {
    return detail::cat("resize_shorter_side(", size, antialias ? ", antialias" : "", ")");
  }
};

struct CenterCrop : Transform {
  int64_t size;
  explicit CenterCrop(int64_t s) : size(s) {}
  Image apply(const Image& in, Generator&) const override {
    // As torchvision's CenterCrop: the window starts round((n - size) / 2) in, rounding half to
    // even as Python does (an odd margin 2k + 1 starts at k if k is even, else k + 1); when the
    // image is smaller, it is padded by (size - n) / 2 before and the rest after.
    auto start = [&](int64_t n) {
      int64_t d = n - size;
      if (d < 0) return -((-d) / 2);
      int64_t k = d / 2;
      return d % 2 == 0 || k % 2 == 0 ? k : k + 1;
    };
    return crop(in, start(in.height), start(in.width), size, size);
  }
  std::string name() const override { return detail::cat("center_crop(", size, ")"); }
};

struct RandomResizedCrop : Transform {
  int64_t size;
  double slo, shi, rlo, rhi;
  bool antialias;
  RandomResizedCrop(int64_t s, double a, double b, double c, double d, bool aa)
      : size(s), slo(a), shi(b), rlo(c), rhi(d), antialias(aa) {}
  Image apply(const Image& in, Generator& gen) const override {
    CropBox box = random_resized_crop_box(in.height, in.width, gen, slo, shi, rlo, rhi);
    Image window = crop(in, box.y0, box.x0, box.h, box.w);
    return antialias ? resize_bilinear_antialias(window, size, size) : resize_bilinear(window, size, size);
  }
  std::string name() const override {
    return detail::cat("random_resized_crop(", size, ", scale ", slo, "..", shi, ", ratio ", rlo, "..", rhi,
                       antialias ? ", antialias" : "", ")");
  }
};

}  // namespace

TransformPtr random_crop(int64_t size, int64_t padding) {
  AB_CHECK(size > 0 && padding >= 0, "random_crop: size ", size, " must be positive and padding ", padding,
           " non-negative");
  return std::make_shared<RandomCrop>(size, padding);
}
TransformPtr random_horizontal_flip(double p) {
  AB_CHECK(p >= 0 && p <= 1, "random_horizontal_flip: p = ", p, " must be in [0, 1]");
  return std::make_shared<RandomFlip>(p);
}
TransformPtr resize_shorter_side(int64_t size, bool antialias) {
  AB_CHECK(size > 0, "resize_shorter_side: size ", size, " must be positive");
  return std::make_shared<ResizeShorter>(size, antialias);
}
TransformPtr center_crop(int64_t size) {
  AB_CHECK(size > 0, "center_crop: size ", size, " must be positive");
  return std::make_shared<CenterCrop>(size);
}
TransformPtr random_resized_crop(int64_t size, double scale_lo, double scale_hi, double ratio_lo,
                                 double ratio_hi, bool antialias) {
  AB_CHECK(size > 0 && 0 < scale_lo && scale_lo <= scale_hi && scale_hi <= 1 && 0 < ratio_lo &&
               ratio_lo <= ratio_hi,
           "random_resized_crop: need size > 0, 0 < scale_lo <= scale_hi <= 1, 0 < ratio_lo <= ratio_hi; got size ",
           size, ", scale ", scale_lo, "..", scale_hi, ", ratio ", ratio_lo, "..", ratio_hi);
  return std::make_shared<RandomResizedCrop>(size, scale_lo, scale_hi, ratio_lo, ratio_hi, antialias);
}

CropBox random_resized_crop_box(int64_t height, int64_t width, Generator& gen, double scale_lo, double scale_hi,
                                double ratio_lo, double ratio_hi) {
  AB_CHECK(height > 0 && width > 0, "random_resized_crop: empty image ", height, "x", width);
  const double H = double(height), W = double(width), area = H * W;
  const double log_lo = std::log(ratio_lo), log_hi = std::log(ratio_hi);
  CropBox box;
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target = area * (scale_lo + (scale_hi - scale_lo) * gen.uniform());
    double aspect = std::exp(log_lo + (log_hi - log_lo) * gen.uniform());
    int64_t w = std::lround(std::sqrt(target * aspect));
    int64_t h = std::lround(std::sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      box.h = h;
      box.w = w;
      box.y0 = (int64_t)gen.below(height - h + 1);
      box.x0 = (int64_t)gen.below(width - w + 1);
      return box;
    }
  }
  // Fallback: the central window of the whole image, its aspect clamped to [ratio_lo, ratio_hi].
  box.fallback = true;
  box.h = height;
  box.w = width;
  double ratio = W / H;
  if (ratio < ratio_lo)
    box.h = std::max<int64_t>(1, std::lround(W / ratio_lo));
  else if (ratio > ratio_hi)
    box.w = std::max<int64_t>(1, std::lround(H * ratio_hi));
  box.y0 = (height - box.h) / 2;
  box.x0 = (width - box.w) / 2;
  return box;
}

// TSN's multi-scale crop (see transforms.h for the rule).
CropBox multi_scale_crop_box(int64_t height, int64_t width, int64_t size, Generator& gen) {
  AB_CHECK(height > 0 && width > 0, "multi_scale_crop: empty image ", height, "x", width);
  const double scales[4] = {1.0, 0.875, 0.75, 0.66};
  const int64_t base = std::min(height, width);
  int64_t sides[4];
  for (int i = 0; i < 4; ++i) {
    sides[i] = (int64_t)(base * scales[i]);
    if (std::abs(sides[i] - size) < 3) sides[i] = size;  // within 3 pixels of the output: no resize
  }
  // (height scale i, width scale j) with |i - j| <= 1: the aspect changes by at most one step.
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j)
      if (std::abs(i - j) <= 1) pairs.emplace_back(std::min(sides[i], height), std::min(sides[j], width));
  auto [h, w] = pairs[gen.below(pairs.size())];
  // The 13 fixed positions on a 4 x 4 grid of steps: corners, centre, edge midpoints, quarters.
  const int64_t ys = (height - h) / 4, xs = (width - w) / 4;
  const int64_t grid[13][2] = {{0, 0}, {0, 4}, {4, 0}, {4, 4}, {2, 2}, {2, 0}, {2, 4},
                               {4, 2}, {0, 2}, {1, 1}, {1, 3}, {3, 1}, {3, 3}};
  const auto& g = grid[gen.below(13)];
  CropBox box;
  box.y0 = g[0] * ys;
  box.x0 = g[1] * xs;
  box.h = h;
  box.w = w;
  return box;
}

struct MultiScaleCrop : Transform {
  int64_t size;
  explicit MultiScaleCrop(int64_t s) : size(s) {}
  Image apply(const Image& in, Generator& gen) const override {
    CropBox box = multi_scale_crop_box(in.height, in.width, size, gen);
    Image window = crop(in, box.y0, box.x0, box.h, box.w);
    return box.h == size && box.w == size ? window : resize_bilinear_antialias(window, size, size);
  }
  std::string name() const override { return detail::cat("multi_scale_crop(", size, ")"); }
};

TransformPtr multi_scale_crop(int64_t size) {
  AB_CHECK(size > 0, "multi_scale_crop: size must be positive, got ", size);
  return std::make_shared<MultiScaleCrop>(size);
}

Pipeline imagenet_train_pipeline(int64_t crop) {
  Pipeline p;
  p.steps = {random_resized_crop(crop, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0, /*antialias=*/true), random_horizontal_flip()};
  p.mean = kImageNetMean;
  p.std = kImageNetStd;
  return p;
}

Pipeline imagenet_eval_pipeline(int64_t resize, int64_t crop) {
  AB_CHECK(resize >= crop, "imagenet_eval_pipeline: resize ", resize, " is smaller than the crop ", crop);
  Pipeline p;
  p.steps = {resize_shorter_side(resize, /*antialias=*/true), center_crop(crop)};
  p.mean = kImageNetMean;
  p.std = kImageNetStd;
  return p;
}

// ---- Pipeline -----------------------------------------------------------------------------------

Image Pipeline::augment(const Image& in, Generator& gen) const {
  if (steps.empty()) return in;
  Image img = steps[0]->apply(in, gen);
  for (size_t i = 1; i < steps.size(); ++i) img = steps[i]->apply(img, gen);
  return img;
}

void Pipeline::to_chw(const Image& img, float* out) const {
  const int64_t C = img.channels;
  std::vector<float> scale(C, 1.0f / 255.0f), bias(C, 0.0f);
  if (!mean.empty() || !std.empty()) {
    AB_CHECK((int64_t)mean.size() == C && (int64_t)std.size() == C, "Pipeline: the image has ", C,
             " channels but mean has ", mean.size(), " and std ", std.size(), " values");
    // (v / 255 - mean) / std = v * (1 / (255 std)) - mean / std
    for (int64_t c = 0; c < C; ++c) {
      AB_CHECK(std[c] > 0, "Pipeline: std[", c, "] = ", std[c], " must be positive");
      scale[c] = 1.0f / (255.0f * std[c]);
      bias[c] = -mean[c] / std[c];
    }
  }
  hwc_to_chw(img, scale.data(), bias.data(), out);
}

Tensor Pipeline::operator()(const Image& in, Generator& gen) const {
  Image img = augment(in, gen);
  Tensor out = Tensor::empty({img.channels, img.height, img.width}, DType::F32);
  to_chw(img, out.data<float>());
  return out;
}

std::string Pipeline::describe() const {
  std::string s;
  for (auto& t : steps) s += t->name() + ", ";
  s += "to_float";
  if (!mean.empty()) s += ", normalize";
  return s;
}

}  // namespace anybit::data
