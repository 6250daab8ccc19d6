// video.h - video datasets: which frames make a clip, and where the videos and labels come from.
//
// A video example is a clip: frames of one video, decoded by VideoReader (video_decode.h) at the
// size the transforms ask for, in Example::frames. The DataLoader applies one draw of the spatial
// transforms to every frame of a clip and stacks the frames of a batch as (N * F, C, H, W), F
// frames per example, which a temporal model (nn/models.h: segments) reads back as N clips.
//
// Clip sampling. n is the number of frames of the video (from its index), K or T the frames of
// a clip.
//   segments (TSN): the video is cut into K equal segments, [j n / K, (j + 1) n / K), and one
//     frame is taken from each: a uniformly random one in training, the centre one in evaluation
//     (floor((j + 1/2) n / K)). A video shorter than K frames has segments shorter than a frame:
//     then frames repeat, in order (frame floor(j n / K) for segment j: K = 8 of n = 4 gives
//     0 0 1 1 2 2 3 3), which keeps the direction of the motion.
//   dense (I3D / SlowFast): T frames at stride s from a start, spanning (T - 1) s + 1 frames; the
//     start is uniformly random in [0, n - span] in training. A video shorter than the span loops:
//     frame (start + i s) mod n, as mmaction2's SampleFrames(out_of_bound_opt = "loop").
//   Evaluation with N clips per video (num_clips): segments take the frame at relative position
//     (c + 1/2) / N within each segment for clip c; dense clips start at N evenly spaced points
//     of [0, n - span]. The N clips of a video are one example of N * K frames; evaluation
//     averages the N clips' outputs (apps/anybit/run.cpp).
//
// Datasets (each video file is opened and indexed when its example is read, in the worker):
//   a folder per class:   root/<split>/<class>/<video files> (.mp4 .avi .mkv .webm .mov .m4v
//                         .mpg .mpeg .ts .ogv .flv)
//   a list file:          "relative/path label" per line, the paths relative to the data root,
//                         as action-recognition code bases write them; root/<split>.txt or
//                         root/splits/<split>.txt; class names from root/classes.txt (one per
//                         line, line i = label i) when present, else "0", "1", ...
//   EgoGestAR:            its layout is the list-file one (splits/{train,test}.txt, classes.txt)
// Bad files. A video that cannot be opened or decoded makes get() throw, naming the file. With
// skip_bad_files the constructor opens and fully decodes every video once instead, drops those
// that fail (printing each to stderr) and counts them: the same policy as image folders.
// Read next: video_decode.h, loader.h.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/video_decode.h"
#include "tensor/random.h"

namespace anybit::data {

enum class ClipSampling { Segments, Dense };

struct ClipSpec {
  ClipSampling sampling = ClipSampling::Segments;
  int64_t frames = 8;  // K segments, or T frames of a dense clip
  int64_t stride = 1;  // dense: frames between two frames of the clip
};

// The frame indices of one clip of a video of n frames. gen != nullptr: a random (training) clip;
// nullptr: clip `clip` of `num_clips` evaluation clips. Always spec.frames indices in [0, n).
std::vector<int64_t> sample_clip(int64_t n, const ClipSpec& spec, Generator* gen, int64_t clip = 0,
                                 int64_t num_clips = 1);

struct VideoOptions {
  ClipSpec clip;
  bool train = true;          // random clips (training) or the evaluation clips
  int64_t num_clips = 1;      // evaluation: clips per video, averaged
  int64_t short_side = 0;     // > 0: frames scaled (in swscale) so the shorter side is this
  bool skip_bad_files = false;
};

class VideoDataset : public Dataset {
 public:
  // A folder per class: root/<class>/<video files>.
  static std::shared_ptr<VideoDataset> from_folder(const std::string& folder, const VideoOptions& opt);
  // A list file of "relative/path label" lines; paths relative to `root`; class names as above.
  static std::shared_ptr<VideoDataset> from_list(const std::string& list_file, const std::string& root,
                                                 const VideoOptions& opt);

  int64_t size() const override { return (int64_t)files_.size(); }
  // The evaluation clips (clip 0 .. num_clips - 1), or a random clip drawn from gen in training.
  Example get(int64_t index, Generator& gen) const override;
  Example get(int64_t index) const override;  // the evaluation clips
  int64_t frames_per_example() const override { return opt_.clip.frames * (opt_.train ? 1 : opt_.num_clips); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string describe() const override;

  const std::string& path(int64_t index) const { return files_.at(index); }
  int64_t label(int64_t index) const { return labels_.at(index); }
  int64_t num_skipped() const { return skipped_; }
  const VideoOptions& options() const { return opt_; }
  // The shape frames are decoded at for a video of height x width (short_side applied).
  void frame_size(int64_t height, int64_t width, int64_t& out_h, int64_t& out_w) const;

 private:
  VideoDataset(std::string source, VideoOptions opt) : source_(std::move(source)), opt_(opt) {}
  void check_and_skip_bad_files();
  Example load(int64_t index, Generator* gen) const;

  std::string source_;  // the folder or list file, for messages
  VideoOptions opt_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  std::vector<std::string> names_;
  int64_t skipped_ = 0;
  // Each video's packet index, kept after its first opening: later epochs skip the indexing pass.
  mutable std::mutex index_mu_;
  mutable std::vector<std::shared_ptr<const VideoIndex>> index_cache_;
};

// Is `root` a video dataset: root/<split>.txt or root/splits/<split>.txt exists, or
// root/<split>/<class>/ holds a video file.
bool is_video_dataset(const std::string& root, const std::string& split);
// Opens the video dataset in root for split "train" or "test" (list file first, then folders).
std::shared_ptr<VideoDataset> open_video_dataset(const std::string& root, const std::string& split,
                                                 const VideoOptions& opt);
bool is_video_file_name(const std::string& path);

}  // namespace anybit::data
