// video_decode.h - reading frames of a video file by index, with FFmpeg's C libraries.
//
//   VideoReader video("clip.mp4");                       // opens it and indexes its packets
//   int64_t n = video.num_frames();                      // from the index, not the header
//   std::vector<Image> frames = video.read({0, 10, 20}, 112, 149);   // RGB, scaled in swscale
//
// Frame i is the i-th frame in presentation order (sorted by timestamp), whatever the codec's
// decode order (B-frames) and whatever the frame rate (constant or variable).
//
// How it works (VIDEO-NOTES.md has why each step exists: each one avoids a bug the common video
// loaders have or had):
//   1. Index at open. Every packet of the video stream is read once (demuxing only, no decoding:
//      cheap next to decoding) and its timestamp and key-frame flag kept, sorted by timestamp.
//      The frame count and every index-to-time mapping come from this index, never from the
//      header's frame count or duration x fps (both are wrong on real files, and idx / fps is
//      wrong for variable frame rate).
//   2. Random access. read() sorts the requested frames. For each one it continues decoding
//      forward when the target is in the group of pictures (GOP) already being decoded; else it
//      seeks back to the key frame at or before the target, flushes the decoder and decodes
//      forward. Each decoded frame is identified by its timestamp through the index, so a seek
//      that lands elsewhere than asked is noticed: then it seeks to the key frame before, and so
//      on back to the start of the file.
//   3. End of file. A null packet flushes the frames a B-frame decoder holds back.
//   4. Conversion to RGB at the size asked (0 x 0: the native size) in one swscale call per frame.
//   5. Errors. A file that cannot be opened, has no video stream, cannot be decoded, or whose
//      requested frame never comes out of the decoder (a truncated or corrupt file) throws an
//      anybit::Error naming the file and the reason; so does a frame the decoder marks as corrupt
//      (the decoder runs with FFmpeg's strictest error detection, AV_EF_EXPLODE). A corrupt bit
//      that still decodes to a valid picture cannot be told from content and is not caught.
//   6. Memory. Every packet and frame is released on every path (RAII below); read() keeps only
//      the requested frames, so long files decode in constant memory.
//
// One VideoReader is used by one thread at a time; the DataLoader's workers each open their own.
// `threads` is FFmpeg's own decoding thread count for this reader (1: no extra threads, the
// right choice when worker threads already decode several files at once).
// Rotation metadata (the display matrix of phone videos) is ignored: frames come as stored.
// Read next: data/video.h (clip sampling and the video datasets).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace anybit::data {

// Whether this build reads and writes video: false in a build without FFmpeg's libraries (CMake
// -DANYBIT_VIDEO=OFF, as on a machine without their development packages), where VideoReader and
// VideoWriter throw at construction, naming the file and video_unavailable_reason().
bool video_available();
std::string video_unavailable_reason();  // "" when video_available()

// The packet index of a video stream, in presentation order. Built by VideoReader at open; it can
// be kept and handed to the next VideoReader of the same file to skip the indexing pass.
struct VideoIndex {
  std::vector<int64_t> pts;         // presentation timestamps, sorted ascending, in time_base units
  std::vector<int64_t> dts;         // decoding timestamp of the same packet (AV_NOPTS_VALUE if none)
  std::vector<uint8_t> key;         // 1: a key frame (decoding can start there)
  int64_t time_base_num = 0, time_base_den = 1;
  int64_t size() const { return (int64_t)pts.size(); }
};

class VideoReader {
 public:
  explicit VideoReader(const std::string& path, int threads = 1,
                       std::shared_ptr<const VideoIndex> index = nullptr);
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  int64_t num_frames() const { return index_->size(); }
  int64_t width() const { return width_; }
  int64_t height() const { return height_; }
  const std::string& codec_name() const { return codec_; }
  const std::string& path() const { return path_; }
  std::shared_ptr<const VideoIndex> index() const { return index_; }
  // Presentation time of frame i in seconds, from the index.
  double time_of(int64_t i) const;
  // Frames per second averaged over the file: (n - 1) / (time of last frame - time of first).
  double average_fps() const;

  // The frames at `indices` (any order; repeats allowed), each out_h x out_w RGB (0, 0: native
  // size), in the order asked. Throws, naming the file, when a frame cannot be decoded.
  std::vector<Image> read(const std::vector<int64_t>& indices, int64_t out_h = 0, int64_t out_w = 0);
  // Every frame in order (a sequential decode, no seeks).
  std::vector<Image> read_all(int64_t out_h = 0, int64_t out_w = 0);

  // Counters since open, for tests and benchmarks.
  int64_t seeks() const { return seeks_; }
  int64_t frames_decoded() const { return decoded_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_, codec_;
  std::shared_ptr<const VideoIndex> index_;
  int64_t width_ = 0, height_ = 0;
  int64_t seeks_ = 0, decoded_ = 0;

  void build_index();
  void seek_to_key_before(int64_t target);
  // Decodes forward until the frame with index >= target comes out; returns its index (or -1 at
  // the end of the stream). The frame is left in the Impl's current frame.
  int64_t decode_until(int64_t target);
  Image convert(int64_t out_h, int64_t out_w);
  int64_t key_at_or_before(int64_t target) const;
};

}  // namespace anybit::data
