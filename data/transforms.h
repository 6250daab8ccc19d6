// transforms.h - per-example preprocessing and augmentation.
//
// Geometric transforms work on the 8-bit HWC Image a Dataset returns (dataset.h): cropping,
// flipping and resizing bytes is 4x less memory traffic than doing it on floats, and the result
// is the same because each output pixel is either one input pixel or, for resizing, rounded once.
// The last step converts to float CHW in [0, 1] and normalises per channel, writing straight into
// the batch tensor (loader.h).
//
// Every random choice draws from the anybit::Generator passed in. The DataLoader gives each
// example its own generator derived from (seed, epoch, example index), so augmentation does not
// depend on which worker thread handles the example, or in which order.
//
// The deterministic primitives (crop, flip_horizontal, resize_bilinear, to_float, normalize_)
// are exposed so the tests can check the random transforms against them.
// Read next: loader.h.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace anybit::data {

// ---- deterministic primitives on 8-bit HWC images ---------------------------------------------
// The h x w window whose top-left corner is (y0, x0); the window may extend past the image
// (negative y0/x0 included): pixels outside it are `fill` (zero padding by default).
Image crop(const Image& in, int64_t y0, int64_t x0, int64_t h, int64_t w, uint8_t fill = 0);
Image flip_horizontal(const Image& in);  // out(y, x) = in(y, W - 1 - x)
// Bilinear resize to (h, w) with half-pixel centres (OpenCV's INTER_LINEAR, PyTorch's
// align_corners=False): source coordinate = (dst + 0.5) * in / out - 0.5, clamped to the image.
// No anti-aliasing: shrinking by more than 2x skips pixels (PIL would average them).
Image resize_bilinear(const Image& in, int64_t h, int64_t w);
// Bilinear resize with anti-aliasing, as PIL's Image.resize(BILINEAR) (what torchvision's Resize
// and RandomResizedCrop use on PIL images): along an axis shrunk by s > 1 the triangle filter is
// widened to s input pixels on each side, so every input pixel contributes; along an axis kept or
// enlarged it is resize_bilinear. Output x along an axis of n_in -> n_out pixels:
//   centre c = (x + 0.5) * s,  s = n_in / n_out,  f = max(s, 1)
//   out = sum_i w_i in_i / sum_i w_i,  w_i = max(0, 1 - |i + 0.5 - c| / f),
//   i over [max(0, floor(c - f + 0.5)), min(n_in, floor(c + f + 0.5)))
// Rows first, then columns, in float; rounded to the nearest byte once (PIL rounds after each
// pass: the two differ by at most 1).
Image resize_bilinear_antialias(const Image& in, int64_t h, int64_t w);

// ---- float CHW --------------------------------------------------------------------------------
// img (H, W, C) uint8 -> (C, H, W) float32 in [0, 1] (value / 255).
Tensor to_float(const Image& img);
// x: (C, H, W) or (N, C, H, W) float32, contiguous; x[.., c, :, :] = (x - mean[c]) / std[c].
void normalize_(Tensor& x, const std::vector<float>& mean, const std::vector<float>& std);

// ---- random and deterministic transforms as objects, for a Pipeline --------------------------
class Transform {
 public:
  virtual ~Transform() = default;
  virtual Image apply(const Image& in, Generator& gen) const = 0;
  virtual std::string name() const = 0;  // "random_crop(32, pad 4)"
};
using TransformPtr = std::shared_ptr<const Transform>;

// A size x size window at a uniformly random position of the image padded by `padding` zero
// pixels on every side (the CIFAR augmentation: random_crop(32, 4)).
TransformPtr random_crop(int64_t size, int64_t padding = 0);
// Mirrors left-right with probability p.
TransformPtr random_horizontal_flip(double p = 0.5);
// Scales so that the shorter side becomes `size` and the longer int(size * long / short) (as
// torchvision's Resize(size)); bilinear, or with antialias resize_bilinear_antialias.
TransformPtr resize_shorter_side(int64_t size, bool antialias = false);
// The size x size window at the centre, as torchvision's CenterCrop: it starts round((n - size)
// / 2) in, half to even; zero padding, (size - n) / 2 before, where the image is smaller.
TransformPtr center_crop(int64_t size);
// The ImageNet augmentation (Inception / torchvision RandomResizedCrop): a window covering a
// random fraction in [scale_lo, scale_hi] of the area with aspect ratio log-uniform in
// [ratio_lo, ratio_hi] (10 tries, then the central crop of clamped aspect), resized to size x size
// (bilinear; with antialias, resize_bilinear_antialias).
TransformPtr random_resized_crop(int64_t size, double scale_lo = 0.08, double scale_hi = 1.0,
                                 double ratio_lo = 3.0 / 4.0, double ratio_hi = 4.0 / 3.0, bool antialias = false);

// The window random_resized_crop cuts from an image of height x width, as torchvision's
// RandomResizedCrop.get_params draws it: up to 10 attempts, each drawing
//   area   = height * width * U(scale_lo, scale_hi)
//   aspect = exp(U(log ratio_lo, log ratio_hi))          (width / height)
//   w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect))
// and accepting the first with 0 < w <= width and 0 < h <= height, at a uniformly random
// position (y0 uniform in [0, height - h], then x0 in [0, width - w]). When no attempt fits, the
// fallback is the central window of the whole image with its aspect clamped to [ratio_lo,
// ratio_hi]. Each attempt draws exactly two uniforms from gen, an accepted one two more (below).
struct CropBox {
  int64_t y0 = 0, x0 = 0, h = 0, w = 0;
  bool fallback = false;  // no attempt fitted: the central crop
};
CropBox random_resized_crop_box(int64_t height, int64_t width, Generator& gen, double scale_lo = 0.08,
                                double scale_hi = 1.0, double ratio_lo = 3.0 / 4.0, double ratio_hi = 4.0 / 3.0);

// TSN's multi-scale crop (the augmentation of the TSN and TSM code bases for video): with b the
// shorter side, the crop's height and width are each one of int(b * {1, .875, .75, .66}) (a side
// within 3 pixels of `size` becomes size), drawn as one of the pairs whose two scales are at most
// one step apart (so the aspect changes a little), clamped to the image; its top-left corner is
// one of 13 fixed points of a grid in steps of a quarter of the room left, (y, x) in
// {(0,0) (0,4) (4,0) (4,4) (2,2) (2,0) (2,4) (4,2) (0,2) (1,1) (1,3) (3,1) (3,3)} x step; the window
// is resized to size x size (bilinear with anti-aliasing). Two draws: the pair, then the point.
CropBox multi_scale_crop_box(int64_t height, int64_t width, int64_t size, Generator& gen);
TransformPtr multi_scale_crop(int64_t size);

// The whole per-example preprocessing: the transforms in order, then to float [0, 1] CHW, then
// (when mean/std are given, one per channel) normalisation.
struct Pipeline {
  std::vector<TransformPtr> steps;
  std::vector<float> mean, std;  // empty: no normalisation

  Image augment(const Image& in, Generator& gen) const;  // the 8-bit steps only
  // Writes the finished example into out (C, H, W) float32, contiguous; img is augment()'s result.
  void to_chw(const Image& img, float* out) const;
  Tensor operator()(const Image& in, Generator& gen) const;  // (C, H, W) float32
  std::string describe() const;
};

// Per-channel statistics commonly used with the datasets here (of the training sets, in [0, 1]).
// ImageNet's are torchvision's (the RGB means and standard deviations every pretrained model uses).
extern const std::vector<float> kMnistMean, kMnistStd, kCifar10Mean, kCifar10Std, kImageNetMean, kImageNetStd;

// The standard ImageNet pipelines (torchvision's reference recipe), for image folders of any
// image sizes:
//   training:   random_resized_crop(crop) (scale 0.08..1, ratio 3/4..4/3), random flip, normalise
//   evaluation: resize_shorter_side(resize), center_crop(crop), normalise
// with ImageNet's mean and std, both resizes anti-aliased as PIL's; crop = 224 and resize = 256
// are the usual sizes.
Pipeline imagenet_train_pipeline(int64_t crop = 224);
Pipeline imagenet_eval_pipeline(int64_t resize = 256, int64_t crop = 224);

}  // namespace anybit::data
