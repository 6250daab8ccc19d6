// cifar.cpp - the CIFAR-10 and CIFAR-100 loaders: the official binary versions.
//
// A file is a plain sequence of fixed-size records, no header:
//   CIFAR-10:  <1 byte label 0..9> <3072 bytes pixels>            (3073 bytes)
//   CIFAR-100: <1 byte coarse 0..19> <1 byte fine 0..99> <3072>   (3074 bytes)
// The 3072 pixel bytes are three 32x32 planes, red, green, blue, each row-major: CHW. get()
// turns one record into the HWC Image every Dataset returns.
#include <filesystem>

#include "data/dataset.h"
#include "tensor/error.h"

namespace anybit::data {

namespace fs = std::filesystem;

static const char* kCifar10Names[] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                      "dog",      "frog",       "horse", "ship", "truck"};

static const char* kCifar100Fine[] = {
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm"};

static const char* kCifar100Coarse[] = {
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"};

// One name per non-empty line of a meta file (batches.meta.txt, fine_label_names.txt), or the
// built-in list when the file is absent or has the wrong number of names.
static std::vector<std::string> class_names_from(const fs::path& meta, const char* const* builtin,
                                                 size_t n) {
  if (fs::exists(meta)) {
    std::vector<uint8_t> bytes = read_file(meta.string());
    std::vector<std::string> names;
    std::string line;
    for (uint8_t b : bytes) {
      if (b == '\n' || b == '\r') {
        if (!line.empty()) names.push_back(line);
        line.clear();
      } else {
        line += char(b);
      }
    }
    if (!line.empty()) names.push_back(line);
    if (names.size() == n) return names;
  }
  return std::vector<std::string>(builtin, builtin + n);
}

CifarDataset::CifarDataset(const std::string& folder, const std::string& split, Kind kind)
    : folder_(folder), split_(split), kind_(kind) {
  AB_CHECK(split == "train" || split == "test", "CifarDataset: split must be \"train\" or \"test\", got \"",
           split, "\"");
  bool c10 = kind == Kind::Cifar10;
  const char* what = c10 ? "CIFAR-10" : "CIFAR-100";
  AB_CHECK(fs::is_directory(folder), "CifarDataset: ", what, " folder ", folder, " does not exist");
  std::vector<std::string> names;
  if (c10 && split == "train")
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  else if (c10)
    names.push_back("test_batch.bin");
  else
    names.push_back(split + ".bin");

  // The official archives unpack into a sub-folder; accept its parent too.
  fs::path dir = folder;
  fs::path sub = dir / (c10 ? "cifar-10-batches-bin" : "cifar-100-binary");
  if (!fs::exists(dir / names[0]) && fs::exists(sub / names[0])) dir = sub;

  const size_t label_bytes = c10 ? 1 : 2, record = label_bytes + kPixels;
  const int max_label = kind == Kind::Cifar100Fine ? 99 : kind == Kind::Cifar100Coarse ? 19 : 9;
  const size_t label_at = kind == Kind::Cifar100Fine ? 1 : 0;  // which label byte we keep
  for (const std::string& name : names) {
    fs::path p = dir / name;
    AB_CHECK(fs::exists(p), "CifarDataset: missing file ", p.string(), " (", what, " ", split,
             " split; scripts/get-data.sh cifar10 DEST fetches CIFAR-10)");
    std::vector<uint8_t> bytes = read_file(p.string());
    AB_CHECK(!bytes.empty() && bytes.size() % record == 0, "CifarDataset: ", p.string(), " is ",
             bytes.size(), " bytes, not a whole number of ", record, "-byte ", what,
             " records (truncated or not a ", what, " binary file?)");
    size_t n = bytes.size() / record;
    for (size_t r = 0; r < n; ++r) {
      const uint8_t* rec = bytes.data() + r * record;
      AB_CHECK(rec[label_at] <= max_label, "CifarDataset: ", p.string(), ": record ", r, " has label ",
               int(rec[label_at]), ", out of range 0..", max_label);
      labels_.push_back(rec[label_at]);
      pixels_.insert(pixels_.end(), rec + label_bytes, rec + record);
    }
    count_ += (int64_t)n;
  }
  if (c10)
    names_ = class_names_from(dir / "batches.meta.txt", kCifar10Names, 10);
  else if (kind == Kind::Cifar100Fine)
    names_ = class_names_from(dir / "fine_label_names.txt", kCifar100Fine, 100);
  else
    names_ = class_names_from(dir / "coarse_label_names.txt", kCifar100Coarse, 20);
  folder_ = dir.string();
}

Example CifarDataset::get(int64_t index) const {
  AB_CHECK(index >= 0 && index < count_, "CifarDataset::get: index ", index, " out of range [0, ",
           count_, ")");
  Example ex;
  ex.image = Image(kSide, kSide, 3);
  const uint8_t* src = pixels_.data() + (size_t)index * kPixels;  // (3, 32, 32)
  uint8_t* dst = ex.image.pixels.data();                          // (32, 32, 3)
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < kSide * kSide; ++i) dst[i * 3 + c] = src[c * kSide * kSide + i];
  ex.label = labels_[index];
  return ex;
}

std::string CifarDataset::describe() const {
  const char* what = kind_ == Kind::Cifar10          ? "CIFAR-10"
                     : kind_ == Kind::Cifar100Fine ? "CIFAR-100 (fine labels)"
                                                     : "CIFAR-100 (coarse labels)";
  return detail::cat(what, " ", split_, " (", count_, " images, 32x32x3) in ", folder_);
}

}  // namespace anybit::data
