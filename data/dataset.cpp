// dataset.cpp - reading files into memory, and open_dataset's recognition of a dataset folder.
// The loaders themselves: mnist.cpp, cifar.cpp, image_folder.cpp.
#include "data/dataset.h"

#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace anybit::data {

namespace fs = std::filesystem;

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

static std::vector<uint8_t> read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  AB_CHECK(f, "read_file: cannot open ", path, ": ", std::strerror(errno));
  gzbuffer(f, 1 << 18);
  std::vector<uint8_t> out;
  size_t chunk = 1 << 20;
  for (;;) {
    size_t at = out.size();
    out.resize(at + chunk);
    int n = gzread(f, out.data() + at, (unsigned)chunk);
    if (n < 0) {
      int code = 0;
      std::string why = gzerror(f, &code);
      gzclose(f);
      AB_FAIL("read_file: ", path, " is not a valid gzip file or is truncated: ", why);
    }
    out.resize(at + n);
    if (n == 0) break;
  }
  // gzread stops silently at a truncated stream; gzclose_r reports it.
  int rc = gzclose(f);
  AB_CHECK(rc == Z_OK, "read_file: ", path, " is a truncated or corrupt gzip file (zlib code ", rc,
           ")");
  return out;
}

std::vector<uint8_t> read_file(const std::string& path) {
  if (ends_with(path, ".gz")) return read_gzip(path);
  FILE* f = std::fopen(path.c_str(), "rb");
  AB_CHECK(f, "read_file: cannot open ", path, ": ", std::strerror(errno));
  std::vector<uint8_t> out;
  if (std::fseek(f, 0, SEEK_END) == 0) {
    long n = std::ftell(f);
    if (n > 0) out.reserve((size_t)n);
    std::fseek(f, 0, SEEK_SET);
  }
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  bool failed = std::ferror(f);
  std::fclose(f);
  AB_CHECK(!failed, "read_file: error while reading ", path, ": ", std::strerror(errno));
  return out;
}

// ---- open_dataset -------------------------------------------------------------------------------

static bool exists_any(const fs::path& dir, const std::vector<std::string>& names) {
  for (auto& n : names)
    if (fs::exists(dir / n)) return true;
  return false;
}

static std::shared_ptr<Dataset> open_in(const fs::path& dir, const std::string& split, bool skip_bad_files,
                                        int64_t min_short_side) {
  bool train = split == "train";
  std::string mnist_split = train ? "train" : "t10k";
  if (exists_any(dir, {mnist_split + "-images-idx3-ubyte", mnist_split + "-images-idx3-ubyte.gz"}))
    return std::make_shared<MnistDataset>(dir.string(), mnist_split);
  if (exists_any(dir, {"data_batch_1.bin", "test_batch.bin"}))
    return std::make_shared<CifarDataset>(dir.string(), split, CifarDataset::Kind::Cifar10);
  if (exists_any(dir, {"train.bin", "test.bin"}))
    return std::make_shared<CifarDataset>(dir.string(), split, CifarDataset::Kind::Cifar100Fine);
  // An image folder; ImageNet's layout names its test split "val".
  fs::path folder = dir / split;
  if (!train && !fs::is_directory(folder) && fs::is_directory(dir / "val") && fs::is_directory(dir / "train"))
    folder = dir / "val";
  if (fs::is_directory(folder)) {
    ImageFolderDataset::Options opt;
    opt.skip_bad_files = skip_bad_files;
    opt.min_short_side = min_short_side;
    return std::make_shared<ImageFolderDataset>(folder.string(), opt);
  }
  return nullptr;
}

std::shared_ptr<Dataset> open_dataset(const std::string& root, const std::string& split, bool skip_bad_files,
                                      int64_t min_short_side) {
  AB_CHECK(split == "train" || split == "test", "open_dataset: split must be \"train\" or \"test\", got \"",
           split, "\"");
  AB_CHECK(fs::is_directory(root), "open_dataset: ", root, " is not a folder (missing dataset? ",
           "scripts/get-data.sh NAME DEST fetches one)");
  for (const char* sub : {"", "cifar-10-batches-bin", "cifar-100-binary"}) {
    fs::path dir = *sub ? fs::path(root) / sub : fs::path(root);
    if (!fs::is_directory(dir)) continue;
    if (auto ds = open_in(dir, split, skip_bad_files, min_short_side)) return ds;
  }
  AB_FAIL("open_dataset: ", root, " holds no dataset anybit recognises for split \"", split,
          "\": expected MNIST IDX files (", split == "train" ? "train" : "t10k",
          "-images-idx3-ubyte[.gz]), CIFAR binary batches (data_batch_1.bin, test_batch.bin, ",
          "train.bin) or an image folder ", root, "/", split, "/<class>/<image>",
          split == "test" ? " (or root/val/<class>/<image> beside root/train)" : "");
}

}  // namespace anybit::data
