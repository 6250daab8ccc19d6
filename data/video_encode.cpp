// video_encode.cpp - VideoWriter: RGB frames to a video file (video_encode.h says how).
//
// FFmpeg's API in the calls that matter here, the mirror image of the decoding loop in
// video_decode.cpp:
//   avcodec_send_frame(ctx, frame)       hands one picture to the encoder (nullptr: end of stream)
//   avcodec_receive_packet(ctx, pkt)     takes one compressed packet out; EAGAIN: it needs more
//                                        pictures first (B-frames and look-ahead hold some back)
//   av_interleaved_write_frame(fmt, pkt) gives the packet to the muxer, which writes the file
// So write() drains receive_packet after every send_frame, and finish() sends the null frame and
// drains again to get the pictures the encoder still holds.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "data/ffmpeg_common.h"
#include "data/video_encode.h"
#include "tensor/error.h"

namespace anybit::data {

namespace {

// Whether x264 would pick its AVX-512 functions on this CPU.
bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// FFmpeg's muxer name for the container the file name asks for, or "" when it is not one of ours.
std::string container_of(const std::string& path) {
  std::string lower = path;
  for (char& c : lower) c = (char)std::tolower((unsigned char)c);
  if (ends_with(lower, ".mp4")) return "mp4";
  if (ends_with(lower, ".avi")) return "avi";
  if (ends_with(lower, ".mkv")) return "matroska";
  return "";
}

}  // namespace

std::string resolve_video_codec(const std::string& codec) {
  if (codec == "h264") return avcodec_find_encoder_by_name("libx264") ? "libx264" : "mpeg4";
  AB_CHECK(codec == "mpeg4" || codec == "mjpeg", "video codec '", codec, "' is not one of h264, mpeg4, mjpeg");
  return codec;
}

// Everything FFmpeg allocated for one output file, released in the destructor on every path. A
// file that was opened but not finished is deleted: it has no trailer (an MP4 without its index
// cannot be read at all).
struct VideoWriter::Impl {
  std::string path;
  AVFormatContext* fmt = nullptr;
  AVCodecContext* ctx = nullptr;
  AVStream* stream = nullptr;  // owned by fmt
  AVFrame* frame = nullptr;    // the YUV picture handed to the encoder
  AVPacket* pkt = nullptr;
  SwsContext* sws = nullptr;
  bool file_open = false;      // avio opened the file: it exists on disk
  bool complete = false;       // finish() wrote the trailer

  ~Impl() {
    sws_freeContext(sws);
    av_packet_free(&pkt);
    av_frame_free(&frame);
    avcodec_free_context(&ctx);
    if (fmt) {
      if (file_open) avio_closep(&fmt->pb);
      avformat_free_context(fmt);
    }
    if (file_open && !complete) std::remove(path.c_str());
  }
};

VideoWriter::VideoWriter(const std::string& path, const VideoWriterOptions& options)
    : impl_(std::make_unique<Impl>()), path_(path), opt_(options) {
  ffmpeg::quiet_log();
  Impl& d = *impl_;
  d.path = path;
  AB_CHECK(opt_.width > 0 && opt_.height > 0 && opt_.width % 2 == 0 && opt_.height % 2 == 0 &&
               opt_.width <= 16384 && opt_.height <= 16384,
           "video ", path, ": frame size ", opt_.width, "x", opt_.height,
           " must be even on both sides (4:2:0 chroma is half size) and at most 16384");
  AB_CHECK(opt_.fps >= 1 && opt_.fps <= 1000, "video ", path, ": fps must be in 1..1000, got ", opt_.fps);
  AB_CHECK(opt_.gop >= 1, "video ", path, ": gop (frames between key frames) must be >= 1, got ", opt_.gop);
  std::string container = container_of(path);
  AB_CHECK(!container.empty(), "video ", path,
           ": the file name must end in .mp4, .avi or .mkv (it picks the container)");

  // 1. The encoder.
  codec_ = resolve_video_codec(opt_.codec);
  const AVCodec* codec = avcodec_find_encoder_by_name(codec_.c_str());
  AB_CHECK(codec, "video ", path, ": this FFmpeg build has no ", codec_, " encoder");
  bool x264 = codec_ == "libx264", mjpeg = codec_ == "mjpeg";
  int64_t quality = opt_.quality >= 0 ? opt_.quality : (x264 ? 18 : 3);
  if (x264)
    AB_CHECK(quality <= 51, "video ", path, ": quality (x264's CRF) must be in 0..51, got ", quality);
  else
    AB_CHECK(quality >= 1 && quality <= 31, "video ", path, ": quality (", codec_,
             "'s qscale) must be in 1..31, got ", quality);

  // 2. The container, and whether it can hold this codec (asked before anything is written).
  int r = avformat_alloc_output_context2(&d.fmt, nullptr, container.c_str(), path.c_str());
  AB_CHECK(r >= 0 && d.fmt, "video ", path, ": cannot set up the ", container, " container (", ffmpeg::reason(r), ")");
  AB_CHECK(avformat_query_codec(d.fmt->oformat, codec->id, FF_COMPLIANCE_NORMAL) != 0, "video ", path,
           ": the ", container, " container cannot hold ", codec_, " video (use .avi or .mkv)");
  d.fmt->flags |= AVFMT_FLAG_BITEXACT;  // no "encoder: Lavf..." tag: same bytes on every build
  d.stream = avformat_new_stream(d.fmt, nullptr);
  AB_CHECK(d.stream, "video ", path, ": out of memory");

  // 3. The encoder's settings.
  d.ctx = avcodec_alloc_context3(codec);
  AB_CHECK(d.ctx, "video ", path, ": out of memory");
  AVCodecContext* c = d.ctx;
  c->width = (int)opt_.width;
  c->height = (int)opt_.height;
  c->time_base = AVRational{1, (int)opt_.fps};  // timestamps count frames
  c->framerate = AVRational{(int)opt_.fps, 1};
  c->gop_size = (int)opt_.gop;
  c->pix_fmt = mjpeg ? AV_PIX_FMT_YUVJ420P : AV_PIX_FMT_YUV420P;
  c->color_range = mjpeg ? AVCOL_RANGE_JPEG : AVCOL_RANGE_MPEG;
  c->colorspace = AVCOL_SPC_SMPTE170M;  // BT.601: the matrix swscale converts with by default
  c->thread_count = 1;                  // determinism (video_encode.h, 6)
  c->flags |= AV_CODEC_FLAG_BITEXACT;
  if (d.fmt->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  AVDictionary* opts = nullptr;
  if (x264) {
    av_dict_set(&opts, "threads", "1", 0);  // x264's own thread pool and look-ahead thread
    av_dict_set(&opts, "preset", "medium", 0);
    av_dict_set(&opts, "crf", std::to_string(quality).c_str(), 0);
    if (cpu_has_avx512()) av_dict_set(&opts, "x264-params", "asm=AVX2", 0);  // determinism (video_encode.h, 6)
  } else {
    // A fixed quantiser for every frame (no rate control): lambda = qscale * FF_QP2LAMBDA.
    c->flags |= AV_CODEC_FLAG_QSCALE;
    c->global_quality = (int)(quality * FF_QP2LAMBDA);
  }
  r = avcodec_open2(c, codec, &opts);
  av_dict_free(&opts);
  AB_CHECK(r >= 0, "video ", path, ": cannot open the ", codec_, " encoder for ", opt_.width, "x", opt_.height,
           " at ", opt_.fps, " fps (", ffmpeg::reason(r), ")");
  r = avcodec_parameters_from_context(d.stream->codecpar, c);
  AB_CHECK(r >= 0, "video ", path, ": cannot copy the encoder's parameters to the stream (", ffmpeg::reason(r), ")");
  d.stream->time_base = c->time_base;  // a wish: write_header may change it (MP4 picks its own)
  d.stream->avg_frame_rate = c->framerate;

  d.frame = av_frame_alloc();
  d.pkt = av_packet_alloc();
  AB_CHECK(d.frame && d.pkt, "video ", path, ": out of memory");
  d.frame->format = c->pix_fmt;
  d.frame->width = c->width;
  d.frame->height = c->height;
  r = av_frame_get_buffer(d.frame, 0);
  AB_CHECK(r >= 0, "video ", path, ": out of memory for a ", opt_.width, "x", opt_.height, " frame");

  // 4. The file and the container's header.
  r = avio_open(&d.fmt->pb, path.c_str(), AVIO_FLAG_WRITE);
  AB_CHECK(r >= 0, "video ", path, ": cannot open for writing (", ffmpeg::reason(r), ")");
  d.file_open = true;
  r = avformat_write_header(d.fmt, nullptr);
  AB_CHECK(r >= 0, "video ", path, ": cannot write the ", container, " header (", ffmpeg::reason(r), ")");
}

VideoWriter::~VideoWriter() = default;

void VideoWriter::write(const Image& rgb) {
  Impl& d = *impl_;
  AB_CHECK(!finished_, "video ", path_, ": write() after finish()");
  AB_CHECK(rgb.channels == 3 && rgb.height == opt_.height && rgb.width == opt_.width &&
               (int64_t)rgb.pixels.size() == rgb.height * rgb.width * 3,
           "video ", path_, ": write() takes ", opt_.height, "x", opt_.width, "x3 RGB frames, got ", rgb.height,
           "x", rgb.width, "x", rgb.channels);
  // The encoder may still hold a reference to the previous picture's buffers: get our own.
  int r = av_frame_make_writable(d.frame);
  AB_CHECK(r >= 0, "video ", path_, ": out of memory (", ffmpeg::reason(r), ")");
  d.sws = sws_getCachedContext(d.sws, (int)opt_.width, (int)opt_.height, AV_PIX_FMT_RGB24, (int)opt_.width,
                               (int)opt_.height, d.ctx->pix_fmt, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_BITEXACT,
                               nullptr, nullptr, nullptr);
  AB_CHECK(d.sws, "video ", path_, ": cannot set up the RGB to YUV conversion");
  const uint8_t* src[1] = {rgb.pixels.data()};
  const int src_stride[1] = {(int)(opt_.width * 3)};
  sws_scale(d.sws, src, src_stride, 0, (int)opt_.height, d.frame->data, d.frame->linesize);
  d.frame->pts = frames_;
  d.frame->quality = d.ctx->global_quality;  // the fixed qscale, per frame (as the ffmpeg tool does)
  d.frame->pict_type = AV_PICTURE_TYPE_NONE;  // the encoder decides which frames are key frames
  encode(false);
  ++frames_;
}

void VideoWriter::encode(bool flush) {
  Impl& d = *impl_;
  int r = avcodec_send_frame(d.ctx, flush ? nullptr : d.frame);
  AB_CHECK(r >= 0, "video ", path_, ": the ", codec_, " encoder refused frame ", frames_, " (", ffmpeg::reason(r), ")");
  while (true) {
    r = avcodec_receive_packet(d.ctx, d.pkt);
    if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) break;
    AB_CHECK(r >= 0, "video ", path_, ": the ", codec_, " encoder failed (", ffmpeg::reason(r), ")");
    // Every frame lasts 1 / fps; MP4 needs the last one's duration to index it.
    if (d.pkt->duration <= 0) d.pkt->duration = 1;
    av_packet_rescale_ts(d.pkt, d.ctx->time_base, d.stream->time_base);
    d.pkt->stream_index = d.stream->index;
    r = av_interleaved_write_frame(d.fmt, d.pkt);  // takes the packet's data, on error too
    AB_CHECK(r >= 0, "video ", path_, ": cannot write a packet (", ffmpeg::reason(r), ")");
  }
}

void VideoWriter::finish() {
  Impl& d = *impl_;
  AB_CHECK(!finished_, "video ", path_, ": finish() called twice");
  AB_CHECK(frames_ > 0, "video ", path_, ": finish() before any frame was written (a video needs one)");
  finished_ = true;  // whatever happens below, no more writes
  encode(true);
  int r = av_write_trailer(d.fmt);
  AB_CHECK(r >= 0, "video ", path_, ": cannot write the trailer (", ffmpeg::reason(r), ")");
  r = avio_closep(&d.fmt->pb);  // a failed close leaves complete false: the file is deleted
  AB_CHECK(r >= 0, "video ", path_, ": cannot close the file (", ffmpeg::reason(r), ")");
  d.complete = true;
}

}  // namespace anybit::data
