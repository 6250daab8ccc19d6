// ffmpeg_common.h - what the FFmpeg-based files of data/ share (video_decode.cpp, video_encode.cpp).
#pragma once
#include <string>

namespace anybit::data::ffmpeg {

// FFmpeg's message for an error code (av_strerror), for our error messages.
std::string reason(int code);

// FFmpeg logs its own complaints (corrupt macroblocks, deprecated pixel formats, x264's statistics
// after every file) to stderr; our errors already name the file and the reason, so its log stays
// quiet unless ANYBIT_DEBUG=1 (then warnings and worse are shown). Idempotent, thread-safe.
void quiet_log();

}  // namespace anybit::data::ffmpeg
