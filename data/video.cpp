// video.cpp - clip sampling and the video datasets of video.h.
#include "data/video.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "data/video_decode.h"
#include "tensor/error.h"

namespace anybit::data {

namespace fs = std::filesystem;

// ---- clip sampling ------------------------------------------------------------------------------

std::vector<int64_t> sample_clip(int64_t n, const ClipSpec& spec, Generator* gen, int64_t clip, int64_t num_clips) {
  const int64_t K = spec.frames, s = spec.stride;
  AB_CHECK(n >= 1, "sample_clip: the video has no frames");
  AB_CHECK(K >= 1, "sample_clip: a clip needs at least one frame, got frames = ", K);
  AB_CHECK(s >= 1, "sample_clip: stride must be >= 1, got ", s);
  AB_CHECK(num_clips >= 1 && clip >= 0 && clip < num_clips, "sample_clip: clip ", clip, " of ", num_clips);
  std::vector<int64_t> idx(K);
  if (spec.sampling == ClipSampling::Segments) {
    for (int64_t j = 0; j < K; ++j) {
      if (gen) {
        // Segment j is [floor(j n / K), floor((j + 1) n / K)), at least one frame wide.
        int64_t lo = j * n / K, hi = std::max((j + 1) * n / K, lo + 1);
        idx[j] = lo + (int64_t)gen->below((uint64_t)(hi - lo));
      } else {
        // Relative position (c + 1/2) / N of segment j: the centre for one clip.
        double pos = (j + (clip + 0.5) / num_clips) * double(n) / double(K);
        idx[j] = std::min<int64_t>((int64_t)std::floor(pos), n - 1);
      }
    }
  } else {
    const int64_t span = (K - 1) * s + 1, last_start = std::max<int64_t>(n - span, 0);
    int64_t start;
    if (gen)
      start = (int64_t)gen->below((uint64_t)last_start + 1);
    else if (num_clips == 1)
      start = last_start / 2;
    else
      start = clip * last_start / (num_clips - 1);
    for (int64_t i = 0; i < K; ++i) idx[i] = (start + i * s) % n;  // loops when n < span
  }
  return idx;
}

// ---- the dataset --------------------------------------------------------------------------------

bool is_video_file_name(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (auto& ch : ext) ch = (char)std::tolower((unsigned char)ch);
  for (const char* e : {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".ogv", ".flv"})
    if (ext == e) return true;
  return false;
}

namespace {

// The evaluation clips of the dataset's options, concatenated; or one random clip.
std::vector<int64_t> clip_frames(int64_t n, const VideoOptions& opt, Generator* gen) {
  if (gen) return sample_clip(n, opt.clip, gen);
  std::vector<int64_t> all;
  for (int64_t c = 0; c < opt.num_clips; ++c) {
    std::vector<int64_t> one = sample_clip(n, opt.clip, nullptr, c, opt.num_clips);
    all.insert(all.end(), one.begin(), one.end());
  }
  return all;
}

void check_options(const VideoOptions& opt) {
  AB_CHECK(opt.clip.frames >= 1, "video dataset: frames must be >= 1, got ", opt.clip.frames);
  AB_CHECK(opt.clip.stride >= 1, "video dataset: frame stride must be >= 1, got ", opt.clip.stride);
  AB_CHECK(opt.num_clips >= 1, "video dataset: clips per video must be >= 1, got ", opt.num_clips);
  AB_CHECK(opt.short_side >= 0, "video dataset: short side must be >= 0, got ", opt.short_side);
}

}  // namespace

void VideoDataset::frame_size(int64_t height, int64_t width, int64_t& out_h, int64_t& out_w) const {
  const int64_t S = opt_.short_side;
  if (S <= 0) {
    out_h = height;
    out_w = width;
  } else if (height <= width) {  // as torchvision's Resize(S): the longer side is int(S * long / short)
    out_h = S;
    out_w = std::max<int64_t>(1, (int64_t)(double(S) * width / height));
  } else {
    out_w = S;
    out_h = std::max<int64_t>(1, (int64_t)(double(S) * height / width));
  }
}

Example VideoDataset::load(int64_t index, Generator* gen) const {
  AB_CHECK(index >= 0 && index < size(), "video dataset ", source_, ": index ", index, " out of range [0, ",
           size(), ")");
  std::shared_ptr<const VideoIndex> idx;
  {
    std::lock_guard<std::mutex> lock(index_mu_);
    if (index_cache_.size() != files_.size()) index_cache_.resize(files_.size());
    idx = index_cache_[index];
  }
  VideoReader reader(files_[index], 1, idx);
  if (!idx) {
    std::lock_guard<std::mutex> lock(index_mu_);
    index_cache_[index] = reader.index();
  }
  int64_t h = 0, w = 0;
  frame_size(reader.height(), reader.width(), h, w);
  Example ex;
  ex.frames = reader.read(clip_frames(reader.num_frames(), opt_, gen), h, w);
  ex.label = labels_[index];
  return ex;
}

Example VideoDataset::get(int64_t index, Generator& gen) const { return load(index, opt_.train ? &gen : nullptr); }
Example VideoDataset::get(int64_t index) const { return load(index, nullptr); }

std::string VideoDataset::describe() const {
  std::ostringstream os;
  os << "video dataset " << source_ << " (" << size() << " videos, " << names_.size() << " classes, "
     << (opt_.clip.sampling == ClipSampling::Segments ? "TSN segments: " : "dense clips: ") << opt_.clip.frames
     << " frames";
  if (opt_.clip.sampling == ClipSampling::Dense) os << " at stride " << opt_.clip.stride;
  if (!opt_.train) os << ", " << opt_.num_clips << " clip" << (opt_.num_clips > 1 ? "s" : "") << " per video";
  if (opt_.short_side > 0) os << ", shorter side " << opt_.short_side;
  if (skipped_) os << ", " << skipped_ << " bad files skipped";
  os << ")";
  return os.str();
}

void VideoDataset::check_and_skip_bad_files() {
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  for (size_t i = 0; i < files_.size(); ++i) {
    try {
      VideoReader reader(files_[i]);
      reader.read_all(1, 1);  // every frame decoded; the conversion to 1x1 costs next to nothing
      files.push_back(files_[i]);
      labels.push_back(labels_[i]);
    } catch (const Error& e) {
      std::fprintf(stderr, "anybit: skipping %s\n", e.what());
      ++skipped_;
    }
  }
  AB_CHECK(!files.empty(), "video dataset ", source_, ": every one of its ", files_.size(),
           " videos failed to decode");
  files_ = std::move(files);
  labels_ = std::move(labels);
}

std::shared_ptr<VideoDataset> VideoDataset::from_folder(const std::string& folder, const VideoOptions& opt) {
  check_options(opt);
  AB_CHECK(fs::is_directory(folder), "video dataset: folder ", folder, " does not exist (expected <class>/<videos>)");
  std::shared_ptr<VideoDataset> ds(new VideoDataset(folder, opt));
  for (const auto& entry : fs::directory_iterator(folder)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && !name.empty() && name[0] != '.') ds->names_.push_back(name);
  }
  std::sort(ds->names_.begin(), ds->names_.end());
  AB_CHECK(!ds->names_.empty(), "video dataset: ", folder, " has no class sub-folders (expected <class>/<videos>)");
  for (size_t c = 0; c < ds->names_.size(); ++c) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(fs::path(folder) / ds->names_[c]))
      if (entry.is_regular_file() && is_video_file_name(entry.path().string())) files.push_back(entry.path().string());
    AB_CHECK(!files.empty(), "video dataset: class folder ", (fs::path(folder) / ds->names_[c]).string(),
             " has no video files: add videos or remove the folder");
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      ds->files_.push_back(f);
      ds->labels_.push_back((int64_t)c);
    }
  }
  if (opt.skip_bad_files) ds->check_and_skip_bad_files();
  return ds;
}

std::shared_ptr<VideoDataset> VideoDataset::from_list(const std::string& list_file, const std::string& root,
                                                      const VideoOptions& opt) {
  check_options(opt);
  std::ifstream in(list_file);
  AB_CHECK(in, "video dataset: cannot open list file ", list_file);
  std::shared_ptr<VideoDataset> ds(new VideoDataset(list_file, opt));
  std::string line;
  int64_t line_no = 0, max_label = -1;
  while (std::getline(in, line)) {
    ++line_no;
    while (!line.empty() && std::isspace((unsigned char)line.back())) line.pop_back();
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    // "relative/path label": the label is the last field, the path everything before it.
    size_t cut = line.find_last_of(" \t");
    AB_CHECK(cut != std::string::npos && cut > first, "video dataset: ", list_file, " line ", line_no,
             ": expected \"relative/path label\", got \"", line, "\"");
    std::string path = line.substr(first, cut - first), label_text = line.substr(cut + 1);
    while (!path.empty() && std::isspace((unsigned char)path.back())) path.pop_back();
    char* end = nullptr;
    long long label = std::strtoll(label_text.c_str(), &end, 10);
    AB_CHECK(end && *end == '\0' && !label_text.empty() && label >= 0, "video dataset: ", list_file, " line ",
             line_no, ": the label \"", label_text, "\" is not a non-negative integer");
    std::string full = (fs::path(root) / path).string();
    AB_CHECK(fs::is_regular_file(full), "video dataset: ", list_file, " line ", line_no, ": no file ", full);
    ds->files_.push_back(full);
    ds->labels_.push_back(label);
    max_label = std::max<int64_t>(max_label, label);
  }
  AB_CHECK(!ds->files_.empty(), "video dataset: list file ", list_file, " lists no videos");
  fs::path classes = fs::path(root) / "classes.txt";
  if (fs::is_regular_file(classes)) {
    std::ifstream cin(classes);
    while (std::getline(cin, line)) {
      while (!line.empty() && std::isspace((unsigned char)line.back())) line.pop_back();
      if (!line.empty()) ds->names_.push_back(line);
    }
    AB_CHECK((int64_t)ds->names_.size() > max_label, "video dataset: ", classes.string(), " names ",
             ds->names_.size(), " classes but ", list_file, " uses label ", max_label);
  } else {
    for (int64_t c = 0; c <= max_label; ++c) ds->names_.push_back(std::to_string(c));
  }
  if (opt.skip_bad_files) ds->check_and_skip_bad_files();
  return ds;
}

static std::string list_file_of(const std::string& root, const std::string& split) {
  for (const fs::path& p : {fs::path(root) / (split + ".txt"), fs::path(root) / "splits" / (split + ".txt")})
    if (fs::is_regular_file(p)) return p.string();
  return "";
}

static std::string folder_of(const std::string& root, const std::string& split) {
  fs::path p = fs::path(root) / split;
  if (split == "test" && !fs::is_directory(p)) p = fs::path(root) / "val";
  return p.string();
}

bool is_video_dataset(const std::string& root, const std::string& split) {
  if (!list_file_of(root, split).empty()) return true;
  std::string folder = folder_of(root, split);
  if (!fs::is_directory(folder)) return false;
  for (const auto& cls : fs::directory_iterator(folder)) {
    if (!cls.is_directory()) continue;
    for (const auto& f : fs::directory_iterator(cls.path()))
      if (f.is_regular_file()) return is_video_file_name(f.path().string());
  }
  return false;
}

std::shared_ptr<VideoDataset> open_video_dataset(const std::string& root, const std::string& split,
                                                 const VideoOptions& opt) {
  std::string list = list_file_of(root, split);
  if (!list.empty()) return VideoDataset::from_list(list, root, opt);
  std::string folder = folder_of(root, split);
  AB_CHECK(fs::is_directory(folder), "video dataset: ", root, " has neither ", split, ".txt, splits/", split,
           ".txt nor a folder ", split, "/<class>/<videos>");
  return VideoDataset::from_folder(folder, opt);
}

}  // namespace anybit::data
