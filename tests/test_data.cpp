// test_data.cpp - the data pipeline: MNIST from the shared copy, every loader's error messages on
// corrupted files generated here, image decoding, transforms on tiny synthetic images, and the
// DataLoader's determinism contract (same batches for any number of workers, resume mid-epoch).
// Tag [data]. Tests never download: without the shared MNIST copy those checks skip, saying so.
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "tests/skips.h"

// stb_image_write makes the tiny PNG/BMP files the image-folder tests read (tests only; JPEGs
// are written with TurboJPEG).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

using namespace anybit;
using namespace anybit::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("anybit_test_data_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write((const char*)bytes.data(), (std::streamsize)bytes.size());
  REQUIRE(f.good());
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(gzwrite(f, bytes.data(), (unsigned)bytes.size()) == (int)bytes.size());
  REQUIRE(gzclose(f) == Z_OK);
}

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

// An IDX image file: magic, count, rows, cols, then the pixels (pixel i = i mod 251).
std::vector<uint8_t> idx_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, size_t body) {
  std::vector<uint8_t> b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, rows);
  put_be32(b, cols);
  for (size_t i = 0; i < body; ++i) b.push_back(uint8_t(i % 251));
  return b;
}
std::vector<uint8_t> idx_labels(uint32_t magic, uint32_t n, const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> b;
  put_be32(b, magic);
  put_be32(b, n);
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// Where the shared MNIST copy is, or "" (the test then skips and says so).
std::string mnist_dir() {
  const char* env = std::getenv("ANYBIT_SHARED_DATASETS");
  std::string root = env ? env : "/work/shared/datasets";
  std::string dir = root + "/mnist";
  if (fs::exists(dir + "/train-images-idx3-ubyte.gz") || fs::exists(dir + "/train-images-idx3-ubyte"))
    return dir;
  return "";
}

Image make_image(int64_t h, int64_t w, int64_t c, uint64_t seed) {
  Image img(h, w, c);
  Generator g(seed);
  for (auto& p : img.pixels) p = uint8_t(g.below(256));
  return img;
}

// An in-memory dataset of random images; example `fail_at` throws (to test error propagation).
struct SyntheticDataset : Dataset {
  std::vector<Image> images;
  std::vector<std::string> names{"a", "b", "c"};
  int64_t fail_at = -1;
  SyntheticDataset(int64_t n, int64_t h, int64_t w, int64_t c) {
    for (int64_t i = 0; i < n; ++i) images.push_back(make_image(h, w, c, 1000 + i));
  }
  int64_t size() const override { return (int64_t)images.size(); }
  Example get(int64_t i) const override {
    if (i == fail_at) throw Error("SyntheticDataset: example " + std::to_string(i) + " is broken");
    return {images.at(i), i % 3, {}};
  }
  const std::vector<std::string>& class_names() const override { return names; }
  std::string describe() const override { return "synthetic"; }
};

std::vector<Batch> whole_epoch(DataLoader& loader, int64_t epoch, int64_t start = 0) {
  loader.set_epoch(epoch, start);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

void require_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("batch " << i);
    REQUIRE(a[i].index == b[i].index);
    REQUIRE(a[i].indices == b[i].indices);
    REQUIRE(a[i].images.shape() == b[i].images.shape());
    REQUIRE(a[i].images.to_vector<float>() == b[i].images.to_vector<float>());
    REQUIRE(a[i].labels.to_vector<int64_t>() == b[i].labels.to_vector<int64_t>());
  }
}

}  // namespace

// ---- MNIST ----------------------------------------------------------------------------------------

TEST_CASE("MNIST from the shared copy: counts, first labels, pixel statistics", "[data]") {
  std::string dir = mnist_dir();
  if (dir.empty()) {
    test::skip_check("no MNIST at $ANYBIT_SHARED_DATASETS/mnist or /work/shared/datasets/mnist "
                     "(scripts/get-data.sh mnist fetches it; tests never download)");
    return;
  }
  MnistDataset train(dir, "train"), test(dir, "t10k");
  REQUIRE(train.size() == 60000);
  REQUIRE(test.size() == 10000);
  REQUIRE(train.num_classes() == 10);
  REQUIRE(train.rows() == 28);
  REQUIRE(train.cols() == 28);
  std::vector<int64_t> first_train, first_test;
  for (int i = 0; i < 10; ++i) {
    first_train.push_back(train.get(i).label);
    first_test.push_back(test.get(i).label);
  }
  REQUIRE(first_train == std::vector<int64_t>{5, 0, 4, 1, 9, 2, 1, 3, 1, 4});
  REQUIRE(first_test == std::vector<int64_t>{7, 2, 1, 0, 4, 1, 4, 9, 5, 9});

  // Class counts of the training set and its mean pixel (0.1307 * 255, the usual normalisation).
  std::vector<int64_t> counts(10, 0);
  double sum = 0;
  for (int64_t i = 0; i < train.size(); ++i) {
    Example ex = train.get(i);
    REQUIRE(ex.image.height == 28);
    REQUIRE(ex.image.channels == 1);
    counts[ex.label]++;
    for (uint8_t p : ex.image.pixels) sum += p;
  }
  REQUIRE(counts == std::vector<int64_t>{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949});
  REQUIRE(sum / (60000.0 * 784 * 255) == Approx(0.1307).margin(5e-4));
  // The first training image (a 5): a blank border, ink in the middle.
  Example five = train.get(0);
  REQUIRE(five.image.at(0, 0, 0) == 0);
  REQUIRE(five.image.at(27, 27, 0) == 0);
  REQUIRE(*std::max_element(five.image.pixels.begin(), five.image.pixels.end()) == 255);

  auto ds = open_dataset(dir, "test");
  REQUIRE(ds->size() == 10000);
  REQUIRE_THAT(ds->describe(), Contains("MNIST t10k"));
}

TEST_CASE("MNIST loader on generated files: raw and .gz, and every error names the file", "[data]") {
  TempDir tmp;
  // 3 images of 2x4, raw images and gzipped labels
  write_bytes(tmp / "train-images-idx3-ubyte", idx_images(2051, 3, 2, 4, 24));
  write_gz(tmp / "train-labels-idx1-ubyte.gz", idx_labels(2049, 3, {7, 0, 9}));
  MnistDataset ds(tmp.path.string(), "train");
  REQUIRE(ds.size() == 3);
  Example ex = ds.get(1);
  REQUIRE(ex.label == 0);
  REQUIRE(ex.image.height == 2);
  REQUIRE(ex.image.width == 4);
  REQUIRE(ex.image.pixels == std::vector<uint8_t>{8, 9, 10, 11, 12, 13, 14, 15});
  REQUIRE_THROWS_WITH(ds.get(3), Contains("index 3 out of range"));

  SECTION("missing folder and missing file") {
    REQUIRE_THROWS_WITH(MnistDataset(tmp / "nope", "train"), Contains("nope") && Contains("does not exist"));
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "t10k"),
                        Contains("missing file") && Contains("t10k-images-idx3-ubyte"));
  }
  SECTION("wrong magic") {
    write_bytes(tmp / "train-images-idx3-ubyte", idx_images(2049, 3, 2, 4, 24));
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"),
                        Contains("train-images-idx3-ubyte") && Contains("wrong magic number 2049"));
  }
  SECTION("short body") {
    write_bytes(tmp / "train-images-idx3-ubyte", idx_images(2051, 3, 2, 4, 20));
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"),
                        Contains("train-images-idx3-ubyte") && Contains("truncated file") && Contains("20 bytes"));
  }
  SECTION("too short for a header") {
    write_bytes(tmp / "train-images-idx3-ubyte", {0, 0, 8});
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"), Contains("too short for an IDX header"));
  }
  SECTION("count mismatch between images and labels") {
    write_gz(tmp / "train-labels-idx1-ubyte.gz", idx_labels(2049, 2, {7, 0}));
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"),
                        Contains("train-labels-idx1-ubyte.gz") && Contains("holds 2 labels") &&
                            Contains("holds 3 images"));
  }
  SECTION("label out of range") {
    write_gz(tmp / "train-labels-idx1-ubyte.gz", idx_labels(2049, 3, {7, 10, 9}));
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"),
                        Contains("label 10 of example 1 is out of range"));
  }
  SECTION("wrong label magic") {
    write_gz(tmp / "train-labels-idx1-ubyte.gz", idx_labels(2051, 3, {7, 0, 9}));
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"),
                        Contains("train-labels-idx1-ubyte.gz") && Contains("wrong magic number 2051"));
  }
  SECTION("truncated gzip") {
    fs::remove(tmp / "train-images-idx3-ubyte");
    write_gz(tmp / "train-images-idx3-ubyte.gz", idx_images(2051, 200, 28, 28, 200 * 784));
    auto size = fs::file_size(tmp / "train-images-idx3-ubyte.gz");
    fs::resize_file(tmp / "train-images-idx3-ubyte.gz", size / 2);
    REQUIRE_THROWS_WITH(MnistDataset(tmp.path.string(), "train"),
                        Contains("train-images-idx3-ubyte.gz") && Contains("truncated"));
  }
}

// ---- CIFAR ----------------------------------------------------------------------------------------

TEST_CASE("CIFAR binary loaders: record layout and bad sizes", "[data]") {
  TempDir tmp;
  // Two CIFAR-10 records; pixel byte k of record r = (r * 7 + k) mod 256, planes R, G, B.
  auto record = [](int label_bytes, std::vector<uint8_t> labels, int r) {
    std::vector<uint8_t> rec = labels;
    for (int k = 0; k < 3072; ++k) rec.push_back(uint8_t(r * 7 + k));
    (void)label_bytes;
    return rec;
  };
  std::vector<uint8_t> file;
  for (int r = 0; r < 2; ++r) {
    auto rec = record(1, {uint8_t(r == 0 ? 3 : 9)}, r);
    file.insert(file.end(), rec.begin(), rec.end());
  }
  write_bytes(tmp / "c10/test_batch.bin", file);
  CifarDataset c10(tmp / "c10", "test");
  REQUIRE(c10.size() == 2);
  REQUIRE(c10.class_names()[3] == "cat");
  Example ex = c10.get(1);
  REQUIRE(ex.label == 9);
  REQUIRE(ex.image.channels == 3);
  // HWC pixel (y, x, c) comes from plane c at y * 32 + x
  for (int y : {0, 5, 31})
    for (int x : {0, 17, 31})
      for (int c = 0; c < 3; ++c) REQUIRE(ex.image.at(y, x, c) == uint8_t(7 + c * 1024 + y * 32 + x));
  REQUIRE(open_dataset(tmp / "c10", "test")->size() == 2);

  SECTION("size not a whole number of records") {
    file.resize(file.size() - 5);
    write_bytes(tmp / "c10/test_batch.bin", file);
    REQUIRE_THROWS_WITH(CifarDataset(tmp / "c10", "test"),
                        Contains("test_batch.bin") && Contains("not a whole number of 3073-byte"));
  }
  SECTION("missing training batches") {
    REQUIRE_THROWS_WITH(CifarDataset(tmp / "c10", "train"), Contains("missing file") && Contains("data_batch_1.bin"));
  }
  SECTION("label out of range") {
    file[0] = 10;
    write_bytes(tmp / "c10/test_batch.bin", file);
    REQUIRE_THROWS_WITH(CifarDataset(tmp / "c10", "test"), Contains("record 0 has label 10"));
  }
  SECTION("CIFAR-100: coarse and fine labels, inside the archive's folder") {
    std::vector<uint8_t> f100 = record(2, {4, 72}, 0);
    write_bytes(tmp / "c100/cifar-100-binary/train.bin", f100);
    CifarDataset fine(tmp / "c100", "train", CifarDataset::Kind::Cifar100Fine);
    CifarDataset coarse(tmp / "c100", "train", CifarDataset::Kind::Cifar100Coarse);
    REQUIRE(fine.num_classes() == 100);
    REQUIRE(coarse.num_classes() == 20);
    REQUIRE(fine.get(0).label == 72);
    REQUIRE(fine.class_names()[72] == "seal");
    REQUIRE(coarse.get(0).label == 4);
    REQUIRE(fine.get(0).image.pixels == c10.get(0).image.pixels);
    f100.push_back(0);
    write_bytes(tmp / "c100/cifar-100-binary/train.bin", f100);
    REQUIRE_THROWS_WITH(CifarDataset(tmp / "c100", "train", CifarDataset::Kind::Cifar100Fine),
                        Contains("3075 bytes") && Contains("3074-byte CIFAR-100 records"));
  }
}

// ---- image folder ---------------------------------------------------------------------------------

TEST_CASE("image folder: PNG, BMP and JPEG decode to RGB; classes and files sorted", "[data]") {
  TempDir tmp;
  Image rgb = make_image(5, 7, 3, 1);
  Image grey = make_image(4, 3, 1, 2);
  fs::create_directories(tmp.path / "cats");
  fs::create_directories(tmp.path / "birds");
  fs::create_directories(tmp.path / ".hidden");  // dot folders are not classes
  REQUIRE(stbi_write_png((tmp / "cats/b.png").c_str(), 7, 5, 3, rgb.pixels.data(), 7 * 3));
  REQUIRE(stbi_write_bmp((tmp / "cats/a.bmp").c_str(), 7, 5, 3, rgb.pixels.data()));
  REQUIRE(stbi_write_png((tmp / "birds/grey.PNG").c_str(), 3, 4, 1, grey.pixels.data(), 3));
  // A smooth image so that JPEG at quality 100 stays close.
  Image smooth(16, 16, 3);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int c = 0; c < 3; ++c) smooth.at(y, x, c) = uint8_t(40 + 8 * x + 4 * y + 20 * c);
  // Encoded by TurboJPEG, not stbi_write_jpg: stb_image_write's JPEG writer shifts a negative int
  // left (stb_image_write.h:1263, undefined behaviour that `make sanitize` reports).
  {
    tjhandle tj = tjInitCompress();
    REQUIRE(tj);
    unsigned char* jpg = nullptr;
    unsigned long size = 0;
    REQUIRE(tjCompress2(tj, smooth.pixels.data(), 16, 0, 16, TJPF_RGB, &jpg, &size, TJSAMP_444, 100, 0) == 0);
    write_bytes(tmp / "birds/photo.jpg", std::vector<uint8_t>(jpg, jpg + size));
    tjFree(jpg);
    tjDestroy(tj);
  }
  write_bytes(tmp / "cats/notes.txt", {'h', 'i'});  // not an image: ignored

  ImageFolderDataset ds(tmp.path.string());
  REQUIRE(ds.class_names() == std::vector<std::string>{"birds", "cats"});
  REQUIRE(ds.size() == 4);
  REQUIRE(fs::path(ds.path(0)).filename() == "grey.PNG");
  REQUIRE(fs::path(ds.path(1)).filename() == "photo.jpg");
  REQUIRE(fs::path(ds.path(2)).filename() == "a.bmp");
  REQUIRE(fs::path(ds.path(3)).filename() == "b.png");
  REQUIRE(ds.get(2).label == 1);
  REQUIRE(ds.get(2).image.pixels == rgb.pixels);  // BMP: lossless
  REQUIRE(ds.get(3).image.pixels == rgb.pixels);  // PNG: lossless
  Example g = ds.get(0);                           // grey PNG forced to 3 equal channels
  REQUIRE(g.image.channels == 3);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) REQUIRE(g.image.at(y, x, c) == grey.at(y, x, 0));
  Example j = ds.get(1);
  REQUIRE(j.image.height == 16);
  int worst = 0;
  for (size_t i = 0; i < smooth.pixels.size(); ++i)
    worst = std::max(worst, std::abs(int(j.image.pixels[i]) - int(smooth.pixels[i])));
  REQUIRE(worst <= 6);
}

TEST_CASE("image folder errors: corrupt JPEG, empty folders, skip_bad_files", "[data]") {
  TempDir tmp;
  Image rgb = make_image(4, 4, 3, 3);
  fs::create_directories(tmp.path / "good");
  REQUIRE(stbi_write_png((tmp / "good/1.png").c_str(), 4, 4, 3, rgb.pixels.data(), 12));
  // A JPEG signature followed by junk, and a PNG cut in half.
  write_bytes(tmp / "bad/broken.jpg", {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00, 0x13, 0x37});
  std::vector<uint8_t> png = read_file(tmp / "good/1.png");
  png.resize(png.size() / 2);
  write_bytes(tmp / "bad/cut.png", png);

  ImageFolderDataset ds(tmp.path.string());
  REQUIRE(ds.size() == 3);
  REQUIRE_THROWS_WITH(ds.get(0), Contains("broken.jpg") && Contains("cannot decode"));
  REQUIRE_THROWS_WITH(ds.get(1), Contains("cut.png") && Contains("cannot decode"));
  REQUIRE(ds.get(2).image.pixels == rgb.pixels);

  ImageFolderDataset::Options opt;
  opt.skip_bad_files = true;
  ImageFolderDataset skipping(tmp.path.string(), opt);
  REQUIRE(skipping.size() == 1);
  REQUIRE(skipping.num_skipped() == 2);
  REQUIRE(skipping.get(0).label == 1);
  REQUIRE_THAT(skipping.describe(), Contains("2 bad files skipped"));

  TempDir empty;
  REQUIRE_THROWS_WITH(ImageFolderDataset(empty.path.string()), Contains("has no class sub-folders"));
  fs::create_directories(empty.path / "a");
  write_bytes(empty / "a/readme.txt", {'x'});
  REQUIRE_THROWS_WITH(ImageFolderDataset(empty.path.string()), Contains("no image files") && Contains("empty dataset"));
  REQUIRE_THROWS_WITH(ImageFolderDataset(empty / "missing"), Contains("missing") && Contains("does not exist"));
  REQUIRE_THROWS_WITH(open_dataset(empty.path.string(), "train"), Contains("holds no dataset"));
  // A class folder without images would be a class the model can never learn: an error naming it.
  Image px = make_image(4, 4, 3, 5);
  fs::create_directories(empty.path / "b");
  REQUIRE(stbi_write_png((empty / "b/1.png").c_str(), 4, 4, 3, px.pixels.data(), 12));
  REQUIRE_THROWS_WITH(ImageFolderDataset(empty.path.string()),
                      Contains("class folder") && Contains((empty.path / "a").string()) && Contains("no image files"));
  REQUIRE_THROWS_WITH(read_file(empty / "nothing.bin"), Contains("nothing.bin") && Contains("cannot open"));
}

TEST_CASE("open_dataset: an image folder's test split may be named val, as ImageNet's", "[data]") {
  TempDir tmp;
  Image rgb = make_image(5, 7, 3, 1);
  for (const char* dir : {"train/a", "train/b", "val/a", "val/b"}) {
    fs::create_directories(tmp.path / dir);
    REQUIRE(stbi_write_png((tmp.path / dir / "x.png").c_str(), 7, 5, 3, rgb.pixels.data(), 7 * 3));
  }
  REQUIRE(open_dataset(tmp.path.string(), "test")->describe().find("/val") != std::string::npos);
  REQUIRE(open_dataset(tmp.path.string(), "train")->size() == 2);
  fs::create_directories(tmp.path / "test/a");  // test/ wins when both exist
  REQUIRE(stbi_write_png((tmp.path / "test/a/y.png").c_str(), 7, 5, 3, rgb.pixels.data(), 7 * 3));
  REQUIRE(open_dataset(tmp.path.string(), "test")->size() == 1);
}

// ---- transforms -----------------------------------------------------------------------------------

TEST_CASE("transforms: crop with padding, flip, centre crop on tiny images", "[data]") {
  Image img(2, 3, 1);
  img.pixels = {1, 2, 3, 4, 5, 6};  // rows [1 2 3], [4 5 6]
  REQUIRE(crop(img, 0, 1, 2, 2).pixels == std::vector<uint8_t>{2, 3, 5, 6});
  REQUIRE(crop(img, -1, -1, 3, 3).pixels == std::vector<uint8_t>{0, 0, 0, 0, 1, 2, 0, 4, 5});
  REQUIRE(crop(img, 1, 2, 2, 2, 9).pixels == std::vector<uint8_t>{6, 9, 9, 9});
  REQUIRE(crop(img, 5, 5, 1, 1).pixels == std::vector<uint8_t>{0});
  REQUIRE(flip_horizontal(img).pixels == std::vector<uint8_t>{3, 2, 1, 6, 5, 4});
  Image rgb = make_image(3, 2, 3, 4);
  Image f = flip_horizontal(rgb);
  for (int y = 0; y < 3; ++y)
    for (int c = 0; c < 3; ++c) REQUIRE(f.at(y, 0, c) == rgb.at(y, 1, c));
  Generator gen(0);
  Image big = make_image(6, 8, 1, 5);
  REQUIRE(center_crop(4)->apply(big, gen).pixels == crop(big, 1, 2, 4, 4).pixels);
  // torchvision's round((n - size) / 2), half to even: margins 3 and 5 start at 2, margin 1 at 0.
  REQUIRE(center_crop(4)->apply(make_image(7, 9, 1, 5), gen).pixels == crop(make_image(7, 9, 1, 5), 2, 2, 4, 4).pixels);
  REQUIRE(center_crop(4)->apply(make_image(5, 9, 1, 5), gen).pixels == crop(make_image(5, 9, 1, 5), 0, 2, 4, 4).pixels);
  Image small = center_crop(4)->apply(img, gen);  // 2x3 padded: 1 row above, 0 columns left
  REQUIRE(small.pixels == std::vector<uint8_t>{0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0, 0});

  // random_crop(3, 1) of a 2x3 image: every output is one window of the padded image, and over
  // many draws every one of the 2 x 3 windows appears.
  std::set<std::vector<uint8_t>> seen;
  auto rc = random_crop(3, 1);
  for (uint64_t s = 0; s < 200; ++s) {
    Generator g(s);
    Image out = rc->apply(img, g);
    REQUIRE(out.height == 3);
    bool is_window = false;
    for (int y0 = -1; y0 <= 0; ++y0)
      for (int x0 = -1; x0 <= 1; ++x0) is_window |= out.pixels == crop(img, y0, x0, 3, 3).pixels;
    REQUIRE(is_window);
    seen.insert(out.pixels);
  }
  REQUIRE(seen.size() == 6);
  REQUIRE_THROWS_WITH(random_crop(5, 0)->apply(img, gen), Contains("smaller than the crop"));

  // the flip happens about half the time, never with p = 0, always with p = 1
  int flips = 0;
  for (uint64_t s = 0; s < 400; ++s) {
    Generator g(s);
    flips += random_horizontal_flip(0.5)->apply(img, g).pixels != img.pixels;
  }
  REQUIRE(flips > 150);
  REQUIRE(flips < 250);
  REQUIRE(random_horizontal_flip(0.0)->apply(img, gen).pixels == img.pixels);
  REQUIRE(random_horizontal_flip(1.0)->apply(img, gen).pixels == flip_horizontal(img).pixels);
}

TEST_CASE("transforms: bilinear resize, resize shorter side, random resized crop", "[data]") {
  // 4x4 -> 2x2 with half-pixel centres samples at 0.5 and 2.5: the mean of each 2x2 block
  Image img(4, 4, 1);
  for (int i = 0; i < 16; ++i) img.pixels[i] = uint8_t(i * 10);
  Image half = resize_bilinear(img, 2, 2);
  REQUIRE(half.pixels == std::vector<uint8_t>{25, 45, 105, 125});
  // 1x2 [0, 100] -> 1x4: source x = -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1)
  Image row(1, 2, 1);
  row.pixels = {0, 100};
  REQUIRE(resize_bilinear(row, 1, 4).pixels == std::vector<uint8_t>{0, 25, 75, 100});
  REQUIRE(resize_bilinear(img, 4, 4).pixels == img.pixels);
  Image flat(3, 5, 3);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 77);
  Image up = resize_bilinear(flat, 7, 11);
  REQUIRE(up.height == 7);
  REQUIRE(up.width == 11);
  for (uint8_t p : up.pixels) REQUIRE(p == 77);

  Generator gen(1);
  Image wide = make_image(10, 20, 3, 6);
  Image r = resize_shorter_side(5)->apply(wide, gen);
  REQUIRE(r.height == 5);
  REQUIRE(r.width == 10);
  REQUIRE(r.pixels == resize_bilinear(wide, 5, 10).pixels);
  Image tall = resize_shorter_side(4)->apply(make_image(9, 3, 1, 7), gen);
  REQUIRE(tall.width == 4);
  REQUIRE(tall.height == 12);

  // random_resized_crop: always size x size; with scale and ratio pinned to 1 on a square image
  // it is a plain resize of the whole image.
  auto rrc = random_resized_crop(8);
  for (uint64_t s = 0; s < 50; ++s) {
    Generator g(s);
    Image out = rrc->apply(wide, g);
    REQUIRE(out.height == 8);
    REQUIRE(out.width == 8);
    REQUIRE(out.channels == 3);
  }
  Image square = make_image(12, 12, 3, 8);
  Generator g(3);
  REQUIRE(random_resized_crop(6, 1.0, 1.0, 1.0, 1.0)->apply(square, g).pixels ==
          resize_bilinear(square, 6, 6).pixels);
  REQUIRE_THROWS_WITH(random_resized_crop(6, 0.5, 0.2), Contains("random_resized_crop"));
}

// The crop window of torchvision's RandomResizedCrop.get_params, written out again as a plain
// scalar loop (the specification random_resized_crop_box is checked against), drawing the same
// uniforms from the same generator in the same order.
static CropBox torchvision_crop_ref(int64_t height, int64_t width, Generator& g, double s0, double s1, double r0,
                                    double r1) {
  double area = double(height) * double(width);
  for (int i = 0; i < 10; ++i) {
    double target_area = area * (s0 + (s1 - s0) * g.uniform());
    double log_ratio = std::log(r0) + (std::log(r1) - std::log(r0)) * g.uniform();
    double aspect = std::exp(log_ratio);
    int64_t w = (int64_t)std::floor(std::sqrt(target_area * aspect) + 0.5);
    int64_t h = (int64_t)std::floor(std::sqrt(target_area / aspect) + 0.5);
    if (0 < w && w <= width && 0 < h && h <= height) {
      CropBox b;
      b.h = h;
      b.w = w;
      b.y0 = (int64_t)g.below(height - h + 1);
      b.x0 = (int64_t)g.below(width - w + 1);
      return b;
    }
  }
  CropBox b;
  b.fallback = true;
  double in_ratio = double(width) / double(height);
  if (in_ratio < r0) {
    b.w = width;
    b.h = (int64_t)std::floor(b.w / r0 + 0.5);
  } else if (in_ratio > r1) {
    b.h = height;
    b.w = (int64_t)std::floor(b.h * r1 + 0.5);
  } else {
    b.w = width;
    b.h = height;
  }
  b.y0 = (height - b.h) / 2;
  b.x0 = (width - b.w) / 2;
  return b;
}

TEST_CASE("transforms: the random-resized crop window against torchvision's rule, its statistics and fallback", "[data]") {
  // 1. Window by window against the scalar reference, for 300 seeds on three image shapes.
  for (auto hw : {std::pair<int64_t, int64_t>{300, 500}, {90, 40}, {64, 64}})
    for (uint64_t s = 0; s < 300; ++s) {
      Generator a(s), b(s);
      CropBox got = random_resized_crop_box(hw.first, hw.second, a);
      CropBox want = torchvision_crop_ref(hw.first, hw.second, b, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0);
      INFO(hw.first << "x" << hw.second << " seed " << s);
      REQUIRE(got.y0 == want.y0);
      REQUIRE(got.x0 == want.x0);
      REQUIRE(got.h == want.h);
      REQUIRE(got.w == want.w);
      REQUIRE(got.fallback == want.fallback);
    }

  // 2. Statistics of 4,000 windows of a 400x600 image: always inside the image, area fraction in
  // [0.08, 1] and aspect in [3/4, 4/3] up to the rounding of w and h to whole pixels, both ends
  // of both ranges reached. An attempt (s, r) (area fraction, aspect) fits this 3:2 image iff
  // s <= r / 1.5, so accepted windows are the uniform (s, log r) rectangle cut to that region:
  // integrated numerically, acceptance 0.648, E[log r] = 0.0311 (sd 0.164) and E[s] = 0.3885
  // (sd 0.189); over 4,000 windows the standard errors are 0.0026 and 0.0030. All 10 attempts
  // fail with probability 0.352^10 = 3e-5.
  double min_frac = 1, max_frac = 0, min_ar = 10, max_ar = 0, sum_log_ar = 0, sum_frac = 0;
  int fallbacks = 0, n = 4000;
  for (int s = 0; s < n; ++s) {
    Generator g(1000 + s);
    CropBox b = random_resized_crop_box(400, 600, g);
    REQUIRE(b.y0 >= 0);
    REQUIRE(b.x0 >= 0);
    REQUIRE(b.y0 + b.h <= 400);
    REQUIRE(b.x0 + b.w <= 600);
    fallbacks += b.fallback;
    double frac = double(b.h * b.w) / (400.0 * 600.0), ar = double(b.w) / double(b.h);
    min_frac = std::min(min_frac, frac);
    max_frac = std::max(max_frac, frac);
    min_ar = std::min(min_ar, ar);
    max_ar = std::max(max_ar, ar);
    sum_log_ar += std::log(ar);
    sum_frac += frac;
  }
  REQUIRE(fallbacks <= 2);
  REQUIRE(min_frac >= 0.079);
  REQUIRE(min_frac < 0.085);
  REQUIRE(max_frac <= 0.8895);  // s <= r / 1.5 <= (4/3) / 1.5 = 0.889 on this image
  REQUIRE(max_frac > 0.86);
  REQUIRE(min_ar >= 0.74);  // w and h rounded: up to 0.5 / 140 off either way at the smallest windows
  REQUIRE(min_ar < 0.76);
  REQUIRE(max_ar <= 1.345);
  REQUIRE(max_ar > 1.32);
  REQUIRE(sum_log_ar / n == Approx(0.0311).margin(0.012));
  REQUIRE(sum_frac / n == Approx(0.3885).margin(0.013));

  // 3. Pinned scale and ratio: a 400x400 image gives 200x200 windows (a quarter of the area,
  // square) at positions uniform in [0, 200]: mean 100 (standard error about 1.3 here).
  double sum_y = 0, sum_x = 0;
  int64_t max_y = 0;
  for (int s = 0; s < 2000; ++s) {
    Generator g(s);
    CropBox b = random_resized_crop_box(400, 400, g, 0.25, 0.25, 1.0, 1.0);
    REQUIRE(b.h == 200);
    REQUIRE(b.w == 200);
    sum_y += b.y0;
    sum_x += b.x0;
    max_y = std::max(max_y, b.y0);
  }
  REQUIRE(sum_y / 2000 == Approx(100).margin(5));
  REQUIRE(sum_x / 2000 == Approx(100).margin(5));
  REQUIRE(max_y == 200);

  // 4. Fallback, worked by hand. A 2x100 strip: every attempt asks for h >= round(sqrt(0.08 *
  // 200 / (4/3))) = 3 > 2 rows, so all 10 fail; the aspect 50 is clamped to 4/3: h = 2,
  // w = round(2 * 4/3) = 3, centred: x0 = (100 - 3) / 2 = 48. Its transpose likewise.
  Generator g(5);
  CropBox wide = random_resized_crop_box(2, 100, g);
  REQUIRE(wide.fallback);
  REQUIRE((wide.y0 == 0 && wide.x0 == 48 && wide.h == 2 && wide.w == 3));
  CropBox tall = random_resized_crop_box(100, 2, g);
  REQUIRE(tall.fallback);
  REQUIRE((tall.y0 == 48 && tall.x0 == 0 && tall.h == 3 && tall.w == 2));
  Image strip = make_image(2, 100, 3, 11);
  Generator g2(5);
  REQUIRE(random_resized_crop(7)->apply(strip, g2).pixels == resize_bilinear(crop(strip, 0, 48, 2, 3), 7, 7).pixels);

  // 5. The transform is the window of the box, resized: same generator state, same pixels.
  Image photo = make_image(45, 70, 3, 12);
  for (uint64_t s = 0; s < 20; ++s) {
    Generator a(s), b(s);
    CropBox box = random_resized_crop_box(45, 70, a);
    Image out = random_resized_crop(16)->apply(photo, b);
    REQUIRE(out.height == 16);
    REQUIRE(out.width == 16);
    REQUIRE(out.pixels == resize_bilinear(crop(photo, box.y0, box.x0, box.h, box.w), 16, 16).pixels);
  }
}

// Bilinear resize with half-pixel centres in double precision, one output pixel at a time.
static uint8_t bilinear_ref(const Image& in, int64_t oh, int64_t ow, int64_t y, int64_t x, int64_t c) {
  auto src = [](int64_t o, int64_t n_in, int64_t n_out) {
    double s = (o + 0.5) * double(n_in) / double(n_out) - 0.5;
    return std::min(std::max(s, 0.0), double(n_in - 1));
  };
  double sy = src(y, in.height, oh), sx = src(x, in.width, ow);
  int64_t y0 = (int64_t)std::floor(sy), x0 = (int64_t)std::floor(sx);
  int64_t y1 = std::min(y0 + 1, in.height - 1), x1 = std::min(x0 + 1, in.width - 1);
  double fy = sy - y0, fx = sx - x0;
  double v = (1 - fy) * ((1 - fx) * in.at(y0, x0, c) + fx * in.at(y0, x1, c)) +
             fy * ((1 - fx) * in.at(y1, x0, c) + fx * in.at(y1, x1, c));
  return (uint8_t)std::floor(v + 0.5);
}

TEST_CASE("transforms: bilinear resize against a double-precision scalar reference", "[data]") {
  // Up, down, mixed, to one pixel, and identity; the kernel interpolates in float and rounds
  // once, so a value within 1e-4 of .5 may round the other way: at most 1 level, rarely.
  Image img = make_image(17, 23, 3, 21);
  for (auto hw : {std::pair<int64_t, int64_t>{8, 5}, {40, 31}, {17, 40}, {1, 1}, {17, 23}, {224, 224}}) {
    Image out = resize_bilinear(img, hw.first, hw.second);
    REQUIRE(out.height == hw.first);
    REQUIRE(out.width == hw.second);
    REQUIRE(out.channels == 3);
    int64_t off = 0, total = 0;
    for (int64_t y = 0; y < out.height; ++y)
      for (int64_t x = 0; x < out.width; ++x)
        for (int64_t c = 0; c < 3; ++c) {
          int d = std::abs(int(out.at(y, x, c)) - int(bilinear_ref(img, hw.first, hw.second, y, x, c)));
          REQUIRE(d <= 1);
          off += d;
          ++total;
        }
    INFO(hw.first << "x" << hw.second << ": " << off << " of " << total << " values off by one");
    REQUIRE(off * 200 <= total);
  }
}

// PIL's bilinear resampling of one axis, in double precision (libImaging/Resample.c,
// precompute_coeffs with the triangle filter), applied along y then x.
static std::vector<double> pil_axis(const std::vector<double>& v, int64_t n_in, int64_t n_out) {
  std::vector<double> out(n_out);
  double scale = double(n_in) / n_out, f = std::max(scale, 1.0);
  for (int64_t o = 0; o < n_out; ++o) {
    double centre = (o + 0.5) * scale, sum = 0, total = 0;
    int64_t lo = std::max<int64_t>(0, (int64_t)std::floor(centre - f + 0.5));
    int64_t hi = std::min<int64_t>(n_in, (int64_t)std::floor(centre + f + 0.5));
    for (int64_t i = lo; i < hi; ++i) {
      double w = std::max(0.0, 1 - std::abs(i + 0.5 - centre) / f);
      sum += w * v[i];
      total += w;
    }
    out[o] = sum / total;
  }
  return out;
}
static Image pil_resize_ref(const Image& in, int64_t h, int64_t w) {
  Image out(h, w, in.channels);
  for (int64_t c = 0; c < in.channels; ++c) {
    std::vector<std::vector<double>> cols(in.width);  // each column resized along y
    for (int64_t x = 0; x < in.width; ++x) {
      std::vector<double> col(in.height);
      for (int64_t y = 0; y < in.height; ++y) col[y] = in.at(y, x, c);
      cols[x] = pil_axis(col, in.height, h);
    }
    for (int64_t y = 0; y < h; ++y) {
      std::vector<double> row(in.width);
      for (int64_t x = 0; x < in.width; ++x) row[x] = cols[x][y];
      std::vector<double> r = pil_axis(row, in.width, w);
      for (int64_t x = 0; x < w; ++x) out.at(y, x, c) = (uint8_t)std::floor(std::min(255.0, r[x]) + 0.5);
    }
  }
  return out;
}

TEST_CASE("transforms: anti-aliased bilinear resize as PIL's, against a scalar reference", "[data]") {
  // Worked by hand: [0 40 80 120] -> 2 pixels, s = 2: output 0 has centre 1 and taps 0, 1, 2 at
  // distances 0.25, 0.25, 0.75 (in units of 2 pixels): weights 0.75, 0.75, 0.25, so
  // (0 * 0.75 + 40 * 0.75 + 80 * 0.25) / 1.75 = 28.6 -> 29; output 1 likewise (10 + 60 + 90) / 1.75
  // = 91.4 -> 91. Plain bilinear samples 2 of the 4 pixels: 20 and 100.
  Image row(1, 4, 1);
  row.pixels = {0, 40, 80, 120};
  REQUIRE(resize_bilinear_antialias(row, 1, 2).pixels == std::vector<uint8_t>{29, 91});
  REQUIRE(resize_bilinear(row, 1, 2).pixels == std::vector<uint8_t>{20, 100});
  // Against the reference: down, up, mixed, to one pixel; at most 1 level off (float sums).
  Image img = make_image(37, 53, 3, 41);
  for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{12, 17}, {80, 100}, {20, 90}, {1, 1}, {36, 48}}) {
    Image got = resize_bilinear_antialias(img, hw.first, hw.second);
    Image want = pil_resize_ref(img, hw.first, hw.second);
    REQUIRE(got.height == hw.first);
    REQUIRE(got.width == hw.second);
    int64_t off = 0;
    for (size_t i = 0; i < got.pixels.size(); ++i) {
      int d = std::abs(int(got.pixels[i]) - int(want.pixels[i]));
      REQUIRE(d <= 1);
      off += d;
    }
    REQUIRE(off * 100 <= (int64_t)got.pixels.size());
  }
  // Enlarging: the same as plain bilinear (PIL's triangle at s <= 1 is the half-pixel rule).
  Image up_aa = resize_bilinear_antialias(img, 50, 70), up = resize_bilinear(img, 50, 70);
  for (size_t i = 0; i < up.pixels.size(); ++i) REQUIRE(std::abs(int(up_aa.pixels[i]) - int(up.pixels[i])) <= 1);
  // A flat image stays flat.
  Image flat(30, 30, 3);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 200);
  for (uint8_t p : resize_bilinear_antialias(flat, 7, 11).pixels) REQUIRE(p == 200);
}

TEST_CASE("transforms: the ImageNet pipelines on images of any size", "[data]") {
  Generator gen(3);
  // Evaluation: 45x60 -> shorter side 36 -> 36x48 -> centre 32x32 at (2, 8), then normalised
  // with ImageNet's mean and std. A 37x50 image: the long side int(36 * 50 / 37) = int(48.6) = 48.
  Image img = make_image(45, 60, 3, 31);
  Pipeline ev = imagenet_eval_pipeline(36, 32);
  Tensor x = ev(img, gen);
  REQUIRE(x.shape() == Shape{3, 32, 32});
  Image want = crop(resize_bilinear_antialias(img, 36, 48), 2, 8, 32, 32);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y : {0, 13, 31})
      for (int64_t xx : {0, 7, 31})
        REQUIRE(x.at({c, y, xx}) ==
                Approx((want.at(y, xx, c) / 255.0 - kImageNetMean[c]) / kImageNetStd[c]).margin(1e-5));
  REQUIRE(ev.describe() == "resize_shorter_side(36, antialias), center_crop(32), to_float, normalize");
  REQUIRE(resize_shorter_side(36)->apply(make_image(37, 50, 3, 33), gen).width == 48);
  // Training: whatever the size, crop x crop; a portrait, a landscape and a tiny image.
  Pipeline tr = imagenet_train_pipeline(32);
  for (auto hw : {std::pair<int64_t, int64_t>{90, 41}, {40, 77}, {9, 12}}) {
    Tensor t = tr(make_image(hw.first, hw.second, 3, 32), gen);
    REQUIRE(t.shape() == Shape{3, 32, 32});
  }
  REQUIRE_THAT(tr.describe(), Contains("random_resized_crop(32, scale 0.08..1") && Contains("antialias") &&
                                  Contains("random_horizontal_flip(0.5)"));
  REQUIRE_THROWS_WITH(imagenet_eval_pipeline(200, 224), Contains("smaller than the crop"));
}

TEST_CASE("transforms: to_float, normalize_ and the Pipeline's fused conversion", "[data]") {
  Image img(2, 2, 3);
  for (int i = 0; i < 12; ++i) img.pixels[i] = uint8_t(i * 20);
  Tensor x = to_float(img);
  REQUIRE(x.shape() == Shape{3, 2, 2});
  // x[c, y, x] = pixel(y, x, c) / 255
  REQUIRE(x.at({1, 0, 1}) == Approx(img.at(0, 1, 1) / 255.0));
  REQUIRE(x.at({2, 1, 0}) == Approx(img.at(1, 0, 2) / 255.0));
  std::vector<float> mean{0.1f, 0.2f, 0.3f}, std{0.5f, 0.25f, 2.0f};
  Tensor n = x.clone();
  normalize_(n, mean, std);
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 4; ++p)
      REQUIRE(n.at({c, p / 2, p % 2}) == Approx((x.at({c, p / 2, p % 2}) - mean[c]) / std[c]).margin(1e-6));
  Pipeline pipe;
  pipe.mean = mean;
  pipe.std = std;
  Generator gen(0);
  Tensor fused = pipe(img, gen);
  auto a = fused.to_vector<float>(), b = n.to_vector<float>();
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == Approx(b[i]).margin(1e-5));
  REQUIRE_THROWS_WITH(normalize_(n, {0.1f}, {1.0f}), Contains("3 channels but mean has 1"));
  Pipeline bad;
  bad.mean = {0.5f};
  bad.std = {0.5f};
  REQUIRE_THROWS_WITH(bad(img, gen), Contains("3 channels but mean has 1"));
}

// ---- DataLoader -----------------------------------------------------------------------------------

TEST_CASE("DataLoader: identical batches with 0, 1 and 3 workers, and with the cache", "[data]") {
  auto ds = std::make_shared<SyntheticDataset>(53, 9, 9, 3);
  Pipeline pipe;
  pipe.steps = {random_crop(8, 2), random_horizontal_flip()};
  pipe.mean = {0.5f, 0.4f, 0.3f};
  pipe.std = {0.2f, 0.2f, 0.2f};
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 42;
  opt.num_workers = 1;
  DataLoader one(ds, pipe, opt);
  opt.num_workers = 3;
  opt.prefetch = 2;
  DataLoader three(ds, pipe, opt);
  opt.num_workers = 0;
  DataLoader none(ds, pipe, opt);
  opt.num_workers = 2;
  opt.cache = true;
  DataLoader cached(ds, pipe, opt);

  REQUIRE(one.num_batches() == 7);
  auto e1 = whole_epoch(one, 1);
  REQUIRE(e1.size() == 7);
  REQUIRE(e1[0].images.shape() == Shape{8, 3, 8, 8});
  REQUIRE(e1[0].images.dtype() == DType::F32);
  REQUIRE(e1[0].labels.dtype() == DType::I64);
  REQUIRE(e1[6].images.shape() == Shape{5, 3, 8, 8});  // 53 = 6 * 8 + 5
  require_same_batches(e1, whole_epoch(three, 1));
  require_same_batches(e1, whole_epoch(none, 1));
  require_same_batches(e1, whole_epoch(cached, 1));
  require_same_batches(e1, whole_epoch(cached, 1));  // second pass served from the cache

  // the epoch is a permutation of the dataset, labels match the examples
  std::vector<int64_t> all;
  for (auto& b : e1) {
    auto labels = b.labels.to_vector<int64_t>();
    for (size_t i = 0; i < b.indices.size(); ++i) REQUIRE(labels[i] == b.indices[i] % 3);
    all.insert(all.end(), b.indices.begin(), b.indices.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> expect(53);
  std::iota(expect.begin(), expect.end(), 0);
  REQUIRE(all == expect);

  // another epoch: another order and other augmentations; the same epoch again: the same batches
  auto e2 = whole_epoch(three, 2);
  REQUIRE(e2[0].indices != e1[0].indices);
  require_same_batches(e1, whole_epoch(three, 1));

  // the augmentation of an example depends on (seed, epoch, example) only: rebuild one by hand
  const Batch& b0 = e1[0];
  int64_t example = b0.indices[3];
  Generator g(DataLoader::example_seed(42, 1, example));
  Tensor manual = pipe(ds->images[example], g);
  auto got = b0.images.select(0, 3).contiguous().to_vector<float>();
  REQUIRE(got == manual.to_vector<float>());
}

TEST_CASE("DataLoader: resume mid-epoch, progress, drop_last, no shuffle, errors", "[data]") {
  auto ds = std::make_shared<SyntheticDataset>(20, 4, 4, 1);
  Pipeline pipe;
  pipe.steps = {random_crop(4, 1)};
  LoaderOptions opt;
  opt.batch_size = 6;
  opt.seed = 7;
  opt.num_workers = 2;
  DataLoader loader(ds, pipe, opt);
  REQUIRE(loader.num_batches() == 4);
  auto full = whole_epoch(loader, 3);
  auto resumed = whole_epoch(loader, 3, 2);
  REQUIRE(resumed.size() == 2);
  require_same_batches({full[2], full[3]}, resumed);

  loader.set_epoch(3, 1);
  REQUIRE(loader.batches_done() == 1);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(b.index == 1);
  REQUIRE(loader.batches_done() == 2);
  REQUIRE(loader.progress() == Approx(0.5));
  // switching epochs while batches are being prepared is fine
  loader.set_epoch(4);
  REQUIRE(loader.batches_done() == 0);
  REQUIRE(whole_epoch(loader, 4).size() == 4);
  REQUIRE_FALSE(loader.next(b));  // the epoch is over until set_epoch
  REQUIRE_THROWS_WITH(loader.set_epoch(0, 5), Contains("start_batch 5 out of range"));

  opt.drop_last = true;
  opt.shuffle = false;
  DataLoader dl(ds, pipe, opt);
  auto e = whole_epoch(dl, 0);
  REQUIRE(e.size() == 3);
  REQUIRE(e[2].indices == std::vector<int64_t>{12, 13, 14, 15, 16, 17});

  // an example that throws: next() re-throws for its batch, with the dataset's message
  ds->fail_at = 13;
  for (int workers : {0, 2}) {
    opt.num_workers = workers;
    DataLoader failing(ds, pipe, opt);
    REQUIRE(failing.next(b));
    REQUIRE(failing.next(b));
    REQUIRE_THROWS_WITH(failing.next(b), Contains("example 13 is broken"));
  }

  // images of different sizes in one batch need a resize or crop
  struct Mixed : SyntheticDataset {
    Mixed() : SyntheticDataset(4, 4, 4, 1) { images[2] = make_image(5, 4, 1, 9); }
  };
  opt.num_workers = 0;
  opt.batch_size = 4;
  DataLoader mixed(std::make_shared<Mixed>(), Pipeline(), opt);
  REQUIRE_THROWS_WITH(mixed.next(b), Contains("example 2 is 5x4x1") && Contains("resize/crop"));
}

TEST_CASE("DataLoader on MNIST: 1 and 3 workers give the same batches", "[data]") {
  std::string dir = mnist_dir();
  if (dir.empty()) {
    test::skip_check("no shared MNIST copy (tests never download)");
    return;
  }
  auto ds = std::make_shared<MnistDataset>(dir, "t10k");
  Pipeline pipe;
  pipe.steps = {random_crop(28, 2)};
  pipe.mean = kMnistMean;
  pipe.std = kMnistStd;
  LoaderOptions opt;
  opt.batch_size = 500;
  opt.seed = 3;
  opt.num_workers = 1;
  DataLoader one(ds, pipe, opt);
  opt.num_workers = 3;
  DataLoader three(ds, pipe, opt);
  auto a = whole_epoch(one, 5), b = whole_epoch(three, 5);
  REQUIRE(a.size() == 20);
  require_same_batches(a, b);
  REQUIRE(a[0].images.shape() == Shape{500, 1, 28, 28});
}
