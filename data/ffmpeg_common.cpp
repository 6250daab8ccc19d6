// ffmpeg_common.cpp - see ffmpeg_common.h.
extern "C" {
#include <libavutil/error.h>
#include <libavutil/log.h>
}

#include <cstdlib>
#include <mutex>

#include "data/ffmpeg_common.h"

namespace anybit::data::ffmpeg {

std::string reason(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

void quiet_log() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* debug = std::getenv("ANYBIT_DEBUG");
    av_log_set_level(debug && debug[0] == '1' ? AV_LOG_WARNING : AV_LOG_QUIET);
  });
}

}  // namespace anybit::data::ffmpeg
