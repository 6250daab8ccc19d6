// video_encode.h - writing RGB frames to a video file, with FFmpeg's C libraries.
//
//   VideoWriterOptions opt;                      // 64x64 at 15 fps, "h264", a key frame every 16
//   VideoWriter video("clip.mp4", opt);          // the container comes from the name
//   for (const Image& frame : frames) video.write(frame);   // HWC RGB, opt.height x opt.width
//   video.finish();                              // flushes the encoder, writes the trailer
//
// The reverse of VideoReader (video_decode.h), and written for the synthetic video sets
// (video_synth.h): small clips, many files, and the same frames must always give the same bytes.
//
// How it works:
//   1. Container from the file name: .mp4 (ISO/MP4), .avi, .mkv (Matroska); anything else is an
//      error naming the file. A codec the container cannot hold (as FFmpeg's
//      avformat_query_codec says) is an error too, found before anything is written.
//   2. Codec by name:
//        "h264"   libx264 when this FFmpeg has it (avcodec_find_encoder_by_name("libx264")), else
//                 FFmpeg's own "mpeg4" (MPEG-4 part 2): every FFmpeg build has that one, and
//                 VideoReader decodes both. codec_name() says which was taken.
//        "mpeg4"  MPEG-4 part 2, always.
//        "mjpeg"  Motion JPEG: every frame a JPEG (no motion prediction; large files).
//      Pixel format: YUV 4:2:0 (yuv420p, "TV" range 16-235) for h264 and mpeg4; yuvj420p (full
//      range 0-255, the JPEG convention) for mjpeg. 4:2:0 halves both chroma dimensions, so the
//      width and the height must be even.
//   3. write() converts one RGB frame to YUV in one swscale call (bicubic, accurate rounding,
//      bit-exact: no CPU-dependent SIMD shortcuts) and hands it to the encoder with presentation
//      timestamp i (time base 1 / fps: constant frame rate); every packet the encoder gives back
//      is written at once (the muxer interleaves).
//   4. finish() sends the null frame (the encoder then gives out the frames it held back for
//      B-frames or look-ahead), writes the trailer (MP4's index) and closes the file.
//   5. Quality: `quality` < 0 picks the codec's default below. For libx264 it is the CRF
//      (constant rate factor, 0-51, lower is better; default 18, visually near lossless); for
//      mpeg4 and mjpeg the fixed quantiser (qscale, 1-31, lower is better; default 3).
//      `gop`: frames between key frames (1: every frame a key frame).
//   6. Determinism: the same frames and options give byte-identical files. The encoder runs on
//      one thread (thread_count = 1, and "threads" = 1 for libx264: with several threads x264's
//      rate control and look-ahead depend on timing), and both the muxer (AVFMT_FLAG_BITEXACT)
//      and the encoder (AV_CODEC_FLAG_BITEXACT) leave out version strings and other details that
//      differ between builds. (libx264 still writes its own version and settings into the
//      stream, so files are identical for one FFmpeg/x264 build, not across versions.) On a CPU
//      with AVX-512, x264 is held to its AVX2 code: with its AVX-512 functions the same frames
//      gave different bytes from run to run (libx264 164 on an AMD Zen 5: about half of the runs
//      of the synthetic set of 24 clips changed one clip or more; none of 12 with AVX2).
//   7. Errors: every FFmpeg call is checked; an error is an anybit::Error naming the file and
//      FFmpeg's reason. Every FFmpeg object is released on every path (RAII). A writer destroyed
//      before finish() (an exception on the way) closes and deletes its file, so no truncated
//      video is left behind for a loader to trip on.
//
// One VideoWriter is used by one thread at a time; several writers can run in parallel threads.
// Read next: video_synth.h (what writes these files), video_decode.h (what reads them).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "data/dataset.h"

namespace anybit::data {

struct VideoWriterOptions {
  int64_t width = 64, height = 64;  // frame size in pixels, both even
  int64_t fps = 15;                 // frames per second (constant frame rate)
  std::string codec = "h264";       // "h264" (libx264, else mpeg4), "mpeg4" or "mjpeg"
  int64_t gop = 16;                 // frames between key frames, >= 1
  int64_t quality = -1;             // libx264: CRF 0-51; mpeg4/mjpeg: qscale 1-31; < 0: default
};

class VideoWriter {
 public:
  // Opens `path` for writing (overwriting it) and sets up the encoder; throws naming the file.
  VideoWriter(const std::string& path, const VideoWriterOptions& options);
  ~VideoWriter();
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;

  // Encodes one frame: rgb is height x width x 3 (HWC RGB, 8 bits), the size in the options.
  void write(const Image& rgb);
  // Flushes the encoder, writes the trailer and closes the file. Once only; needs >= 1 frame.
  void finish();

  // The encoder that was taken: "libx264", "mpeg4" or "mjpeg".
  const std::string& codec_name() const { return codec_; }
  const std::string& path() const { return path_; }
  int64_t frames_written() const { return frames_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_, codec_;
  VideoWriterOptions opt_;
  int64_t frames_ = 0;
  bool finished_ = false;

  // Sends the converted frame (flush: the null frame, end of stream) to the encoder and writes
  // every packet it gives back.
  void encode(bool flush);
};

// The FFmpeg encoder a codec name stands for on this build (rule 2 above): "h264" -> "libx264"
// or "mpeg4", "mpeg4" -> "mpeg4", "mjpeg" -> "mjpeg"; any other name throws.
std::string resolve_video_codec(const std::string& codec);

}  // namespace anybit::data
