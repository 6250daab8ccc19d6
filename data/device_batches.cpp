// device_batches.cpp - see device_batches.h.
#include "data/device_batches.h"

#include "tensor/cuda/cuda.h"

namespace anybit::data {

namespace {

// A device tensor of src's shape and dtype, filled by an asynchronous copy; *ready is its ticket.
Tensor start_copy(const Tensor& src, Device device, void** ready) {
  Tensor host = src.contiguous();
  Tensor dst = Tensor::empty(host.shape(), host.dtype(), device);
  *ready = cuda::copy_to_device_async(host, dst);
  return dst;
}

}  // namespace

DeviceBatches::~DeviceBatches() { drop(ahead_); }

bool DeviceBatches::fetch(InFlight& f) {
  if (!loader_.next(f.batch)) return false;
  if (device_.is_cuda()) {
    if (f.batch.images.defined()) f.batch.images = start_copy(f.batch.images, device_, &f.images_ready);
    f.batch.labels = start_copy(f.batch.labels, device_, &f.labels_ready);
  }
  return true;
}

void DeviceBatches::drop(InFlight& f) {
  // The compute stream waits for copies it will never use: harmless, and it releases the tickets.
  if (f.images_ready) cuda::wait_for_copy(f.images_ready);
  if (f.labels_ready) cuda::wait_for_copy(f.labels_ready);
  f = InFlight();
}

void DeviceBatches::restart() {
  drop(ahead_);
  has_ahead_ = false;
  started_ = false;
}

bool DeviceBatches::next(Batch& out) {
  if (!device_.is_cuda()) return loader_.next(out);  // nothing to copy
  if (!started_) {
    has_ahead_ = fetch(ahead_);
    started_ = true;
  }
  if (!has_ahead_) return false;
  // Hand out the batch in flight (the compute stream will wait for its copies), then start the
  // next one's copies before the caller queues any work on this one.
  cuda::wait_for_copy(ahead_.images_ready);
  cuda::wait_for_copy(ahead_.labels_ready);
  out = std::move(ahead_.batch);
  ahead_ = InFlight();
  has_ahead_ = fetch(ahead_);
  return true;
}

}  // namespace anybit::data
