// video_decode.cpp - VideoReader: frames of a video file by index (video_decode.h says how).
//
// FFmpeg's API in the three calls that matter here:
//   av_read_frame(fmt, pkt)             the next compressed packet of any stream (demuxing)
//   avcodec_send_packet(ctx, pkt)       hands one packet to the decoder (nullptr: end of stream)
//   avcodec_receive_frame(ctx, frame)   takes one decoded picture out, in presentation order;
//                                       EAGAIN: it needs more packets first
// A decoder with B-frames holds pictures back (it can only output a picture once every picture it
// is displayed before has been decoded), so the loop below always drains receive_frame before it
// sends the next packet, and sends the null packet at the end of the file to get the last ones.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "data/ffmpeg_common.h"
#include "data/video_decode.h"
#include "tensor/error.h"

namespace anybit::data {

// Everything FFmpeg allocated for one open file, released in the destructor on every path.
struct VideoReader::Impl {
  AVFormatContext* fmt = nullptr;
  AVCodecContext* ctx = nullptr;
  AVPacket* pkt = nullptr;
  AVFrame* frame = nullptr;
  SwsContext* sws = nullptr;
  uint8_t* rgb[4] = {nullptr};  // swscale's output buffer (aligned, padded), copied into Images
  int rgb_linesize[4] = {0};
  int64_t rgb_w = 0, rgb_h = 0;
  int stream = -1;
  int64_t pos = -1;       // index of the last frame the decoder gave out; -1: none since the seek
  bool eof_sent = false;  // the null packet was sent: the decoder is draining
  bool drained = false;   // ... and has given out its last frame
  bool positioned = false;  // false until the first seek (after indexing, the demuxer is at the end)
  std::vector<int64_t> wanted_pts;  // timestamps of the frames read() was asked for, sorted

  ~Impl() {
    if (rgb[0]) av_freep(&rgb[0]);
    sws_freeContext(sws);
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&ctx);
    avformat_close_input(&fmt);
  }
};

bool video_available() { return true; }
std::string video_unavailable_reason() { return ""; }

VideoReader::VideoReader(const std::string& path, int threads, std::shared_ptr<const VideoIndex> index)
    : impl_(std::make_unique<Impl>()), path_(path), index_(std::move(index)) {
  ffmpeg::quiet_log();
  AB_CHECK(threads >= 1, "VideoReader: threads must be >= 1, got ", threads);
  Impl& d = *impl_;
  int r = avformat_open_input(&d.fmt, path.c_str(), nullptr, nullptr);
  AB_CHECK(r >= 0, "video ", path, ": cannot open (", ffmpeg::reason(r), ")");
  r = avformat_find_stream_info(d.fmt, nullptr);
  AB_CHECK(r >= 0, "video ", path, ": cannot read its stream information (", ffmpeg::reason(r), ")");
  const AVCodec* codec = nullptr;
  d.stream = av_find_best_stream(d.fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  AB_CHECK(d.stream != AVERROR_STREAM_NOT_FOUND, "video ", path, ": has no video stream");
  AB_CHECK(d.stream >= 0 && codec, "video ", path, ": no decoder for its video stream (",
           ffmpeg::reason(d.stream), ")");
  // Only the video stream is demuxed into packets for us; audio and other streams are skipped.
  for (unsigned s = 0; s < d.fmt->nb_streams; ++s)
    if ((int)s != d.stream) d.fmt->streams[s]->discard = AVDISCARD_ALL;
  AVStream* st = d.fmt->streams[d.stream];

  d.ctx = avcodec_alloc_context3(codec);
  AB_CHECK(d.ctx, "video ", path, ": out of memory");
  r = avcodec_parameters_to_context(d.ctx, st->codecpar);
  AB_CHECK(r >= 0, "video ", path, ": bad codec parameters (", ffmpeg::reason(r), ")");
  d.ctx->thread_count = threads;
  // The strictest error detection: a damaged packet is an error, not a silently concealed picture.
  d.ctx->err_recognition = AV_EF_CRCCHECK | AV_EF_BITSTREAM | AV_EF_BUFFER | AV_EF_EXPLODE;
  r = avcodec_open2(d.ctx, codec, nullptr);
  AB_CHECK(r >= 0, "video ", path, ": cannot open the ", codec->name, " decoder (", ffmpeg::reason(r), ")");
  codec_ = codec->name;
  width_ = d.ctx->width;
  height_ = d.ctx->height;
  AB_CHECK(width_ > 0 && height_ > 0, "video ", path, ": the video stream has no frame size");
  AB_CHECK(width_ <= 16384 && height_ <= 16384, "video ", path, ": frame size ", width_, "x", height_,
           " is over the limit of 16384 per side");

  d.pkt = av_packet_alloc();
  d.frame = av_frame_alloc();
  AB_CHECK(d.pkt && d.frame, "video ", path, ": out of memory");
  if (!index_) build_index();
  AB_CHECK(index_->size() > 0, "video ", path, ": the video stream has no frames");
}

VideoReader::~VideoReader() = default;

// Reads every packet of the video stream once: timestamp, decoding timestamp, key flag. A packet
// without a presentation timestamp takes its decoding timestamp (as FFmpeg's best-effort
// timestamp does for streams without reordering). Sorting by timestamp gives presentation order.
void VideoReader::build_index() {
  Impl& d = *impl_;
  struct Entry {
    int64_t pts, dts;
    bool key;
  };
  std::vector<Entry> entries;
  while (true) {
    int r = av_read_frame(d.fmt, d.pkt);
    if (r == AVERROR_EOF) break;
    // A read error in the middle of the file (a truncated or damaged container) ends the index
    // there: the frames indexed so far stay readable, as with any player.
    if (r < 0) break;
    if (d.pkt->stream_index == d.stream && !(d.pkt->flags & AV_PKT_FLAG_DISCARD) && d.pkt->size > 0) {
      int64_t ts = d.pkt->pts != AV_NOPTS_VALUE ? d.pkt->pts : d.pkt->dts;
      if (ts != AV_NOPTS_VALUE)
        entries.push_back({ts, d.pkt->dts, (d.pkt->flags & AV_PKT_FLAG_KEY) != 0});
    }
    av_packet_unref(d.pkt);
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.pts < b.pts; });
  auto idx = std::make_shared<VideoIndex>();
  for (const Entry& e : entries) {
    // Two packets with one timestamp cannot be told apart once decoded: the first one is kept.
    if (!idx->pts.empty() && idx->pts.back() == e.pts) continue;
    idx->pts.push_back(e.pts);
    idx->dts.push_back(e.dts);
    idx->key.push_back(e.key ? 1 : 0);
  }
  AVRational tb = d.fmt->streams[d.stream]->time_base;
  idx->time_base_num = tb.num;
  idx->time_base_den = tb.den;
  index_ = std::move(idx);
}

double VideoReader::time_of(int64_t i) const {
  AB_CHECK(i >= 0 && i < num_frames(), "video ", path_, ": frame ", i, " out of range [0, ", num_frames(), ")");
  return double(index_->pts[i] - index_->pts[0]) * index_->time_base_num / index_->time_base_den;
}

double VideoReader::average_fps() const {
  int64_t n = num_frames();
  if (n < 2) return 0;
  double span = time_of(n - 1);
  return span > 0 ? (n - 1) / span : 0;
}

int64_t VideoReader::key_at_or_before(int64_t target) const {
  for (int64_t k = target; k >= 0; --k)
    if (index_->key[k]) return k;
  return -1;
}

// Seeks the demuxer to the key frame at or before `target` (or to the start of the file when
// there is none) and empties the decoder.
void VideoReader::seek_to_key_before(int64_t target) {
  Impl& d = *impl_;
  int64_t k = std::max<int64_t>(key_at_or_before(target), 0);
  // Demuxers seek by their index, which most keep in decoding timestamps; the smaller of the two
  // timestamps is never after the key frame, so AVSEEK_FLAG_BACKWARD lands at or before it.
  int64_t ts = index_->pts[k];
  if (index_->dts[k] != AV_NOPTS_VALUE) ts = std::min(ts, index_->dts[k]);
  int r = av_seek_frame(d.fmt, d.stream, ts, AVSEEK_FLAG_BACKWARD);
  if (r < 0) r = avformat_seek_file(d.fmt, d.stream, INT64_MIN, ts, ts, 0);
  AB_CHECK(r >= 0, "video ", path_, ": cannot seek to frame ", k, " (", ffmpeg::reason(r), ")");
  avcodec_flush_buffers(d.ctx);
  d.pos = -1;
  d.eof_sent = false;
  d.drained = false;
  d.positioned = true;
  ++seeks_;
}

int64_t VideoReader::decode_until(int64_t target) {
  Impl& d = *impl_;
  const auto& pts = index_->pts;
  while (true) {
    int r = avcodec_receive_frame(d.ctx, d.frame);
    if (r == 0) {
      ++decoded_;
      int64_t ts = d.frame->best_effort_timestamp;
      AB_CHECK(ts != AV_NOPTS_VALUE, "video ", path_, ": a decoded frame has no timestamp");
      auto it = std::lower_bound(pts.begin(), pts.end(), ts);
      AB_CHECK(it != pts.end() && *it == ts, "video ", path_, ": a decoded frame has timestamp ", ts,
               ", which no packet of the file has (a damaged or unusual stream)");
      d.pos = it - pts.begin();
      if (d.pos < target) {  // before the target: not needed (after a seek, possibly incomplete)
        av_frame_unref(d.frame);
        continue;
      }
      AB_CHECK(!(d.frame->flags & AV_FRAME_FLAG_CORRUPT) && d.frame->decode_error_flags == 0, "video ", path_,
               ": the decoder reports frame ", d.pos, " as corrupt (damaged data)");
      return d.pos;
    }
    if (r == AVERROR_EOF) {
      d.drained = true;
      return -1;
    }
    AB_CHECK(r == AVERROR(EAGAIN), "video ", path_, ": cannot decode frame ", d.pos + 1, " (", ffmpeg::reason(r), ")");
    AB_CHECK(!d.eof_sent, "video ", path_, ": the decoder stalled while draining");
    r = av_read_frame(d.fmt, d.pkt);
    if (r < 0) {
      // End of file (or of its readable part): the null packet flushes the held-back frames.
      avcodec_send_packet(d.ctx, nullptr);
      d.eof_sent = true;
      continue;
    }
    if (d.pkt->stream_index != d.stream) {
      av_packet_unref(d.pkt);
      continue;
    }
    // A packet of a frame nobody asked for is decoded only if other frames refer to it: a B-frame
    // that is no reference (most are) is skipped. The decoder decodes the packet during the
    // receive calls that follow, before this setting changes for the next packet; with its own
    // frame threads it would not (they run ahead), so only a one-thread decoder skips.
    bool wanted = d.ctx->thread_count != 1 || d.pkt->pts == AV_NOPTS_VALUE ||
                  std::binary_search(d.wanted_pts.begin(), d.wanted_pts.end(), d.pkt->pts);
    d.ctx->skip_frame = wanted ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
    r = avcodec_send_packet(d.ctx, d.pkt);
    av_packet_unref(d.pkt);
    AB_CHECK(r >= 0 || r == AVERROR(EAGAIN), "video ", path_, ": damaged packet near frame ", d.pos + 1, " (",
             ffmpeg::reason(r), ")");
  }
}

// The current decoded frame as an out_h x out_w RGB image. One swscale call converts the pixel
// format and scales. At the native size the flags are the ffmpeg tool's default (bicubic), so
// the pixels equal what `ffmpeg -i FILE -pix_fmt rgb24` writes; scaled, bilinear (swscale widens
// its filter when shrinking, so a downscale averages every source pixel).
Image VideoReader::convert(int64_t out_h, int64_t out_w) {
  Impl& d = *impl_;
  AVFrame* f = d.frame;
  if (out_h <= 0 || out_w <= 0) {
    out_h = f->height;
    out_w = f->width;
  }
  bool scaled = out_h != f->height || out_w != f->width;
  d.sws = sws_getCachedContext(d.sws, f->width, f->height, (AVPixelFormat)f->format, (int)out_w, (int)out_h,
                               AV_PIX_FMT_RGB24, scaled ? SWS_BILINEAR : SWS_BICUBIC, nullptr, nullptr, nullptr);
  AB_CHECK(d.sws, "video ", path_, ": cannot convert its pixel format ",
           av_get_pix_fmt_name((AVPixelFormat)f->format) ? av_get_pix_fmt_name((AVPixelFormat)f->format) : "?",
           " to RGB");
  if (d.rgb_w != out_w || d.rgb_h != out_h) {
    if (d.rgb[0]) av_freep(&d.rgb[0]);
    int r = av_image_alloc(d.rgb, d.rgb_linesize, (int)out_w, (int)out_h, AV_PIX_FMT_RGB24, 64);
    AB_CHECK(r >= 0, "video ", path_, ": out of memory for a ", out_w, "x", out_h, " frame");
    d.rgb_w = out_w;
    d.rgb_h = out_h;
  }
  sws_scale(d.sws, f->data, f->linesize, 0, f->height, d.rgb, d.rgb_linesize);
  Image img(out_h, out_w, 3);
  for (int64_t y = 0; y < out_h; ++y)
    std::memcpy(&img.pixels[y * out_w * 3], d.rgb[0] + y * d.rgb_linesize[0], out_w * 3);
  return img;
}

std::vector<Image> VideoReader::read(const std::vector<int64_t>& indices, int64_t out_h, int64_t out_w) {
  Impl& d = *impl_;
  const int64_t n = num_frames();
  for (int64_t i : indices)
    AB_CHECK(i >= 0 && i < n, "video ", path_, ": frame ", i, " out of range [0, ", n, ")");
  std::vector<int64_t> targets(indices);
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());

  d.wanted_pts.clear();
  for (int64_t t : targets) d.wanted_pts.push_back(index_->pts[t]);
  std::vector<Image> decoded(targets.size());
  for (size_t j = 0; j < targets.size(); ++j) {
    const int64_t t = targets[j];
    // Decode forward from where the decoder is when that is no more work than a seek: the target
    // is ahead and no key frame lies between (else the key frame is the cheaper start).
    bool forward = d.positioned && !d.drained && d.pos < t && key_at_or_before(t) <= d.pos + 1;
    if (!forward) seek_to_key_before(t);
    int64_t got = decode_until(t);
    if (got != t && forward) {  // damaged data on the way: start again from the key frame
      seek_to_key_before(t);
      got = decode_until(t);
    }
    // Landed after the target: the demuxer's seek went past the key frame, or the target's
    // packets are damaged. Try from each earlier key frame, back to the start of the file.
    int64_t k = std::max<int64_t>(key_at_or_before(t), 0);
    while (got != t && k > 0) {
      k = std::max<int64_t>(key_at_or_before(k - 1), 0);
      seek_to_key_before(k);
      got = decode_until(t);
    }
    AB_CHECK(got == t, "video ", path_, ": frame ", t, " of ", n, " could not be decoded (",
             got < 0 ? "the stream ended before it: a truncated or damaged file"
                     : "the decoder skipped it: damaged data", ")");
    decoded[j] = convert(out_h, out_w);
    av_frame_unref(d.frame);
  }
  // In the order asked: each decoded frame is moved out at its last use, copied before that.
  std::vector<size_t> uses(targets.size(), 0), slot(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    slot[i] = std::lower_bound(targets.begin(), targets.end(), indices[i]) - targets.begin();
    uses[slot[i]]++;
  }
  std::vector<Image> out;
  out.reserve(indices.size());
  for (size_t i = 0; i < indices.size(); ++i)
    out.push_back(--uses[slot[i]] == 0 ? std::move(decoded[slot[i]]) : decoded[slot[i]]);
  return out;
}

std::vector<Image> VideoReader::read_all(int64_t out_h, int64_t out_w) {
  std::vector<int64_t> all(num_frames());
  for (int64_t i = 0; i < num_frames(); ++i) all[i] = i;
  return read(all, out_h, out_w);
}

}  // namespace anybit::data
