// image_folder.cpp - the image-folder loader (root/<class>/<file>).
//
// Files are listed by extension and decoded by decode_image (image_decode.cpp), which recognises
// the format by its first bytes.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>

#include "data/dataset.h"
#include "tensor/error.h"

namespace anybit::data {

namespace fs = std::filesystem;

static bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  for (auto& ch : ext) ch = (char)std::tolower((unsigned char)ch);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

ImageFolderDataset::ImageFolderDataset(const std::string& root, const Options& options)
    : root_(root), min_short_side_(options.min_short_side) {
  AB_CHECK(options.min_short_side >= 0, "ImageFolderDataset: min_short_side must be >= 0, got ",
           options.min_short_side);
  AB_CHECK(fs::is_directory(root), "ImageFolderDataset: folder ", root, " does not exist",
           " (expected root/<class>/<image files>)");
  for (const auto& entry : fs::directory_iterator(root)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && !name.empty() && name[0] != '.') names_.push_back(name);
  }
  std::sort(names_.begin(), names_.end());
  AB_CHECK(!names_.empty(), "ImageFolderDataset: ", root,
           " has no class sub-folders (expected root/<class>/<image files>)");

  std::vector<std::string> empty_classes;
  for (size_t c = 0; c < names_.size(); ++c) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(fs::path(root) / names_[c]))
      if (entry.is_regular_file() && is_image_name(entry.path())) files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) empty_classes.push_back((fs::path(root) / names_[c]).string());
    for (auto& f : files) {
      files_.push_back(f);
      labels_.push_back((int64_t)c);
    }
  }
  AB_CHECK(!files_.empty(), "ImageFolderDataset: ", root, " has ", names_.size(),
           " class folders but no image files (.jpg .jpeg .png .bmp) in them: empty dataset");
  // An empty class folder would still count as a class (its label would exist, never be seen, and
  // shift the labels of the classes after it against a copy of the data without it): refuse it.
  if (!empty_classes.empty()) {
    std::string list;
    for (auto& e : empty_classes) list += (list.empty() ? "" : ", ") + e;
    AB_FAIL("ImageFolderDataset: class folder", empty_classes.size() > 1 ? "s " : " ", list,
            " ha", empty_classes.size() > 1 ? "ve" : "s",
            " no image files (.jpg .jpeg .png .bmp): add images or remove the folder");
  }

  if (options.skip_bad_files) {
    // One decode pass; keep the files that decode, report the others.
    std::vector<std::string> good_files;
    std::vector<int64_t> good_labels;
    for (size_t i = 0; i < files_.size(); ++i) {
      try {
        decode_image(read_file(files_[i]), files_[i], min_short_side_);
        good_files.push_back(files_[i]);
        good_labels.push_back(labels_[i]);
      } catch (const Error& e) {
        ++skipped_;
        std::fprintf(stderr, "ImageFolderDataset: skipping bad file: %s\n", e.what());
      }
    }
    files_.swap(good_files);
    labels_.swap(good_labels);
    if (skipped_) std::fprintf(stderr, "ImageFolderDataset: skipped %lld bad files in %s\n",
                               (long long)skipped_, root.c_str());
    AB_CHECK(!files_.empty(), "ImageFolderDataset: ", root, ": all ", skipped_,
             " image files failed to decode: empty dataset");
    // A class whose every image was skipped: the user asked to go on, so a warning names it.
    std::vector<bool> seen(names_.size(), false);
    for (int64_t l : labels_) seen[l] = true;
    for (size_t c = 0; c < names_.size(); ++c)
      if (!seen[c])
        std::fprintf(stderr, "ImageFolderDataset: warning: every image of class folder %s was skipped\n",
                     (fs::path(root) / names_[c]).string().c_str());
  }
}

Example ImageFolderDataset::get(int64_t index) const {
  AB_CHECK(index >= 0 && index < size(), "ImageFolderDataset::get: index ", index, " out of range [0, ",
           size(), ")");
  Example ex;
  ex.image = decode_image(read_file(files_[index]), files_[index], min_short_side_);
  ex.label = labels_[index];
  return ex;
}

std::string ImageFolderDataset::describe() const {
  return detail::cat("image folder ", root_, " (", files_.size(), " images, ", names_.size(), " classes",
                     skipped_ ? detail::cat(", ", skipped_, " bad files skipped") : std::string(),
                     min_short_side_ ? detail::cat(", JPEGs decoded with shorter side >= ", min_short_side_)
                                     : std::string(),
                     ")");
}

}  // namespace anybit::data
