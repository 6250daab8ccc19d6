// test_data.cpp - the data pipeline: MNIST from the shared copy, every loader's error messages on
// corrupted files generated here, image decoding, transforms on tiny synthetic images, and the
// DataLoader's determinism contract (same batches for any number of workers, resume mid-epoch).
// Tag [data]. Tests never download: without the shared MNIST copy those checks skip, saying so.
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"

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
    return {images.at(i), i % 3};
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
    WARN("skipped: no MNIST at $ANYBIT_SHARED_DATASETS/mnist or /work/shared/datasets/mnist "
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
  fs::create_directories(tmp.path / "empty_class");
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
  REQUIRE(ds.class_names() == std::vector<std::string>{"birds", "cats", "empty_class"});
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
  REQUIRE_THROWS_WITH(read_file(empty / "nothing.bin"), Contains("nothing.bin") && Contains("cannot open"));
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
    WARN("skipped: no shared MNIST copy (tests never download)");
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
