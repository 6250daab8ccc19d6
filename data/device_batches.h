// device_batches.h - the loader's batches on the training device, the next one already on its way.
//
// On the CPU this is the DataLoader itself. On a GPU, batch k + 1 is taken from the loader and its
// copy started (pinned staging memory, a separate copy stream: cuda::copy_to_device_async) as
// soon as batch k is handed out, before the caller queues step k's kernels, so the copy of the
// next batch runs while the GPU computes this one. The batches and their order are the loader's.
#pragma once
#include "data/loader.h"

namespace anybit::data {

class DeviceBatches {
 public:
  DeviceBatches(DataLoader& loader, Device device) : loader_(loader), device_(device) {}
  ~DeviceBatches();
  DeviceBatches(const DeviceBatches&) = delete;
  DeviceBatches& operator=(const DeviceBatches&) = delete;

  // The next batch of the loader's epoch, images and labels on the device (the other fields as
  // the loader gave them); false once the epoch is finished. Call restart() after the loader's
  // set_epoch().
  bool next(Batch& out);
  void restart();

 private:
  struct InFlight {
    Batch batch;                  // images and labels already on the device
    void* images_ready = nullptr;  // cuda::CopyTicket of each copy
    void* labels_ready = nullptr;
  };
  bool fetch(InFlight& f);  // the loader's next batch, its copies started
  void drop(InFlight& f);   // forgets a prefetched batch (its copies still complete)

  DataLoader& loader_;
  Device device_;
  InFlight ahead_;
  bool has_ahead_ = false, started_ = false;
};

}  // namespace anybit::data
