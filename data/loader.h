// loader.h - the DataLoader: shuffled, augmented batches prepared ahead by worker threads.
//
//   DataLoader loader(dataset, pipeline, {.batch_size = 128, .num_workers = 2, .seed = 1});
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.set_epoch(epoch);                 // or set_epoch(epoch, k) to resume at batch k
//     Batch b;
//     while (loader.next(b)) train_step(b.images, b.labels);   // (N, C, H, W) f32, (N) i64
//   }
//
// Determinism. The example order of an epoch is a Fisher-Yates shuffle drawn from a generator
// seeded by (seed, epoch). Each example's augmentation draws from its own generator seeded by
// (seed, epoch, example index). No generator is shared between examples, so the batches are the
// same bit for bit whatever num_workers is, whichever thread prepares which batch, and when
// resuming at batch k they are the batches k, k+1, ... of the uninterrupted epoch.
//
// Threads. set_epoch() only plans the epoch; the first next() starts num_workers std::threads.
// Each worker claims the next unprepared batch, reads, augments and converts its examples into
// fresh batch tensors, and files the batch by number. At most `prefetch` batches are prepared
// ahead of the one the trainer waits for (a bounded queue: memory stays bounded when training is
// slower). next() hands batches out in order. An error in a worker (a corrupt file, say) is
// re-thrown by next() for the batch it happened in. num_workers = 0 prepares each batch in next().
//
// Cache. With cache = true the decoded 8-bit images are kept (before augmentation, which differs
// per epoch): an image folder is then read and decoded once. MNIST and CIFAR are in memory anyway.
// Video datasets cannot be cached (their clips are drawn anew every epoch).
// Read next: dataset.h, transforms.h.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "tensor/tensor.h"

namespace anybit::data {

struct Batch {
  Tensor images;                 // (N, C, H, W) float32; video: (N * F, C, H, W), F frames each
  Tensor labels;                 // (N) int64
  std::vector<int64_t> indices;  // (N) the dataset indices of the examples
  int64_t epoch = 0, index = 0;  // index: the batch number within the epoch
  int64_t frames_per_example = 1;  // F: 1 for images, the clip's frames for video
};

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;  // drop a last batch smaller than batch_size
  int num_workers = 2;     // threads preparing batches; 0: prepare in next() on the caller's thread
  int prefetch = 4;        // batches prepared ahead of the trainer, at most (>= 1)
  bool cache = false;      // keep decoded images in memory
  uint64_t seed = 0;
  // Data-parallel training (nn/distributed.h): this process builds only its part of every batch,
  // examples [n * shard / shards, n * (shard + 1) / shards) of the batch's n. The batches, their
  // order and each example's augmentation are those of the whole batch, so the union of the
  // parts is the same whatever the number of processes. A part may be empty (an evaluation's
  // last, short batch): labels (0), images undefined.
  int shard = 0, shards = 1;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, Pipeline pipeline, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Plans epoch `epoch` (its example order) and positions the loader at batch start_batch, so
  // that a run resumed from a checkpoint continues with exactly the batches it would have seen.
  // Stops any batches still being prepared for the previous plan. The constructor plans epoch 0.
  void set_epoch(int64_t epoch, int64_t start_batch = 0);
  // The next batch of the epoch into `out`; false once the epoch is finished (until set_epoch).
  bool next(Batch& out);

  int64_t epoch() const { return epoch_; }
  int64_t num_batches() const;   // batches per epoch
  int64_t batches_done() const;  // batches handed out by next() this epoch (start_batch included)
  double progress() const { return num_batches() ? double(batches_done()) / num_batches() : 1.0; }
  const std::vector<int64_t>& order() const { return order_; }  // this epoch's example order
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return opt_; }

  // The seeds behind the determinism contract (see the file comment), exposed for tests.
  static uint64_t example_seed(uint64_t seed, int64_t epoch, int64_t example);
  static uint64_t shuffle_seed(uint64_t seed, int64_t epoch);

 private:
  Example fetch(int64_t example, Generator& gen) const;  // through the cache when enabled
  Batch build(int64_t batch) const;      // reads, augments and converts one batch
  void start_workers();
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const Dataset> dataset_;
  Pipeline pipeline_;
  LoaderOptions opt_;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;

  // cache (guarded by cache_mu_)
  mutable std::mutex cache_mu_;
  mutable std::vector<std::shared_ptr<const Example>> cache_;

  // the batch queue (guarded by mu_)
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  bool running_ = false, stop_ = false;
  int64_t next_claim_ = 0;     // the next batch a worker will prepare
  int64_t next_deliver_ = 0;   // the next batch next() hands out
  std::map<int64_t, Slot> ready_;
};

}  // namespace anybit::data
