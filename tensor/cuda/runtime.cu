// runtime.cu - the CUDA runtime side of the facade (cuda.h): is there a GPU, raw memory, copies,
// and the caching device allocator behind every CUDA Storage.
//
// Everything runs on one stream, the calling thread's default stream (the .cu files are compiled
// with --default-stream per-thread, so that this stream can be captured into a CUDA graph), so
// work is ordered: a block given back to the cache can be handed out again at once, because any
// kernel still reading it was launched before any kernel that will write it. Copies of batches go
// on a stream of their own (copy_to_device_async), and CUDA graphs get allocator pools of their own.
// Read next: elementwise.cu (the kernels), gemm.cu.
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "tensor/cuda/check.h"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/launch.h"
#include "tensor/storage.h"

namespace anybit {

namespace cuda {

namespace {

struct Probe {
  bool ok = false;
  std::string reason;
};

// Asked once: cudaGetDeviceCount fails without a driver (or with a driver older than the
// toolkit), and returns 0 devices on a machine without a GPU. Either way: no GPU.
const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it, so that it is not reported by a later, unrelated check
      r.reason = std::string("no usable CUDA GPU: cudaGetDeviceCount failed: ") + cudaGetErrorName(e) +
                 ": " + cudaGetErrorString(e);
    } else if (n == 0) {
      r.reason = "no usable CUDA GPU: cudaGetDeviceCount found 0 devices";
    } else {
      r.ok = true;
    }
    return r;
  }();
  return p;
}

}  // namespace

bool built() { return true; }
bool available() { return probe().ok; }
std::string unavailable_reason() { return probe().ok ? std::string() : probe().reason; }

void* malloc(size_t nbytes) {
  void* p = nullptr;
  AB_CUDA_CHECK(cudaMalloc(&p, nbytes == 0 ? 1 : nbytes));
  return p;
}

void free(void* p) {
  if (p) AB_CUDA_CHECK(cudaFree(p));
}

// ---- bad input that a kernel found (launch.h) ------------------------------------------------------
KernelError* kernel_error() {
  static KernelError* record = [] {
    void* p = nullptr;  // mapped: the GPU writes it directly (with unified addressing, at this address)
    AB_CUDA_CHECK(cudaHostAlloc(&p, sizeof(KernelError), cudaHostAllocMapped | cudaHostAllocPortable));
    auto* r = static_cast<KernelError*>(p);
    *r = KernelError{};
    return r;  // never freed: kernels queued until the process ends may write it
  }();
  return record;
}

namespace {
// After a wait for the GPU, every kernel queued before it has finished: what they wrote to the
// record is visible here. Reported once (the record is cleared first).
void report_kernel_error() {
  KernelError* r = kernel_error();
  const KernelError e = *r;
  if (e.code == 0) return;
  *r = KernelError{};
  AB_CHECK(e.code == KernelError::kLabel, "cuda: a kernel reported an unknown error code ", e.code);
  AB_FAIL("cross_entropy: label ", e.value, " (at index ", e.index, ") is out of range [0, K = ", e.limit,
          "); hint: labels are class indices 0..K-1 (found on the GPU by the cross-entropy kernel, reported at the "
          "host's next wait for the GPU)");
}
}  // namespace

void memcpy_h2d(void* dst, const void* src, size_t nbytes) {
  if (nbytes) {
    AB_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyHostToDevice));
    profile_mark(__FILE__, __LINE__, 0, double(nbytes));
  }
}
void memcpy_d2h(void* dst, const void* src, size_t nbytes) {
  if (nbytes) {
    AB_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost));
    profile_mark(__FILE__, __LINE__, 0, double(nbytes));
  }
  report_kernel_error();
}
// In stream order with the kernels: the host does not wait for it.
void memcpy_d2d(void* dst, const void* src, size_t nbytes) {
  if (nbytes) {
    AB_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread));
    profile_mark(__FILE__, __LINE__, 0, double(nbytes));
  }
}

void synchronize() {
  AB_CUDA_CHECK(cudaDeviceSynchronize());
  report_kernel_error();
}

int device_count() {
  int n = 0;
  AB_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

void use_device(int index) {
  const int n = device_count();
  AB_CHECK(index >= 0 && index < n, "cuda: no GPU ", index, " (this machine has ", n, ")");
  AB_CUDA_CHECK(cudaSetDevice(index));
}

// ---- asynchronous copies to the GPU through pinned memory -----------------------------------------
// Compute runs on the default stream; batch copies on their own non-blocking stream. A copy first
// waits for the compute queued before it (its destination block may have been freed by that work
// and handed out again by the caching allocator), then copies from one of a ring of pinned
// staging buffers; the compute stream waits for it only when the batch is used (wait_for_copy).
// With four buffers, two batches (images and labels) can be in flight.

namespace {

struct Staging {
  void* host = nullptr;  // pinned (cudaHostAlloc)
  size_t capacity = 0;
  cudaEvent_t done = nullptr;  // the last copy out of this buffer
  bool used = false;
};

struct CopyEngine {
  std::mutex mu;
  cudaStream_t stream = nullptr;
  Staging slots[4];
  int next = 0;
};

CopyEngine& copy_engine() {
  static CopyEngine* e = [] {  // never destroyed: the CUDA context may be gone at exit
    auto* made = new CopyEngine();
    AB_CUDA_CHECK(cudaStreamCreateWithFlags(&made->stream, cudaStreamNonBlocking));
    for (Staging& s : made->slots) AB_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    return made;
  }();
  return *e;
}

cudaEvent_t new_event() {
  cudaEvent_t ev = nullptr;
  AB_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  return ev;
}

}  // namespace

CopyTicket copy_to_device_async(const Tensor& src, Tensor& dst) {
  AB_CHECK(src.device().is_cpu() && src.is_contiguous() && dst.device().is_cuda() && dst.is_contiguous() &&
               src.numel() * dtype_size(src.dtype()) == dst.numel() * dtype_size(dst.dtype()),
           "copy_to_device_async: expects a contiguous CPU source and a contiguous GPU destination of the same ",
           "size, got ", src.str(), " and ", dst.str());
  const size_t n = src.numel() * dtype_size(src.dtype());
  CopyEngine& e = copy_engine();
  std::lock_guard<std::mutex> lock(e.mu);
  Staging& s = e.slots[e.next];
  e.next = (e.next + 1) % 4;
  if (s.used) AB_CUDA_CHECK(cudaEventSynchronize(s.done));  // its previous copy has left the buffer
  if (s.capacity < n) {
    if (s.host) AB_CUDA_CHECK(cudaFreeHost(s.host));
    s.host = nullptr;
    AB_CUDA_CHECK(cudaHostAlloc(&s.host, n, cudaHostAllocDefault));
    s.capacity = n;
  }
  if (n) std::memcpy(s.host, src.raw_data(), n);
  cudaEvent_t before = new_event();  // the compute queued so far
  AB_CUDA_CHECK(cudaEventRecord(before, cudaStreamPerThread));
  AB_CUDA_CHECK(cudaStreamWaitEvent(e.stream, before, 0));
  AB_CUDA_CHECK(cudaEventDestroy(before));  // released once it has completed
  if (n) AB_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), s.host, n, cudaMemcpyHostToDevice, e.stream));
  AB_CUDA_CHECK(cudaEventRecord(s.done, e.stream));
  s.used = true;
  cudaEvent_t ready = new_event();
  AB_CUDA_CHECK(cudaEventRecord(ready, e.stream));
  return ready;
}

void wait_for_copy(CopyTicket ticket) {
  if (!ticket) return;
  cudaEvent_t ready = static_cast<cudaEvent_t>(ticket);
  AB_CUDA_CHECK(cudaStreamWaitEvent(cudaStreamPerThread, ready, 0));
  AB_CUDA_CHECK(cudaEventDestroy(ready));
}

}  // namespace cuda

// ---- the caching device allocator ---------------------------------------------------------------
// cudaMalloc and cudaFree are slow (cudaFree synchronises the whole device), so freed blocks go on
// free lists keyed by rounded size, exactly like the CPU allocator in storage.cpp.
//
// CUDA graphs (cuda::Graph below) need one more rule. A graph replays the kernels of its capture
// on the very blocks they used then, so a block that the capture allocated must never serve
// anything else: while a capture runs, blocks come from that graph's own pool, and a block of a
// pool always goes back to it when freed (even long after the capture), never to the shared lists.

namespace {

constexpr size_t kSmallRound = 512;        // cudaMalloc itself aligns to 256 bytes
constexpr size_t kLargeRound = 2u << 20;   // 2 MiB above 1 MiB, so that sizes share lists

size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (n + kLargeRound - 1) / kLargeRound * kLargeRound;
}

using FreeLists = std::map<size_t, std::vector<void*>>;

class CudaCachingAllocator final : public Allocator {
 public:
  // In the tests every block handed out, fresh or cached, is first filled with NaN bytes (0xFF), as
  // the CPU allocator does (storage.h), so a kernel that leaves part of its output unwritten fails.
  void* allocate(size_t nbytes) override {
    void* p = take(nbytes);
    if (fill_new_allocations_with_nan()) {
      AB_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, round_size(nbytes), cudaStreamPerThread));
      cuda::profile_mark(__FILE__, __LINE__, 0, double(round_size(nbytes)));
    }
    return p;
  }

  void deallocate(void* p, size_t nbytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto owner = pool_of_.find(p);
    (owner == pool_of_.end() ? free_ : pools_[owner->second])[round_size(nbytes)].push_back(p);
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_)
      for (void* p : kv.second) cudaFree(p);  // unchecked: this runs on the out-of-memory path
    free_.clear();
  }

  // Allocations from now on come from pool `id` (> 0), until use_pool(0).
  void use_pool(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    pool_ = id;
  }

 private:
  void* take(size_t nbytes) {
    AB_CHECK(cuda::available(), "cannot allocate a CUDA tensor: ", cuda::unavailable_reason());
    size_t size = round_size(nbytes);
    int pool = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pool = pool_;
      FreeLists& lists = pool ? pools_[pool] : free_;
      auto it = lists.find(size);
      if (it != lists.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation && !pool) {
      cudaGetLastError();
      empty_cache();  // give the cached blocks back and try once more before failing
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      AB_FAIL("cuda allocator: cudaMalloc of ", nbytes, " bytes failed: ", cudaGetErrorName(e), ": ",
              cudaGetErrorString(e),
              e == cudaErrorMemoryAllocation ? " (out of GPU memory: use a smaller batch)" : "");
    }
    if (pool) {
      std::lock_guard<std::mutex> lock(mu_);
      pool_of_[p] = pool;
    }
    return p;
  }

  std::mutex mu_;
  FreeLists free_;                      // the shared lists
  std::map<int, FreeLists> pools_;      // each graph's own
  std::map<void*, int> pool_of_;        // the blocks that belong to a graph's pool
  int pool_ = 0;                        // where allocations go now (0: the shared lists)
};

CudaCachingAllocator& device_allocator() {
  // Never destroyed: tensors in static objects may be freed after main returns, when the CUDA
  // context may already be gone; the blocks are returned with the process.
  static auto* a = new CudaCachingAllocator();
  return *a;
}

}  // namespace

// ---- CUDA graphs ------------------------------------------------------------------------------------

namespace cuda {

namespace {
bool g_capturing = false;
int g_next_pool = 1;
}  // namespace

bool capturing() { return g_capturing; }

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));  // unchecked: may run at exit
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
}

void Graph::capture(const std::function<void()>& work) {
  AB_CHECK(!graph_, "cuda::Graph: already captured");
  AB_CHECK(!g_capturing, "cuda::Graph: a capture is already running");
  synchronize();  // nothing of the work before may end up in the graph
  pool_ = g_next_pool++;
  device_allocator().use_pool(pool_);
  g_capturing = true;
  // Relaxed: the allocator may still call cudaMalloc while the stream is being captured.
  AB_CUDA_CHECK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeRelaxed));
  cudaGraph_t graph = nullptr;
  try {
    work();
  } catch (...) {
    cudaStreamEndCapture(cudaStreamPerThread, &graph);  // abandon it
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    g_capturing = false;
    device_allocator().use_pool(0);
    throw;
  }
  cudaError_t e = cudaStreamEndCapture(cudaStreamPerThread, &graph);
  g_capturing = false;
  device_allocator().use_pool(0);
  AB_CUDA_CHECK(e);
  graph_ = graph;
  cudaGraphExec_t exec = nullptr;
  AB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  exec_ = exec;
}

void Graph::replay() {
  AB_CHECK(exec_, "cuda::Graph: replay before capture");
  AB_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cudaStreamPerThread));
  profile_mark(__FILE__, __LINE__);
}

// ---- the GPU time profile (cuda.h) ------------------------------------------------------------------
// events[0] is recorded before the hold kernel and events[1] after it; entry i ends at events[i + 2].

namespace {

// Keeps one thread of the GPU busy for about `us` microseconds, so that the work queued behind it
// piles up. (__nanosleep's wait is approximate; profile_end measures the hold it got.)
__global__ void hold_k(int64_t us) {
  for (int64_t i = 0; i < us; ++i) __nanosleep(1000);
}

using Clock = std::chrono::steady_clock;

struct Profiler {
  static constexpr size_t kEvents = 1 << 14;
  bool on = false;
  std::vector<cudaEvent_t> events;  // created at the first profile, kept for the next
  std::vector<ProfileEntry> entries;
  std::vector<double> queued_ms;  // the host's time, from profile_begin, when entry i had been queued
  Clock::time_point start;
  bool truncated = false;
};
Profiler& profiler() {
  static Profiler p;
  return p;
}

double ms_between(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  AB_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

}  // namespace

bool profiling() { return profiler().on && !g_capturing; }

void profile_mark(const char* file, int line, double flops, double bytes, const char* detail) {
  Profiler& p = profiler();
  if (!p.on || g_capturing) return;
  if (p.entries.size() + 2 >= p.events.size()) {
    p.truncated = true;
    return;
  }
  AB_CUDA_CHECK(cudaEventRecord(p.events[p.entries.size() + 2], cudaStreamPerThread));
  std::string site = file;  // from the repository's root: the build may name files by absolute paths
  const size_t root = site.rfind("tensor/");
  if (root != std::string::npos) site = site.substr(root);
  ProfileEntry e;
  e.site = site + ":" + std::to_string(line);
  e.flops = flops;
  e.bytes = bytes;
  if (detail) e.detail = detail;
  p.entries.push_back(e);
  p.queued_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - p.start).count());
}

void profile_begin(double hold_ms) {
  Profiler& p = profiler();
  AB_CHECK(!p.on, "cuda::profile_begin: a profile is already running");
  AB_CHECK(!g_capturing, "cuda::profile_begin: not during a CUDA graph capture");
  AB_CHECK(hold_ms >= 0, "cuda::profile_begin: hold_ms must be >= 0, got ", hold_ms);
  while (p.events.size() < Profiler::kEvents) {
    cudaEvent_t e = nullptr;
    AB_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDefault));
    p.events.push_back(e);
  }
  synchronize();  // the GPU is idle: the hold starts now
  p.entries.clear();
  p.queued_ms.clear();
  p.truncated = false;
  p.start = Clock::now();
  AB_CUDA_CHECK(cudaEventRecord(p.events[0], cudaStreamPerThread));
  hold_k<<<1, 1>>>(int64_t(hold_ms * 1000));
  AB_CUDA_CHECK(cudaGetLastError());
  AB_CUDA_CHECK(cudaEventRecord(p.events[1], cudaStreamPerThread));
  p.on = true;
}

// Entry i was queued in time when the host had queued it before the GPU finished the entry before:
// the GPU's clock starts at events[0], recorded after p.start, so "the GPU finished the entry before
// at p.start + its event's time since events[0]" is early if anything, and the test errs on the
// side of "not in time".
Profile profile_end() {
  Profiler& p = profiler();
  AB_CHECK(p.on, "cuda::profile_end: no profile is running (call profile_begin first)");
  p.on = false;
  synchronize();
  Profile r;
  r.hold_ms = ms_between(p.events[0], p.events[1]);
  r.queue_ms = p.queued_ms.empty() ? 0 : p.queued_ms.back();
  r.truncated = p.truncated;
  r.entries = p.entries;
  for (size_t i = 0; i < r.entries.size(); ++i) {
    r.entries[i].gpu_ms = ms_between(p.events[i + 1], p.events[i + 2]);
    r.entries[i].in_time = p.queued_ms[i] <= ms_between(p.events[0], p.events[i + 1]);
  }
  return r;
}

}  // namespace cuda

Allocator* cuda_allocator() { return &device_allocator(); }

}  // namespace anybit
