// dataset.h - image datasets: an indexable list of (decoded image, integer label).
//
// A Dataset hands out one example at a time as a decoded 8-bit image in HWC layout (height,
// width, channels; the layout image files and the CIFAR/MNIST bytes already have) plus its class
// index. Everything numeric (cropping, flipping, conversion to float CHW, normalisation) happens
// later, in transforms.h, and batching and worker threads in loader.h.
//
// The loaders here:
//   MnistDataset        the official IDX files (raw or .gz), split "train" or "t10k"
//   CifarDataset        the official binary files of CIFAR-10 and CIFAR-100
//   ImageFolderDataset  root/<class>/<image file>, JPEG (libjpeg-turbo), PNG/BMP (stb_image)
//   open_dataset(root, split) recognises which of the three a folder holds.
//
// MNIST and CIFAR are small (50-180 MB decoded), so their loaders read the whole files into
// memory once; an image folder is read file by file in get(), and the DataLoader's optional cache
// keeps the decoded images. get() is const and thread-safe: worker threads call it concurrently.
//
// Every error is an anybit::Error naming the file or folder and what is wrong with it.
// Read next: transforms.h, loader.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/random.h"

namespace anybit::data {

// An 8-bit image, pixels in HWC order: pixels[(y * width + x) * channels + c].
struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int64_t h, int64_t w, int64_t c) : height(h), width(w), channels(c), pixels(h * w * c) {}
  uint8_t& at(int64_t y, int64_t x, int64_t c) { return pixels[(y * width + x) * channels + c]; }
  uint8_t at(int64_t y, int64_t x, int64_t c) const {
    return pixels[(y * width + x) * channels + c];
  }
};

struct Example {
  Image image;
  int64_t label = 0;  // in [0, num_classes())
  // A video example (data/video.h): its clip's frames in order, all of one size; `image` is empty.
  std::vector<Image> frames;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Example get(int64_t index) const = 0;  // thread-safe; throws on a bad index or file
  // The DataLoader calls this one, with the example's own generator: a dataset that samples
  // (a video dataset picks its clip's frames) draws from gen before the transforms do. Images
  // ignore it.
  virtual Example get(int64_t index, Generator& gen) const { return get(index); }
  // 0: examples are images; F > 0: every example is F frames (Example::frames), a video clip.
  virtual int64_t frames_per_example() const { return 0; }
  virtual const std::vector<std::string>& class_names() const = 0;
  int64_t num_classes() const { return (int64_t)class_names().size(); }
  virtual std::string describe() const = 0;  // "MNIST train (60000 images, 28x28x1) in DIR"
};

// ---- MNIST ----------------------------------------------------------------------------------
// folder holds <split>-images-idx3-ubyte and <split>-labels-idx1-ubyte, each raw or with .gz
// (split = "train" or "t10k"; "test" is accepted for "t10k"). Checked: magic numbers (2051 for
// images, 2049 for labels), dimensions, body length, equal counts, labels in 0..9.
class MnistDataset : public Dataset {
 public:
  MnistDataset(const std::string& folder, const std::string& split);
  int64_t size() const override { return count_; }
  Example get(int64_t index) const override;
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string describe() const override;
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

 private:
  std::string folder_, split_;
  int64_t count_ = 0, rows_ = 0, cols_ = 0;
  std::vector<uint8_t> pixels_;  // count * rows * cols, the IDX body
  std::vector<uint8_t> labels_;
  std::vector<std::string> names_;
};

// ---- CIFAR ----------------------------------------------------------------------------------
// CIFAR-10 binary version: folder holds data_batch_1.bin .. data_batch_5.bin (train) and
// test_batch.bin (test); a record is 1 label byte + 3072 pixel bytes (3 planes of 32x32, R G B).
// CIFAR-100: train.bin / test.bin, a record is coarse label, fine label, 3072 pixel bytes.
// folder may also be the parent of the official archives' folder (cifar-10-batches-bin,
// cifar-100-binary). Class names come from batches.meta.txt / fine_label_names.txt when present.
class CifarDataset : public Dataset {
 public:
  enum class Kind { Cifar10, Cifar100Fine, Cifar100Coarse };
  CifarDataset(const std::string& folder, const std::string& split, Kind kind = Kind::Cifar10);
  int64_t size() const override { return count_; }
  Example get(int64_t index) const override;
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string describe() const override;

  static constexpr int64_t kSide = 32, kPixels = 3 * 32 * 32;

 private:
  std::string folder_, split_;
  Kind kind_;
  int64_t count_ = 0;
  std::vector<uint8_t> pixels_;  // count * 3072, CHW per record
  std::vector<uint8_t> labels_;
  std::vector<std::string> names_;
};

// ---- image folder ---------------------------------------------------------------------------
// root/<class>/<file>: classes are the sub-folders in sorted order, files are sorted within each
// class; files ending .jpg .jpeg .png .bmp (any case) are taken, others ignored; a class folder
// without one is an error naming it. Each file is decoded by decode_image below (the format is
// read from its first bytes) to 3 channels (RGB).
//
// A corrupt file makes get() throw naming the file and the decoder's reason. With skip_bad_files
// the constructor instead decodes every file once, drops those that fail (printing each to stderr
// and counting them in num_skipped()); this costs one full decode pass at construction.
//
// min_short_side > 0 lets large JPEGs be decoded at reduced size (see decode_image): for
// ImageNet-style training that resizes the shorter side to 256, min_short_side = 256 decodes a
// 1024x768 photo at 1/2 (512x384), 1.3-1.4x faster than at full size (docs/BENCHMARKS.md); a
// 500x375 one stays full size (its half, 250x188, is too small). PNG and BMP are always decoded
// at full size.
class ImageFolderDataset : public Dataset {
 public:
  struct Options {
    bool skip_bad_files = false;
    int64_t min_short_side = 0;  // 0: full size; else JPEGs at the smallest scale keeping this
  };
  explicit ImageFolderDataset(const std::string& root) : ImageFolderDataset(root, Options()) {}
  ImageFolderDataset(const std::string& root, const Options& options);
  int64_t size() const override { return (int64_t)files_.size(); }
  Example get(int64_t index) const override;
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string describe() const override;
  const std::string& path(int64_t index) const { return files_.at(index); }
  int64_t label(int64_t index) const { return labels_.at(index); }  // without decoding
  int64_t num_skipped() const { return skipped_; }

 private:
  std::string root_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
  int64_t skipped_ = 0;
  int64_t min_short_side_ = 0;
};

// ---- decoding (image_decode.cpp) ---------------------------------------------------------
enum class ImageFormat { Unknown, Jpeg, Png, Bmp };
// The format by the file's first bytes (FF D8 FF, 89 "PNG" 0D 0A 1A 0A, "BM"), not its name.
ImageFormat image_format(const std::vector<uint8_t>& bytes);

// Decodes an image file held in memory to 3-channel (RGB) HWC. JPEG goes to libjpeg-turbo
// (TurboJPEG API), PNG and BMP to stb_image. `name` (the path) is used in the error messages,
// which also give the decoder's reason. Strict: a JPEG that libjpeg only warns about (corrupt
// entropy data, a truncated file, which libjpeg would fill with grey) is an error too, and so is
// any image over 64 Mpixel; the reasons are in image_decode.cpp.
//
// min_short_side > 0: a JPEG is decoded at the smallest of the scales 1/8, 1/4, 1/2 whose shorter
// side is still >= min_short_side (sides rounded up: ceil(side * scale)), else at full size. E.g.
// 500x375 with min_short_side 256 stays full size, 1024x768 becomes 512x384, 4000x3000 becomes
// 500x375. The downscaling happens inside the inverse DCT (an area average, no aliasing). PNG and
// BMP ignore it.
Image decode_image(const std::vector<uint8_t>& bytes, const std::string& name, int64_t min_short_side = 0);

// Opens whatever dataset `root` holds, for split "train" or "test":
//   MNIST files in root                          -> MnistDataset (test = t10k)
//   data_batch_*.bin / test_batch.bin            -> CifarDataset CIFAR-10
//   train.bin / test.bin (CIFAR-100 sizes)       -> CifarDataset CIFAR-100 fine labels
//   root/<split>/<class>/<files>                 -> ImageFolderDataset (test: root/val/... when
//                                                   there is no root/test, as ImageNet is laid out)
// The official archives' sub-folders (cifar-10-batches-bin, cifar-100-binary) are looked into.
// skip_bad_files: for image folders, drop (and log) files that fail to decode instead of failing.
// min_short_side: for image folders, ImageFolderDataset::Options::min_short_side (scaled JPEG decode).
std::shared_ptr<Dataset> open_dataset(const std::string& root, const std::string& split,
                                      bool skip_bad_files = false, int64_t min_short_side = 0);

// Reads a whole file into memory (gzip-compressed when the name ends in .gz), or throws naming
// the file and the system's reason.
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace anybit::data
