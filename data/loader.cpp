// loader.cpp - the DataLoader of loader.h: epoch planning, batch building, the worker threads.
#include "data/loader.h"

#include <algorithm>
#include <cstring>

#include "tensor/error.h"
#include "tensor/random.h"

namespace anybit::data {

// ---- seeds --------------------------------------------------------------------------------------

// A 64-bit hash of (a, b) (splitmix64's finaliser over a mix of both): nearby inputs such as
// consecutive example indices give unrelated seeds.
static uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Different salts keep the shuffle stream apart from every example's augmentation stream.
uint64_t DataLoader::shuffle_seed(uint64_t seed, int64_t epoch) {
  return mix(mix(seed, 0x5348554646ull /* "SHUFF" */), (uint64_t)epoch);
}
uint64_t DataLoader::example_seed(uint64_t seed, int64_t epoch, int64_t example) {
  return mix(mix(mix(seed, 0x4155474dull /* "AUGM" */), (uint64_t)epoch), (uint64_t)example);
}

// ---- planning -----------------------------------------------------------------------------------

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, Pipeline pipeline, LoaderOptions options)
    : dataset_(std::move(dataset)), pipeline_(std::move(pipeline)), opt_(options) {
  AB_CHECK(dataset_, "DataLoader: null dataset");
  AB_CHECK(opt_.batch_size > 0, "DataLoader: batch_size ", opt_.batch_size, " must be positive");
  AB_CHECK(opt_.num_workers >= 0, "DataLoader: num_workers ", opt_.num_workers, " must be >= 0");
  AB_CHECK(opt_.prefetch >= 1, "DataLoader: prefetch ", opt_.prefetch, " must be >= 1");
  AB_CHECK(opt_.shards >= 1 && opt_.shard >= 0 && opt_.shard < opt_.shards, "DataLoader: shard ", opt_.shard,
           " of ", opt_.shards, " does not exist");
  AB_CHECK(dataset_->size() > 0, "DataLoader: empty dataset ", dataset_->describe());
  AB_CHECK(!opt_.drop_last || dataset_->size() >= opt_.batch_size, "DataLoader: drop_last with batch_size ",
           opt_.batch_size, " leaves no batch of ", dataset_->describe());
  AB_CHECK(!opt_.cache || dataset_->frames_per_example() == 0, "DataLoader: cache keeps decoded images; a ",
           "video dataset draws new clips every epoch, so it cannot be cached (", dataset_->describe(), ")");
  if (opt_.cache) cache_.resize(dataset_->size());
  set_epoch(0);
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::num_batches() const {
  int64_t n = dataset_->size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

int64_t DataLoader::batches_done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_deliver_;
}

void DataLoader::set_epoch(int64_t epoch, int64_t start_batch) {
  AB_CHECK(epoch >= 0, "DataLoader::set_epoch: epoch ", epoch, " must be >= 0");
  AB_CHECK(start_batch >= 0 && start_batch <= num_batches(), "DataLoader::set_epoch: start_batch ",
           start_batch, " out of range [0, ", num_batches(), "]");
  stop_workers();
  epoch_ = epoch;
  const int64_t n = dataset_->size();
  order_.resize(n);
  for (int64_t i = 0; i < n; ++i) order_[i] = i;
  if (opt_.shuffle) {
    // Fisher-Yates: position i takes a uniformly chosen one of the examples not placed yet.
    Generator gen(shuffle_seed(opt_.seed, epoch));
    for (int64_t i = n - 1; i > 0; --i) std::swap(order_[i], order_[gen.below(i + 1)]);
  }
  std::lock_guard<std::mutex> lock(mu_);
  next_claim_ = next_deliver_ = start_batch;
  ready_.clear();
}

// ---- building one batch -------------------------------------------------------------------------

Example DataLoader::fetch(int64_t example, Generator& gen) const {
  if (!opt_.cache) return dataset_->get(example, gen);
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_[example]) return *cache_[example];
  }
  // Decode outside the lock; an example appears once per epoch, so no two threads race for it.
  auto ex = std::make_shared<const Example>(dataset_->get(example, gen));
  std::lock_guard<std::mutex> lock(cache_mu_);
  cache_[example] = ex;
  return *ex;
}

// One batch: every example read, augmented and written into the batch tensor. A video example's
// F frames become F consecutive images of the batch, (N * F, C, H, W), all given the same draw
// of the transforms: each frame is augmented with a copy of the example's generator in the same
// state, so the random crop, scale and flip are the clip's, not the frame's.
Batch DataLoader::build(int64_t b) const {
  const int64_t n = dataset_->size();
  const int64_t whole_begin = b * opt_.batch_size, whole = std::min(n, whole_begin + opt_.batch_size) - whole_begin;
  // this process's part of the batch (LoaderOptions::shard)
  const int64_t begin = whole_begin + whole * opt_.shard / opt_.shards;
  const int64_t end = whole_begin + whole * (opt_.shard + 1) / opt_.shards;
  Batch out;
  out.epoch = epoch_;
  out.index = b;
  out.indices.assign(order_.begin() + begin, order_.begin() + end);
  const int64_t N = end - begin;
  const int64_t F = std::max<int64_t>(dataset_->frames_per_example(), 1);
  out.frames_per_example = F;
  out.labels = Tensor::empty({N}, DType::I64);
  int64_t* labels = out.labels.data<int64_t>();
  int64_t C = 0, H = 0, W = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t example = out.indices[i];
    Generator gen(example_seed(opt_.seed, epoch_, example));
    Example ex = fetch(example, gen);  // a video dataset draws its clip from gen first
    const bool video = !ex.frames.empty();
    AB_CHECK((video ? (int64_t)ex.frames.size() : 1) == F, "DataLoader: example ", example, " has ",
             ex.frames.size(), " frames, the dataset promised ", F);
    for (int64_t f = 0; f < F; ++f) {
      Generator frame_gen = gen;  // the same draws for every frame of a clip
      Image img = pipeline_.augment(video ? ex.frames[f] : ex.image, frame_gen);
      if (i == 0 && f == 0) {
        // the first example fixes the batch's image size
        C = img.channels, H = img.height, W = img.width;
        out.images = Tensor::empty({N * F, C, H, W}, DType::F32);
      }
      AB_CHECK(img.channels == C && img.height == H && img.width == W, "DataLoader: example ", example,
               " is ", img.height, "x", img.width, "x", img.channels, " after the transforms but example ",
               out.indices[0], " of the same batch is ", H, "x", W, "x", C,
               "; images of different sizes need a resize/crop transform (", pipeline_.describe(), ")");
      pipeline_.to_chw(img, out.images.data<float>() + (i * F + f) * C * H * W);
    }
    labels[i] = ex.label;
  }
  return out;
}

// ---- threads ------------------------------------------------------------------------------------

void DataLoader::start_workers() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = false;
  running_ = true;
  for (int w = 0; w < opt_.num_workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  running_ = false;
}

void DataLoader::worker_loop() {
  const int64_t total = num_batches();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Claim the next batch once it is within `prefetch` of the one the trainer waits for.
    cv_.wait(lock, [&] { return stop_ || next_claim_ >= total || next_claim_ < next_deliver_ + opt_.prefetch; });
    if (stop_ || next_claim_ >= total) return;
    const int64_t b = next_claim_++;
    lock.unlock();
    Slot slot;
    try {
      slot.batch = build(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lock.lock();
    ready_[b] = std::move(slot);
    cv_.notify_all();
  }
}

bool DataLoader::next(Batch& out) {
  std::unique_lock<std::mutex> lock(mu_);
  if (next_deliver_ >= num_batches()) return false;
  if (opt_.num_workers == 0) {
    const int64_t b = next_deliver_;
    lock.unlock();
    out = build(b);  // throws straight to the caller
    lock.lock();
    ++next_deliver_;
    return true;
  }
  if (!running_) {
    lock.unlock();
    start_workers();
    lock.lock();
  }
  cv_.wait(lock, [&] { return ready_.count(next_deliver_) > 0; });
  auto it = ready_.find(next_deliver_);
  Slot slot = std::move(it->second);
  ready_.erase(it);
  ++next_deliver_;
  cv_.notify_all();  // a worker may claim one more batch now
  if (slot.error) std::rethrow_exception(slot.error);
  out = std::move(slot.batch);
  return true;
}

}  // namespace anybit::data
