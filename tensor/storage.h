// storage.h - refcounted bytes on a device, and the allocators behind them.
//
// A Storage is a block of memory plus the allocator that gives it back. Tensors (tensor.h) are
// views onto a shared Storage. Both allocators cache: a freed block goes on a free list keyed by
// its rounded size and is handed out again by the next request of that size. Training repeats the
// same allocations every step, so after the first step no memory is requested from the system and
// no page is touched for the first time (PERF-NOTES.md: a first touch costs 11-13 us per 4 KiB).
#pragma once
#include <cstddef>
#include <memory>

#include "tensor/dtype.h"

namespace anybit {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual void empty_cache() {}
};

Allocator* cpu_allocator();
Allocator* cuda_allocator();  // throws "built without CUDA" in a CPU-only build

struct AllocatorStats {
  size_t system_allocs = 0;  // blocks requested from the system (cache misses)
  size_t cache_hits = 0;     // requests served from the free lists
  size_t bytes_cached = 0;   // bytes sitting in the free lists now
};
AllocatorStats cpu_allocator_stats();

// A debugging switch for tests (tests/main.cpp turns it on): every CPU block handed out, fresh or
// from the cache, is first filled with 0xFF bytes, a NaN in float32 and float64 (-1 in integers).
// A kernel that leaves part of its output unwritten, or reads memory it expects to be zeroed,
// then produces NaN instead of passing by luck. Off by default: the product pays one relaxed
// atomic load per allocation.
void set_fill_new_allocations_with_nan(bool on);
bool fill_new_allocations_with_nan();

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace anybit
