// mnist.cpp - the MNIST loader: the official IDX files, raw or gzip-compressed.
//
// IDX layout (big-endian 32-bit integers, then the body):
//   images: magic 2051 (0x00000803: unsigned bytes, 3 dimensions), count, rows, cols,
//           then count * rows * cols pixel bytes, row-major, 0 = background
//   labels: magic 2049 (0x00000801: unsigned bytes, 1 dimension), count, then count label bytes
// Both files are read whole (47 MB raw for the training images) and kept in memory.
#include <filesystem>

#include "data/dataset.h"
#include "tensor/error.h"

namespace anybit::data {

namespace fs = std::filesystem;

static uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) |
         uint32_t(b[at + 3]);
}

// The path of `name` or `name.gz` in folder, or an error listing both.
static std::string find_idx(const std::string& folder, const std::string& name) {
  fs::path raw = fs::path(folder) / name, gz = fs::path(folder) / (name + ".gz");
  if (fs::exists(raw)) return raw.string();
  if (fs::exists(gz)) return gz.string();
  AB_FAIL("MnistDataset: missing file ", raw.string(), " (or ", gz.filename().string(),
          "); scripts/get-data.sh mnist DEST fetches MNIST");
}

MnistDataset::MnistDataset(const std::string& folder, const std::string& split)
    : folder_(folder), split_(split == "test" ? "t10k" : split) {
  AB_CHECK(split_ == "train" || split_ == "t10k", "MnistDataset: split must be \"train\" or \"t10k\" ",
           "(or \"test\"), got \"", split, "\"");
  AB_CHECK(fs::is_directory(folder), "MnistDataset: folder ", folder, " does not exist");
  std::string ipath = find_idx(folder, split_ + "-images-idx3-ubyte");
  std::string lpath = find_idx(folder, split_ + "-labels-idx1-ubyte");

  // images: header of 4 integers, then the pixels
  std::vector<uint8_t> ib = read_file(ipath);
  AB_CHECK(ib.size() >= 16, "MnistDataset: ", ipath, " is too short for an IDX header (", ib.size(),
           " bytes, need 16)");
  uint32_t magic = be32(ib, 0);
  AB_CHECK(magic == 2051, "MnistDataset: ", ipath, " has wrong magic number ", magic,
           " (an IDX image file starts with 2051); is it an MNIST images file?");
  count_ = be32(ib, 4);
  rows_ = be32(ib, 8);
  cols_ = be32(ib, 12);
  AB_CHECK(count_ > 0 && rows_ > 0 && cols_ > 0 && rows_ <= 4096 && cols_ <= 4096,
           "MnistDataset: ", ipath, " has implausible dimensions ", count_, " x ", rows_, " x ", cols_);
  size_t body = (size_t)count_ * rows_ * cols_;
  AB_CHECK(ib.size() - 16 == body, "MnistDataset: ", ipath, " body is ", ib.size() - 16,
           " bytes, but the header promises ", count_, " images of ", rows_, "x", cols_, " = ", body,
           " bytes (", ib.size() - 16 < body ? "truncated file" : "trailing bytes", ")");
  pixels_.assign(ib.begin() + 16, ib.end());

  // labels: header of 2 integers, then one byte per image
  std::vector<uint8_t> lb = read_file(lpath);
  AB_CHECK(lb.size() >= 8, "MnistDataset: ", lpath, " is too short for an IDX header (", lb.size(),
           " bytes, need 8)");
  magic = be32(lb, 0);
  AB_CHECK(magic == 2049, "MnistDataset: ", lpath, " has wrong magic number ", magic,
           " (an IDX label file starts with 2049); is it an MNIST labels file?");
  int64_t nlabels = be32(lb, 4);
  AB_CHECK(nlabels == count_, "MnistDataset: ", lpath, " holds ", nlabels, " labels but ", ipath,
           " holds ", count_, " images");
  AB_CHECK((int64_t)lb.size() - 8 == nlabels, "MnistDataset: ", lpath, " body is ", lb.size() - 8,
           " bytes, but the header promises ", nlabels, " labels (",
           (int64_t)lb.size() - 8 < nlabels ? "truncated file" : "trailing bytes", ")");
  labels_.assign(lb.begin() + 8, lb.end());
  for (int64_t i = 0; i < count_; ++i)
    AB_CHECK(labels_[i] <= 9, "MnistDataset: ", lpath, ": label ", int(labels_[i]), " of example ", i,
             " is out of range 0..9");
  for (int d = 0; d < 10; ++d) names_.push_back(std::to_string(d));
}

Example MnistDataset::get(int64_t index) const {
  AB_CHECK(index >= 0 && index < count_, "MnistDataset::get: index ", index, " out of range [0, ",
           count_, ")");
  Example ex;
  ex.image = Image(rows_, cols_, 1);
  const uint8_t* src = pixels_.data() + (size_t)index * rows_ * cols_;
  std::copy(src, src + rows_ * cols_, ex.image.pixels.begin());
  ex.label = labels_[index];
  return ex;
}

std::string MnistDataset::describe() const {
  return detail::cat("MNIST ", split_, " (", count_, " images, ", rows_, "x", cols_, "x1) in ", folder_);
}

}  // namespace anybit::data
