// storage.cpp - the caching CPU allocator. See storage.h for why it caches.
#include "tensor/storage.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "tensor/error.h"

namespace anybit {

namespace {

constexpr size_t kAlign = 64;              // one cache line, enough for AVX-512 loads
constexpr size_t kHuge = 2u << 20;         // 2 MiB: blocks this big get transparent huge pages

// Rounds a request up so that slightly different sizes share a free list:
// to 64 bytes below 1 MiB, to 2 MiB above (huge-page sized blocks).
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + kAlign - 1) / kAlign * kAlign;
  return (n + kHuge - 1) / kHuge * kHuge;
}

std::atomic<bool> g_fill_nan{false};  // set_fill_new_allocations_with_nan (storage.h)

class CpuCachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    void* p = allocate_block(nbytes);
    // every hand-out, not just a fresh malloc: a cached block holds the last tensor's values
    if (g_fill_nan.load(std::memory_order_relaxed)) std::memset(p, 0xFF, nbytes);
    return p;
  }

  void* allocate_block(size_t nbytes) {
    size_t size = round_size(nbytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cache_hits++;
        stats_.bytes_cached -= size;
        return p;
      }
      stats_.system_allocs++;
    }
    size_t align = size >= kHuge ? kHuge : kAlign;
    void* p = std::aligned_alloc(align, size);
    if (!p) {
      empty_cache();  // give the cache back and try once more before failing
      p = std::aligned_alloc(align, size);
    }
    AB_CHECK(p, "cpu allocator: out of memory allocating ", nbytes, " bytes");
    if (size >= kHuge) madvise(p, size, MADV_HUGEPAGE);  // a hint: failure is harmless
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    size_t size = round_size(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    free_[size].push_back(p);
    stats_.bytes_cached += size;
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_)
      for (void* p : kv.second) std::free(p);
    free_.clear();
    stats_.bytes_cached = 0;
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

CpuCachingAllocator& cpu_cache() {
  // Never destroyed: tensors in static objects may be freed after main returns.
  static auto* a = new CpuCachingAllocator();
  return *a;
}

}  // namespace

Allocator* cpu_allocator() { return &cpu_cache(); }
void set_fill_new_allocations_with_nan(bool on) { g_fill_nan.store(on); }
bool fill_new_allocations_with_nan() { return g_fill_nan.load(); }
AllocatorStats cpu_allocator_stats() { return cpu_cache().stats(); }

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  allocator_ = device.is_cpu() ? cpu_allocator() : cuda_allocator();
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() { allocator_->deallocate(data_, nbytes_); }

}  // namespace anybit
