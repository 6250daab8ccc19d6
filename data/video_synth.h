// video_synth.h - synthetic, labelled video sets rendered from the images of an image dataset.
//
//   VideoSynthOptions opt;
//   opt.variant = SynthVariant::Motion;  opt.source = "datasets/mnist";  opt.out = "datasets/mnist_motion";
//   make_video_dataset(opt);             // OUT/{train,test}/<class>/00000.mp4 ..., OUT/classes.txt
//   auto train = open_video_dataset(opt.out, "train", VideoOptions());   // video.h reads it
//
// A small video set whose difficulty is known by construction, made in seconds from MNIST or
// CIFAR-10 (anybit make-video-dataset is the command). Two variants:
//
//   appearance  label = the class of the source image. The image drifts slowly in a random
//               direction over a textured background; any single frame shows the class, so a
//               per-frame model (TSN) solves it as well as a temporal one.
//   motion      8 classes, the motion of the image: pan_down, pan_left, pan_right, pan_up (the
//               image moves across the frame: pan_right = it moves right), rotate_ccw, rotate_cw
//               (as seen on screen), zoom_in (it grows), zoom_out (it shrinks). The source image's
//               own class is ignored. Only the order of the frames tells the classes of a pair
//               apart (pan_left / pan_right, pan_up / pan_down, zoom_in / zoom_out, rotate_cw /
//               rotate_ccw): see "why one frame tells nothing" below.
//
// Rendering. A frame is size x size RGB. Each clip draws, from its own generator, in this order:
//   a source image, at random from the split (appearance: from the clip's class);
//   a background: a smooth random colour field (a 5x5 grid of colours, bilinearly interpolated)
//     plus fixed per-pixel noise, kept dark (values <= 160) so the image stands out, and the
//     image's colour (grey sources): each channel in [190, 255];
//   a pose for the clip's middle instant t = 0: centre (cx, cy) uniform in [0.35, 0.65] x size,
//     scale (frame pixels per source pixel) 0.55 size / max(h, w) times e^U(-0.2, 0.2), angle
//     uniform in [-pi, pi) (motion; appearance: within +-15 degrees, digits stay upright);
//   the motion's extent: a pan of D = U(0.25, 0.4) size, a zoom by a factor e^L, L = U(0.5, 0.9),
//     a rotation by U(0.5, 0.8) pi, each times motion_scale (1 unless asked) (appearance: a drift of U(0.05, 0.15) size in a direction
//     uniform in [0, 2 pi)).
//   Frame f of F sits at time t = f / (F - 1) - 1/2, in [-1/2, 1/2]: pan_right has its centre at
//   cx + t D, zoom_in the scale s e^(t L), rotate_cw the angle a + t R, and the other class of
//   each pair the same with -t. Every parameter is drawn for every clip, whatever its class, so
//   a clip's draws do not depend on its class.
//   Each output pixel is mapped back into the source image (inverse mapping: undo the
//   translation, the rotation and the scale) and the source is sampled there bilinearly. A grey
//   source (MNIST, 1 channel) is an alpha mask: the pixel is background (1 - a) + colour a, with
//   a = grey / 255 and a bright random colour per clip (so 1 channel becomes 3). An RGB source
//   (CIFAR) is an opaque picture whose edges are blended by the same bilinear weights.
//
// Why one frame tells nothing (motion). The pose at t = 0 has the same distribution for every
// class, and a clip of pan_left is distributed exactly as a pan_right clip played backwards (the
// trajectories are symmetric about t = 0 and the extents are drawn alike). So the set of frames
// of a clip, taken without their order, has the same distribution for both classes of a pair:
// a model that averages per-frame scores (TSN) cannot beat chance within a pair (at most 50%
// overall: the right pair, then a coin flip), while one that compares frames in order (TSM, 3D
// convolutions) can reach 100%. The angle is uniform on the circle, so every frame of a rotation
// clip has the distribution of the pose at t = 0. (The symmetry is exact for the rendered frames;
// the encoded files break it only through compression artefacts: the first frame is the key
// frame, coded a little differently from the predicted ones.)
//
// Labels and layout. The classes are written as folders (OUT/<split>/<class>/<NNNNN>.mp4, clip
// numbers from 0 within a split) and OUT/classes.txt lists them one per line in sorted order,
// which is the order the folder loader (video.h) numbers them in: for CIFAR-10 appearance sets
// that differs from CIFAR's own label order. Clip i of a split is of class i mod C (balanced),
// so --train and --test must be at least the number of classes C. Train clips come from the
// source's train split, test clips from its test split.
//
// Determinism. Clip i of split s draws everything from Generator(clip_seed(seed, s, i)), so the
// clips are rendered in parallel (OpenMP, one clip per thread at a time) and the same options
// give byte-identical files (VideoWriter is deterministic, video_encode.h) whatever the thread
// count, on one build and machine. A different seed gives different clips.
// Read next: video_encode.h (the files), video.h (reading them back), apps/anybit/make_video_dataset.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "tensor/random.h"

namespace anybit::data {

enum class SynthVariant { Motion, Appearance };
SynthVariant parse_synth_variant(const std::string& name);  // "motion" or "appearance"

// The motion classes, in the sorted order of their names: the label order of the class folders.
enum class Motion { PanDown, PanLeft, PanRight, PanUp, RotateCcw, RotateCw, ZoomIn, ZoomOut };
const std::vector<std::string>& motion_class_names();  // "pan_down", ..., "zoom_out"

struct VideoSynthOptions {
  SynthVariant variant = SynthVariant::Motion;
  std::string source;           // an image dataset's folder, as open_dataset (dataset.h) reads it
  std::string out;              // the video set's folder; its train/ and test/ must not exist yet
  int64_t train_clips = 1000;   // clips per split, each >= the number of classes
  int64_t test_clips = 200;
  int64_t size = 64;            // frames are size x size pixels (even)
  int64_t frames = 16;          // frames per clip, >= 2
  int64_t fps = 15;
  std::string codec = "h264";   // VideoWriter's codec names (h264 falls back to mpeg4)
  int64_t quality = -1;         // VideoWriterOptions::quality (< 0: the codec's default)
  double motion_scale = 1.0;    // motion: every extent (pan, zoom, turn) times this, in (0, 4]:
                                // below 1 a subtler motion, a harder set (the TSM/TSN gap remains)
  uint64_t seed = 1;
};

struct VideoSynthSummary {
  std::vector<std::string> classes;  // sorted: line i of classes.txt, label i
  int64_t clips = 0;                 // written, both splits
  int64_t bytes = 0;                 // the video files' total size
  std::string encoder;               // the encoder taken: libx264, mpeg4 or mjpeg
  double seconds = 0;
};

// progress(done, total) is called after every clip (from one thread at a time).
using SynthProgress = std::function<void(int64_t done, int64_t total)>;

// Opens opt.source's train and test splits with open_dataset and writes the video set.
VideoSynthSummary make_video_dataset(const VideoSynthOptions& opt, const SynthProgress& progress = nullptr);
// The same from image datasets already open (the tests use a small in-memory one).
VideoSynthSummary make_video_dataset(const VideoSynthOptions& opt, const Dataset& train_source,
                                     const Dataset& test_source, const SynthProgress& progress = nullptr);

// The frames of one clip (frames images, size x size x 3) from the source image src (HWC, 1 or
// 3 channels), every random choice drawn from gen as described above.
// extent multiplies the motion's drawn extents (VideoSynthOptions::motion_scale); the draws themselves
// do not change, so the clips of two scales differ only in how far things move.
std::vector<Image> render_motion_clip(const Image& src, Motion motion, int64_t size, int64_t frames, Generator& gen,
                                      double extent = 1.0);
std::vector<Image> render_appearance_clip(const Image& src, int64_t size, int64_t frames, Generator& gen);

// The seed of clip `index` of split `split` (0: train, 1: test): the three mixed by splitmix64,
// so neighbouring clips and seeds get unrelated generators.
uint64_t clip_seed(uint64_t seed, int split, int64_t index);

}  // namespace anybit::data
