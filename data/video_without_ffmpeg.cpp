// video_without_ffmpeg.cpp - VideoReader and VideoWriter in a build without FFmpeg's libraries
// (CMake -DANYBIT_VIDEO=OFF; CMakeLists.txt compiles this file instead of video_decode.cpp,
// video_encode.cpp and ffmpeg_common.cpp). Everything else of anybit works; opening a video, for
// reading or writing, throws an error that names the file and says how to get video back.
// scripts/gpu-check.sh builds so: the GPU machine has no FFmpeg development packages, and the
// runtime libraries they need do not fit in what travels there.
#include "data/video_decode.h"
#include "data/video_encode.h"
#include "tensor/error.h"

namespace anybit::data {

bool video_available() { return false; }
std::string video_unavailable_reason() {
  return "this anybit was built without FFmpeg (cmake -DANYBIT_VIDEO=OFF), so it cannot read or write video; "
         "install FFmpeg's development packages (scripts/install-deps.sh) and rebuild with -DANYBIT_VIDEO=ON";
}

// The constructors throw, so no object exists for the other members to run on; they are defined
// only so that the programs link.
struct VideoReader::Impl {};

VideoReader::VideoReader(const std::string& path, int, std::shared_ptr<const VideoIndex>) : path_(path) {
  AB_FAIL("video ", path, ": ", video_unavailable_reason());
}
VideoReader::~VideoReader() = default;
double VideoReader::time_of(int64_t) const { AB_FAIL("VideoReader: ", video_unavailable_reason()); }
double VideoReader::average_fps() const { AB_FAIL("VideoReader: ", video_unavailable_reason()); }
std::vector<Image> VideoReader::read(const std::vector<int64_t>&, int64_t, int64_t) {
  AB_FAIL("VideoReader: ", video_unavailable_reason());
}
std::vector<Image> VideoReader::read_all(int64_t, int64_t) { AB_FAIL("VideoReader: ", video_unavailable_reason()); }

struct VideoWriter::Impl {};

VideoWriter::VideoWriter(const std::string& path, const VideoWriterOptions& options) : path_(path), opt_(options) {
  AB_FAIL("video ", path, ": ", video_unavailable_reason());
}
VideoWriter::~VideoWriter() = default;
void VideoWriter::write(const Image&) { AB_FAIL("VideoWriter: ", video_unavailable_reason()); }
void VideoWriter::finish() { AB_FAIL("VideoWriter: ", video_unavailable_reason()); }

std::string resolve_video_codec(const std::string& codec) {
  AB_FAIL("video codec '", codec, "': ", video_unavailable_reason());
}

}  // namespace anybit::data
