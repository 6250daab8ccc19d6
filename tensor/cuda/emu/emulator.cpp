// emulator.cpp - a CUDA device made of the CPU, so that anybit's CUDA backend (tensor/cuda/*.cu,
// kernels and runtime code as written) runs, and is tested against the CPU, on a machine with no
// GPU: the program anybit_tests_emu (CMakeLists.txt, `make test`).
//
// Why: the [cuda] tests compare every CUDA kernel with the CPU, but GPUs are rare here, and a
// kernel whose index arithmetic, block reduction or graph capture is wrong should fail on the
// first CPU machine, not on the first GPU. The emulator is a checking tool, never a backend that
// users run: its numbers are no GPU figure, and its speed is no GPU speed.
//
// How a launch runs. kernel<<<grid, block>>>(args) is rewritten at build time into
// launch(kernel, "kernel", grid, block)(args) (include/cuda_runtime.h, rewrite_launches.cmake).
// The blocks run one after another on the launching host thread. The threads of a block are
// fibers: each runs until it returns or reaches __syncthreads(); once every thread of the block
// has done so, those at the barrier are resumed, in thread order, and so on. So a block's threads
// see each other's shared-memory writes exactly at the barriers, and a reduction that reads a
// value before the barrier that publishes it reads a stale one and fails its test.
//
// What it checks, beyond the kernels' results:
//   - Host and device memory are apart. Device memory is one shared-memory file mapped twice:
//     at the addresses cudaMalloc hands out, with no access at all, and at a second place that
//     only device work uses (kernels get their pointer arguments moved there at launch; copies,
//     memsets and GEMMs move theirs). Host code that reads or writes a device pointer, anywhere in
//     anybit, dies with SIGSEGV at that access, as it would on a GPU; a kernel handed a host
//     pointer (other than pinned memory) fails its launch.
//   - Copies and memsets stay inside one allocation and go the way their kind says
//     (host to device, ...); cuBLAS operands lie inside their allocations.
//   - Launch configurations: a grid of 0 blocks or a block of more than 1024 threads fails with
//     cudaErrorInvalidConfiguration, as on a GPU (a launch for an empty tensor must be skipped).
//   - Graph capture: while the calling thread's stream is captured, device work is recorded and
//     not run, and replay runs the recording; a synchronous call (cudaMemcpy, cudaDeviceSynchronize,
//     cudaFree) or a copy from pageable host memory during the capture fails and invalidates it,
//     as CUDA does. So host code that reads a GPU value inside a captured step is caught.
//   - Shared memory: each block gets its own, filled with garbage (bytes 0xff) so that a read of a
//     slot no thread of the block wrote gives a wrong value, not the previous block's; a block
//     declaring more than 48 KiB fails, as nvcc would refuse it.
//   - Data races, in the race-check build (anybit_tests_race_emu; "the race check" below): two
//     accesses to one address by two warps of one launch, in the same block or not, at least one
//     a write, with no __syncthreads() between them, are reported by ThreadSanitizer; so is work
//     on two streams that touches one address with no event ordering one after the other.
// What it cannot check: races between the lanes of one warp (a warp is one context to the race
// check), timing and overlap (every call completes before it returns), nvcc's own compilation
// (`make` with nvcc compiles the same files; CI does), --use_fast_math's precision, and anything
// about memory size or speed.
// Read next: include/cuda_runtime.h, tests/test_cuda_ops.cpp.
#include <cblas.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"
#include "tensor/error.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace anybit::cuda_emu {

struct Stream {
  Graph* capture = nullptr;  // the graph being recorded from this stream, if any
  void* race_context = nullptr;  // the stream as ThreadSanitizer sees it (race-check builds)
  uint64_t race_submitted = 0;   // sync address: the host's work before each submission
};
struct Event {
  uint64_t race_recorded = 0;  // sync address: the recording stream's work before the record
  bool recorded = false;       // outside a capture: the timing below is set
  std::chrono::steady_clock::time_point at;  // when the work before it was done (the record itself: the
                                             // emulated device does its work when it is queued)
};
struct Graph {
  std::vector<std::function<void()>> work;  // in stream order
  bool invalidated = false;
};
struct Blas {
  bool tf32 = false;  // cublasSetMathMode(CUBLAS_TF32_TENSOR_OP_MATH)
};

namespace {

// ---- errors -------------------------------------------------------------------------------------------
thread_local cudaError_t last_error = cudaSuccess;  // per host thread, as in CUDA

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

// ---- device memory: one file, mapped where the host cannot touch it and where device work does ------
constexpr size_t kReserved = size_t(64) << 30;  // address space only: pages exist once written
constexpr size_t kAlign = 256;                   // cudaMalloc's alignment

struct Block {
  size_t size;       // bytes reserved for it
  size_t requested;  // bytes asked for: copies and memsets must stay inside these
};

struct Device {
  std::recursive_mutex mu;  // device work runs one call at a time, whatever the host thread
  char* base = nullptr;     // the device addresses: mapped with no access
  char* open = nullptr;     // the same bytes, readable and writable, for device work only
  size_t top = 0;                               // bytes of the region handed out so far
  std::map<const char*, Block> live;            // allocations by address
  std::multimap<size_t, char*> free_by_size;    // freed blocks, to be handed out again
  std::map<const char*, size_t> pinned;         // cudaHostAlloc's blocks, by address
};

Device& device() {
  static Device* d = [] {
    auto* made = new Device();  // never destroyed: tensors may be freed after main returns
    int fd = memfd_create("anybit-cuda-emulator", 0);
    AB_CHECK(fd >= 0, "CUDA emulator: memfd_create failed: ", std::strerror(errno));
    AB_CHECK(ftruncate(fd, (off_t)kReserved) == 0, "CUDA emulator: ftruncate failed: ", std::strerror(errno));
    void* a = mmap(nullptr, kReserved, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    void* b = mmap(nullptr, kReserved, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    AB_CHECK(a != MAP_FAILED && b != MAP_FAILED, "CUDA emulator: cannot map ", kReserved >> 30,
             " GiB of address space: ", std::strerror(errno));
    close(fd);  // the mappings keep the file
    made->base = static_cast<char*>(a);
    made->open = static_cast<char*>(b);
    return made;
  }();
  return *d;
}

// Device work (a kernel, a copy, a GEMM) runs holding this: one at a time, whatever the host thread.
using DeviceWork = std::lock_guard<std::recursive_mutex>;

bool on_device(const void* p) {
  const Device& d = device();
  auto c = static_cast<const char*>(p);
  return c >= d.base && c < d.base + kReserved;
}

// Where device work reads and writes the device address p (host addresses are left alone).
template <typename T>
T* opened(T* p) {
  if (!on_device(p)) return p;
  const Device& d = device();
  return reinterpret_cast<T*>(d.open + (reinterpret_cast<const char*>(p) - d.base));
}

// The entry of `blocks` (start address -> its size) whose block starts at or before c, if any.
template <typename Size>
const std::pair<const char* const, Size>* block_at(const std::map<const char*, Size>& blocks, const char* c) {
  auto it = blocks.upper_bound(c);
  return it == blocks.begin() ? nullptr : &*std::prev(it);
}

// [p, p + n) lies inside one live allocation.
bool inside_allocation(const void* p, size_t n) {
  Device& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  auto c = static_cast<const char*>(p);
  auto b = block_at(d.live, c);
  return b && c + n <= b->first + b->second.requested;
}

// [p, p + n) lies inside one block of cudaHostAlloc's.
bool pinned(const void* p, size_t n) {
  Device& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  auto c = static_cast<const char*>(p);
  auto b = block_at(d.pinned, c);
  return b && c + n <= b->first + b->second;
}

// ---- streams and capture --------------------------------------------------------------------------------
thread_local Stream per_thread_stream;

Stream* resolve(cudaStream_t s) { return (s == nullptr || s == cudaStreamPerThread) ? &per_thread_stream : s; }

// A synchronous call while this thread's stream is being captured: CUDA refuses it and
// invalidates the capture.
bool refused_during_capture() {
  if (!per_thread_stream.capture) return false;
  per_thread_stream.capture->invalidated = true;
  fail(cudaErrorStreamCaptureUnsupported);
  return true;
}

// Runs device work on stream s now, and frees it (the race check runs both in the stream's context,
// so that freeing a kernel's arguments comes after the kernel; defined below).
void run_on_stream(Stream* s, std::function<void()> work);
// The host waits for all device work so far (the race check: it sees that work's accesses).
void host_waits_for_device();

// ---- the work profile (ANYBIT_EMU_PROFILE) ----------------------------------------------------------------
// With ANYBIT_EMU_PROFILE=<file>, the emulator counts what the program asks of the device and
// writes the counts to <file> when the program exits, one tab-separated line per row:
//   device  <what>  <name>  <times run>  <amount>   what: kernel (amount: threads launched),
//                                                     gemm (floating-point operations),
//                                                     copy or memset (bytes)
//   host    calls   <name>  <calls>                 the host's calls that put work on a stream,
//                                                     outside a capture (a graph replay is one)
// Device work is counted when it runs, so each replay of a graph counts its kernels again. The
// counts are the same on a GPU: the host code that decides them is the same code. What the work
// costs there is not (scripts/profile_emu_step.py turns the counts into launches per step). Not for
// the race check: the profile's lock, taken from every stream, would order what CUDA does not.
struct ProfileRow {
  uint64_t times = 0;
  double amount = 0;
};
struct Profile {
  std::mutex mu;
  std::string path;
  std::map<std::pair<std::string, std::string>, ProfileRow> device, host;  // (what, name) -> row
};

Profile* profile() {  // nullptr unless ANYBIT_EMU_PROFILE is set
  static Profile* p = []() -> Profile* {
    const char* path = std::getenv("ANYBIT_EMU_PROFILE");
    if (!path || !*path) return nullptr;
    auto* made = new Profile();  // never destroyed: written at exit
    made->path = path;
    std::atexit([] {
      Profile& q = *profile();
      std::lock_guard<std::mutex> lock(q.mu);
      FILE* f = std::fopen(q.path.c_str(), "w");
      if (!f) {
        std::fprintf(stderr, "CUDA emulator: cannot write the profile to %s: %s\n", q.path.c_str(), std::strerror(errno));
        return;
      }
      for (const auto& [key, row] : q.device)
        std::fprintf(f, "device\t%s\t%s\t%llu\t%.17g\n", key.first.c_str(), key.second.c_str(),
                     (unsigned long long)row.times, row.amount);
      for (const auto& [key, row] : q.host)
        std::fprintf(f, "host\t%s\t%s\t%llu\n", key.first.c_str(), key.second.c_str(), (unsigned long long)row.times);
      std::fclose(f);
    });
    return made;
  }();
  return p;
}

void count(bool on_device_side, const char* what, const char* name, double amount) {
  Profile* p = profile();
  if (!p) return;
  std::lock_guard<std::mutex> lock(p->mu);
  ProfileRow& row = (on_device_side ? p->device : p->host)[{what, name}];
  ++row.times;
  row.amount += amount;
}

// Device work that runs: counted in the profile as `what` `name`, with its amount.
void device_did(const char* what, const char* name, double amount) { count(true, what, name, amount); }

// Device work in stream order: recorded into the graph when the stream is being captured, run now
// otherwise. `call` names the host's call in the profile.
void submit(cudaStream_t stream, std::function<void()> work, const char* call) {
  Stream* s = resolve(stream);
  if (s->capture) {
    s->capture->work.push_back(std::move(work));
    return;
  }
  count(false, "calls", call, 0);
  DeviceWork busy(device().mu);
  run_on_stream(s, std::move(work));
}

// ---- fibers: the threads of a block -----------------------------------------------------------------------
// A fiber is a stack and a saved stack pointer. anybit_emu_switch(save_sp, load_sp) pushes the
// callee-saved registers, saves the stack pointer in *save_sp, loads load_sp and pops the other
// fiber's registers: a plain function call as far as the compiler can tell, so only those
// registers need saving. Kernels must not throw (CUDA code cannot): an exception cannot leave a
// fiber's stack.
constexpr size_t kFiberStack = 256 << 10;

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // kFiberStack bytes above a guard page
  unsigned thread = 0;    // linear index of its CUDA thread in the block
  unsigned barriers = 0;  // __syncthreads() calls it has reached so far
  bool done = false;
  void* race_context = nullptr;  // its own thread as ThreadSanitizer sees it (race-check builds)
  unsigned pool = 0;             // the pool its stack returns to (stack_pool)
};

#if defined(__x86_64__)
extern "C" void anybit_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl anybit_emu_switch
    .type anybit_emu_switch, @function
anybit_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size anybit_emu_switch, .-anybit_emu_switch
)");
#else
#error "the CUDA emulator switches stacks with x86-64 assembly; build with -DANYBIT_CUDA_EMULATOR=OFF here"
#endif

struct Scheduler {
  void* sp = nullptr;                       // the launching thread's own stack, while a fiber runs
  Fiber* current = nullptr;                 // the fiber running now
  const std::function<void()>* thread_body = nullptr;
  const char* kernel = nullptr;             // the running launch's kernel, for messages
  std::vector<std::vector<Fiber*>> idle;    // per pool, fibers whose thread has returned: stacks to reuse
};
thread_local Scheduler sched;

// ---- the race check (anybit_tests_race_emu) ---------------------------------------------------------------
// In the race-check build (ANYBIT_EMU_RACECHECK: anybit_tests_race_emu, `make racecheck`), the
// .cu files are compiled with -fsanitize=thread, and each warp of each block is a thread of its
// own to ThreadSanitizer, ordered after another's memory accesses only where CUDA orders them:
//   - a launch's threads see what the host did before the launch, and the host sees what they
//     did once the launch is over (kernels of one stream run in order);
//   - a block's threads see each other's accesses from before a __syncthreads() they have all
//     passed, and nothing else of each other;
//   - nothing orders one block after another.
// Each stream is a context too (see race_on_stream): its work comes after what the host did
// before submitting it and after the stream's earlier work, and after another stream's work only
// through an event it waits for.
// So two accesses to one address by two warps of one launch (of the same block or not), at least
// one of them a write, with no barrier between them, are a data race, reported with the kernel,
// block and warp of each and the .cu lines: on a GPU they could happen in either order, or at
// once. The rest of the emulator cannot see those, since it runs blocks one after another and a
// block's threads in turn. Switching between fibers tells ThreadSanitizer nothing by itself
// (__tsan_switch_to_fiber_no_sync); the hooks below say what CUDA guarantees, with acquire and
// release on sync addresses. The emulator's own bookkeeping is not instrumented: it runs on the
// host thread's context or, briefly, under a warp's with accesses ignored.
#if defined(ANYBIT_EMU_RACECHECK)
}  // namespace
}  // namespace anybit::cuda_emu
extern "C" {  // ThreadSanitizer's interface (sanitizer/tsan_interface.h), in libtsan
void* __tsan_get_current_fiber();
void* __tsan_create_fiber(unsigned flags);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_set_fiber_name(void* fiber, const char* name);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void AnnotateIgnoreWritesBegin(const char* file, int line);  // ignores reads too
void AnnotateIgnoreWritesEnd(const char* file, int line);
}
namespace anybit::cuda_emu {
namespace {
constexpr unsigned kNoSync = 1;  // __tsan_switch_to_fiber_no_sync

struct RaceLaunch {
  void* host = nullptr;            // the launching thread's context
  uint64_t start = 0, end = 0;     // sync addresses: host -> threads, threads -> host
  std::deque<uint64_t> barriers;   // one sync address per __syncthreads() of the running block
  std::vector<char*> shared;       // each block's shared memory, freed when the launch is over
};
thread_local RaceLaunch* race = nullptr;
thread_local uint64_t race_launches = 0;  // launches run so far

struct IgnoredAccesses {  // the emulator's bookkeeping while a fiber's context is current
  IgnoredAccesses() { AnnotateIgnoreWritesBegin(__FILE__, __LINE__); }
  ~IgnoredAccesses() { AnnotateIgnoreWritesEnd(__FILE__, __LINE__); }
};

void race_launch_begins() {
  ++race_launches;
  race = new RaceLaunch();
  race->host = __tsan_get_current_fiber();
  __tsan_release(&race->start);
}

void race_launch_ends() {
  __tsan_acquire(&race->end);
  {
    IgnoredAccesses quiet;
    for (char* p : race->shared) delete[] p;
  }
  delete race;  // frees its sync addresses: the next launch starts from none
  race = nullptr;
}

void race_block_begins() { race->barriers.clear(); }

// Before the threads of a block run from their `round`-th barrier (0: from their start) to the next.
void race_round_begins(unsigned round) {
  while (race->barriers.size() <= round) race->barriers.push_back(0);
}

// ThreadSanitizer's thread contexts for CUDA threads: one per warp (32 threads in a row), used
// again kBlockSlots blocks later. Warp w of a block uses context (block % kBlockSlots) * 32 + w.
//   - A warp's threads run in turn in one context, so races between the lanes of one warp are not
//     seen. (The rest of the emulator catches the usual one, a read before the barrier that
//     publishes it, since a lower lane reads before a higher one writes.) One context per thread
//     took 66 times the plain emulator's time on the inference-graph test, one per warp 8 times
//     (ThreadSanitizer's vector clocks grow with the number of contexts).
//   - A context's accesses come after those of its previous use, kBlockSlots blocks earlier (or in
//     an earlier launch, which is ordered anyway), and after what that use saw at its barriers:
//     so each block is checked in full against the kBlockSlots - 1 blocks launched before and
//     after it, and in part against the rest.
constexpr unsigned kBlockSlots = 4;
constexpr unsigned kWarp = 32, kWarpsPerBlock = 1024 / kWarp;

struct RaceContext {
  void* tsan = nullptr;
  uint64_t launch = 0, block = ~uint64_t(0);  // its current use, for its name in reports
};
thread_local std::vector<RaceContext> race_contexts;

void race_thread_begins(Fiber* f) {
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const size_t slot = size_t(block % kBlockSlots) * kWarpsPerBlock + f->thread / kWarp;
  if (race_contexts.size() <= slot) race_contexts.resize(slot + 1);
  RaceContext& c = race_contexts[slot];
  if (!c.tsan) c.tsan = __tsan_create_fiber(0);
  f->race_context = c.tsan;
  if (c.launch != race_launches || c.block != block) {  // a new use: say which in its name
    c.launch = race_launches;
    c.block = block;
    IgnoredAccesses quiet;  // snprintf writes the launching thread's stack, which the host's context uses too
    char name[160];         // ThreadSanitizer keeps 63 characters
    std::snprintf(name, sizeof name, "warp %u of block (%u,%u,%u) of %s", f->thread / kWarp, blockIdx.x, blockIdx.y,
                  blockIdx.z, sched.kernel);
    __tsan_set_fiber_name(c.tsan, name);
  }
}

// Switching to fiber f: it sees the host's work before the launch, or its block's work before the
// barrier it is leaving.
void race_enter(Fiber* f) {
  __tsan_switch_to_fiber(f->race_context, kNoSync);
  __tsan_acquire(f->barriers == 0 ? &race->start : &race->barriers[f->barriers - 1]);
}

// Back from fiber f, which has reached a barrier (its work so far goes to the block's threads that
// pass it) or returned (its work goes to the host, at the end of the launch).
void race_leave(Fiber* f) {
  __tsan_release(f->done ? &race->end : &race->barriers[f->barriers - 1]);
  __tsan_switch_to_fiber(race->host, kNoSync);
}

// Streams: each is a context of its own, so its work comes after the host's submissions and its
// own earlier work, and after another stream's only through an event it waits for
// (cudaStreamWaitEvent); the host sees device work only at a synchronising call (cudaMemcpy,
// cudaEventSynchronize, cudaDeviceSynchronize, cudaFree, cudaFreeHost).
uint64_t race_device_done = 0;  // sync address: every stream's work so far

void race_on_stream(Stream* s, std::function<void()> work) {
  if (!s->race_context) {
    s->race_context = __tsan_create_fiber(0);
    __tsan_set_fiber_name(s->race_context, s == &per_thread_stream ? "the per-thread default stream"
                                                                   : "a stream of cudaStreamCreateWithFlags");
  }
  void* host = __tsan_get_current_fiber();
  __tsan_release(&s->race_submitted);
  __tsan_switch_to_fiber(s->race_context, kNoSync);
  __tsan_acquire(&s->race_submitted);
  work();
  work = nullptr;
  __tsan_release(&race_device_done);
  __tsan_switch_to_fiber(host, kNoSync);
}

char* race_new_shared_memory(size_t bytes) {
  IgnoredAccesses quiet;  // a fresh allocation has no history: no thread has touched it yet
  char* p = new char[bytes];
  race->shared.push_back(p);
  return p;
}
#else
struct IgnoredAccesses {
  IgnoredAccesses() {}  // nothing to ignore: no race check
};
void race_on_stream(Stream*, std::function<void()> work) { work(); }
void race_launch_begins() {}
void race_launch_ends() {}
void race_block_begins() {}
void race_round_begins(unsigned) {}
void race_thread_begins(Fiber*) {}
void race_enter(Fiber*) {}
void race_leave(Fiber*) {}
#endif

void run_on_stream(Stream* s, std::function<void()> work) { race_on_stream(s, std::move(work)); }

void host_waits_for_device() {
#if defined(ANYBIT_EMU_RACECHECK)
  __tsan_acquire(&race_device_done);
#endif
}

// ---- a block's shared memory ----------------------------------------------------------------------------
// Laid out once per launch, in the order the declarations are first reached (the same for every
// block), and given to each block afresh, filled with bytes 0xff.
constexpr size_t kSharedLimit = 48 << 10;  // CUDA's limit on a block's static shared memory
constexpr unsigned char kGarbage = 0xff;

struct SharedMemory {
  std::vector<std::pair<const void*, size_t>> sites;  // declaration -> offset
  size_t used = 0;                                      // bytes laid out so far
  char* block = nullptr;                                // the running block's, or null until it asks
  std::vector<char> reused;                             // kSharedLimit bytes for every block (no race check)
};
thread_local SharedMemory shared_now;

void shared_launch_begins() {
  shared_now.sites.clear();
  shared_now.used = 0;
}

void shared_block_begins() { shared_now.block = nullptr; }

// The running block's shared memory, made on its first use: fresh memory in the race check (so
// that its accesses are not mistaken for the previous block's), the same bytes otherwise.
char* block_shared_memory() {
  SharedMemory& m = shared_now;
  if (!m.block) {
#if defined(ANYBIT_EMU_RACECHECK)
    m.block = race_new_shared_memory(kSharedLimit);
#else
    if (m.reused.empty()) m.reused.resize(kSharedLimit);
    m.block = m.reused.data();
#endif
    IgnoredAccesses quiet;
    std::memset(m.block, kGarbage, m.used);
  }
  return m.block;
}

void set_thread_index(unsigned linear) {
  threadIdx.x = linear % blockDim.x;
  threadIdx.y = linear / blockDim.x % blockDim.y;
  threadIdx.z = linear / (blockDim.x * blockDim.y);
}

[[noreturn]] void fiber_main() {
  Fiber* f = sched.current;
  (*sched.thread_body)();
  f->done = true;
  anybit_emu_switch(&f->sp, sched.sp);
  __builtin_unreachable();  // a finished fiber is never resumed, only started again
}

// Which pool of stacks the running block's thread `thread` takes its stack from. A finished
// thread's stack goes to a later thread of its pool, whose kernel arguments are copied onto it (a
// large one, such as the optimizers' tables, with memcpy). One pool for all threads, but in the
// race check: there each warp context has its own, since a stack that passed from one warp to
// another would look like two warps writing one address.
unsigned stack_pool(unsigned thread) {
#if defined(ANYBIT_EMU_RACECHECK)
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  return (block % kBlockSlots) * kWarpsPerBlock + thread / kWarp;  // race_thread_begins' context slot
#else
  (void)thread;
  return 0;
#endif
}

Fiber* new_fiber(unsigned thread) {
  const unsigned pool = stack_pool(thread);
  if (sched.idle.size() <= pool) sched.idle.resize(pool + 1);
  if (!sched.idle[pool].empty()) {
    Fiber* f = sched.idle[pool].back();
    sched.idle[pool].pop_back();
    return f;
  }
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  void* p = mmap(nullptr, kFiberStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  AB_CHECK(p != MAP_FAILED, "CUDA emulator: cannot allocate a fiber stack: ", std::strerror(errno));
  AB_CHECK(mprotect(p, page, PROT_NONE) == 0, "CUDA emulator: mprotect failed: ", std::strerror(errno));
  auto* f = new Fiber();  // kept for reuse for the life of the thread
  f->stack = static_cast<char*>(p) + page;
  f->pool = pool;
  return f;
}

// Runs (or resumes) f until its thread returns or reaches a barrier.
void run_fiber(Fiber* f) {
  set_thread_index(f->thread);
  sched.current = f;
  race_enter(f);
  anybit_emu_switch(&sched.sp, f->sp);
  race_leave(f);
  sched.current = nullptr;
}

void start_fiber(Fiber* f, unsigned thread) {
  f->thread = thread;
  f->barriers = 0;
  f->done = false;
  set_thread_index(thread);
  race_thread_begins(f);
  // The first switch pops six registers, then returns into fiber_main with the stack as a call
  // leaves it (16-byte aligned plus the 8 bytes of a return address, which is never used).
  void** sp = reinterpret_cast<void**>(f->stack + kFiberStack);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&fiber_main);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;
  f->sp = sp;
  run_fiber(f);
}

// A barrier is complete when every thread of the block has reached one or returned: as on GPUs
// since Volta, any __syncthreads() call counts (the compiler may copy one call to several places,
// so the place is not compared).
void run_block(const std::function<void()>& body) {
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  sched.thread_body = &body;
  shared_block_begins();
  race_block_begins();
  race_round_begins(0);
  std::vector<Fiber*> waiting, next;
  for (unsigned t = 0; t < n; ++t) {
    Fiber* f = new_fiber(t);
    start_fiber(f, t);
    (f->done ? sched.idle[f->pool] : waiting).push_back(f);
  }
  for (unsigned round = 1; !waiting.empty(); ++round) {
    race_round_begins(round);
    next.clear();
    for (Fiber* f : waiting) {
      run_fiber(f);
      (f->done ? sched.idle[f->pool] : next).push_back(f);
    }
    waiting.swap(next);
  }
}

}  // namespace

void launch_grid(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                 std::function<void()> thread) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block.z > 64 ||
      grid.y > 65535 || grid.z > 65535) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (shared_bytes > 0) {
    fail(cudaErrorInvalidValue);
    return;
  }
  submit(stream, [name, grid, block, body = std::move(thread)] {
    AB_CHECK(sched.current == nullptr, "CUDA emulator: kernel ", name, " launched from inside a kernel");
    device_did("kernel", name, double(grid.x) * grid.y * grid.z * block.x * block.y * block.z);
    gridDim = grid;
    blockDim = block;
    sched.kernel = name;
    shared_launch_begins();
    race_launch_begins();
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx.x = x;
          blockIdx.y = y;
          blockIdx.z = z;
          run_block(body);
        }
    race_launch_ends();
  }, "kernel launch");
}

// Called by a kernel's thread, on its fiber's stack, which an exception cannot leave: a kernel that
// asks for too much shared memory stops the program (nvcc would refuse to compile it).
void* shared_memory(const void* site, size_t bytes, size_t align) {
  SharedMemory& m = shared_now;
  for (const auto& [where, offset] : m.sites)
    if (where == site) return block_shared_memory() + offset;
  const size_t offset = (m.used + align - 1) / align * align;
  if (offset + bytes > kSharedLimit) {
    std::fprintf(stderr, "CUDA emulator: kernel %s declares %zu bytes of shared memory, more than CUDA's limit of %zu\n",
                 sched.kernel, offset + bytes, kSharedLimit);
    std::abort();
  }
  char* memory = block_shared_memory();  // filled up to the old m.used
  IgnoredAccesses quiet;
  m.sites.emplace_back(site, offset);
  m.used = offset + bytes;
  std::memset(memory + offset, kGarbage, bytes);
  return memory + offset;
}

void* device_access(const void* p, const char* kernel) {
  AB_CHECK(on_device(p) || pinned(p, 1), "CUDA emulator: kernel ", kernel, " was handed the host pointer ", p,
           ", which is neither device memory nor pinned memory (on a GPU the kernel would fault)");
  return const_cast<void*>(static_cast<const void*>(opened(p)));
}

}  // namespace anybit::cuda_emu

using namespace anybit::cuda_emu;

void __syncthreads() {
  Fiber* f = sched.current;
  AB_CHECK(f != nullptr, "CUDA emulator: __syncthreads() called outside a kernel");
  ++f->barriers;
  anybit_emu_switch(&f->sp, sched.sp);
}

// ---- the runtime API --------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  static const bool said = [] {
    std::fprintf(stderr,
                 "anybit CUDA emulator: the CUDA kernels run on the CPU (tensor/cuda/emu/emulator.cpp); "
                 "this checks their logic, not a GPU\n");
    return true;
  }();
  (void)said;
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetLastError() {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
  }
  return "unknown error";
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  Device& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  const size_t need = (std::max<size_t>(size, 1) + kAlign - 1) / kAlign * kAlign;
  char* p = nullptr;
  size_t got = need;
  auto it = d.free_by_size.lower_bound(need);
  if (it != d.free_by_size.end()) {
    got = it->first;
    p = it->second;
    d.free_by_size.erase(it);
  } else {
    if (need > kReserved - d.top) return fail(cudaErrorMemoryAllocation);
    p = d.base + d.top;
    d.top += need;
  }
  d.live[p] = Block{got, size};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  if (refused_during_capture()) return cudaErrorStreamCaptureUnsupported;  // cudaFree synchronises
  Device& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  auto it = d.live.find(static_cast<const char*>(ptr));
  if (it == d.live.end()) return fail(cudaErrorInvalidValue);
  host_waits_for_device();
  d.free_by_size.emplace(it->second.size, static_cast<char*>(ptr));
  d.live.erase(it);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned) {
  void* p = std::malloc(std::max<size_t>(size, 1));
  if (!p) return fail(cudaErrorMemoryAllocation);
  Device& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  d.pinned[static_cast<const char*>(p)] = size;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  if (!ptr) return cudaSuccess;
  Device& d = device();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  if (d.pinned.erase(static_cast<const char*>(ptr)) == 0) return fail(cudaErrorInvalidValue);
  host_waits_for_device();  // cudaFreeHost synchronises, as cudaFree does
  std::free(ptr);
  return cudaSuccess;
}

namespace {

const char* copy_name(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToHost: return "host to host";
    case cudaMemcpyHostToDevice: return "host to device";
    case cudaMemcpyDeviceToHost: return "device to host";
    case cudaMemcpyDeviceToDevice: return "device to device";
    case cudaMemcpyDefault: return "default";
  }
  return "?";
}

// The copy's kind must match where its pointers lie, and device ranges must lie inside allocations.
bool valid_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  const bool dst_dev = on_device(dst), src_dev = on_device(src);
  switch (kind) {
    case cudaMemcpyHostToHost: if (dst_dev || src_dev) return false; break;
    case cudaMemcpyHostToDevice: if (!dst_dev || src_dev) return false; break;
    case cudaMemcpyDeviceToHost: if (dst_dev || !src_dev) return false; break;
    case cudaMemcpyDeviceToDevice: if (!dst_dev || !src_dev) return false; break;
    case cudaMemcpyDefault: break;
  }
  return (!dst_dev || inside_allocation(dst, n)) && (!src_dev || inside_allocation(src, n));
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (refused_during_capture()) return cudaErrorStreamCaptureUnsupported;
  if (!valid_copy(dst, src, n, kind)) return fail(cudaErrorInvalidValue);
  DeviceWork busy(device().mu);
  count(false, "calls", "cudaMemcpy", 0);
  run_on_stream(&per_thread_stream, [dst = opened(dst), src = opened(src), n, kind] {
    device_did("copy", copy_name(kind), double(n));
    std::memcpy(dst, src, n);
  });
  host_waits_for_device();
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!valid_copy(dst, src, n, kind)) return fail(cudaErrorInvalidValue);
  Stream* s = resolve(stream);
  if (s->capture) {
    // A captured copy from or to host memory must use pinned memory (its bytes are read at replay).
    const bool host_side_ok = (on_device(dst) || pinned(dst, n)) && (on_device(src) || pinned(src, n));
    if (!host_side_ok) {
      s->capture->invalidated = true;
      return fail(cudaErrorStreamCaptureUnsupported);
    }
  }
  submit(stream, [dst = opened(dst), src = opened(src), n, kind] {
    device_did("copy", copy_name(kind), double(n));
    std::memcpy(dst, src, n);
  }, "cudaMemcpyAsync");
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t n, cudaStream_t stream) {
  if (!on_device(ptr) || !inside_allocation(ptr, n)) return fail(cudaErrorInvalidValue);
  submit(stream, [ptr = opened(ptr), value, n] {
    device_did("memset", "cudaMemsetAsync", double(n));
    std::memset(ptr, value, n);
  }, "cudaMemsetAsync");
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  if (refused_during_capture()) return cudaErrorStreamCaptureUnsupported;
  host_waits_for_device();  // every call has completed before it returned
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = new Stream();
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  *event = new Event();
  return cudaSuccess;
}
// Events order work only in the race check (everything else has completed already). During a
// capture they order nothing there.
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  Stream* s = resolve(stream);
  if (s->capture) return cudaSuccess;
  DeviceWork busy(device().mu);
#if defined(ANYBIT_EMU_RACECHECK)
  run_on_stream(s, [event] { __tsan_release(&event->race_recorded); });
#endif
  event->recorded = true;
  event->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
#if defined(ANYBIT_EMU_RACECHECK)
  __tsan_acquire(&event->race_recorded);
#endif
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  Stream* s = resolve(stream);
  if (s->capture) return cudaSuccess;
  DeviceWork busy(device().mu);
#if defined(ANYBIT_EMU_RACECHECK)
  run_on_stream(s, [event] { __tsan_acquire(&event->race_recorded); });
#endif
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  Stream* s = resolve(stream);
  if (s->capture) return fail(cudaErrorInvalidValue);  // already being captured
  s->capture = new Graph();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Stream* s = resolve(stream);
  if (!s->capture) return fail(cudaErrorInvalidValue);
  Graph* g = s->capture;
  s->capture = nullptr;
  if (g->invalidated) {
    delete g;
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *exec = new Graph(*graph);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidValue);
  submit(stream, [exec] {
    for (const auto& work : exec->work) work();  // (each takes the device again: the mutex is recursive)
  }, "cudaGraphLaunch");
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  IgnoredAccesses quiet;  // its recorded kernels' arguments, freed with no ordering after the replays
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  IgnoredAccesses quiet;  // as in cudaGraphDestroy
  delete exec;
  return cudaSuccess;
}

// ---- cuBLAS --------------------------------------------------------------------------------------------

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new Blas();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void* workspace, size_t bytes) {
  return on_device(workspace) && inside_allocation(workspace, bytes) ? CUBLAS_STATUS_SUCCESS
                                                                     : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle || (mode != CUBLAS_DEFAULT_MATH && mode != CUBLAS_TF32_TENSOR_OP_MATH)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->tf32 = mode == CUBLAS_TF32_TENSOR_OP_MATH;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

namespace {

// A column-major matrix of `rows` x `cols` with leading dimension ld lies inside one allocation.
template <typename T>
bool matrix_inside(const T* p, int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return true;
  if (ld < rows) return false;
  return on_device(p) && inside_allocation(p, (size_t(cols - 1) * ld + rows) * sizeof(T));
}

// x rounded to TF32 (8-bit exponent, 10-bit mantissa): to nearest, ties away from zero, as PTX's
// cvt.rna.tf32.f32. Adding half of the last kept bit to the magnitude's bits carries into it.
float round_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;  // inf and NaN stay
  std::memcpy(&x, &bits, 4);
  return x;
}

// The column-major matrix at p (rows x cols, leading dimension ld), every element rounded to TF32.
std::vector<float> tf32_copy(const float* p, int rows, int cols, int ld) {
  std::vector<float> out(rows == 0 || cols == 0 ? 0 : size_t(cols - 1) * ld + rows);
  for (size_t i = 0; i < out.size(); ++i) out[i] = round_tf32(p[i]);
  return out;
}

// `batch` GEMMs, X_i starting stride_x elements after X_(i-1) (a plain cublas<t>gemm is a batch
// of 1), queued as one piece of work, as the GPU runs a batched call as one kernel.
template <typename T, typename Gemm>
cublasStatus_t gemm(cudaStream_t stream, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, T alpha,
                    const T* A, int lda, long long sa, const T* B, int ldb, long long sb, T beta, T* C, int ldc,
                    long long sc, int batch, Gemm blas, bool tf32 = false) {
  const bool a_t = ta == CUBLAS_OP_T, b_t = tb == CUBLAS_OP_T;
  if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < batch; ++i)
    if (!matrix_inside(A + i * sa, a_t ? k : m, a_t ? m : k, lda) ||
        !matrix_inside(B + i * sb, b_t ? n : k, b_t ? k : n, ldb) || !matrix_inside(C + i * sc, m, n, ldc))
      return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  submit(stream, [=, A = opened(A), B = opened(B), C = opened(C)] {
    if (profile()) {
      const std::string shape = (batch > 1 ? std::to_string(batch) + " x " : std::string()) + std::to_string(m) + "x" +
                                std::to_string(n) + "x" + std::to_string(k);
      device_did("gemm", ((sizeof(T) == 4 ? (tf32 ? "cublasSgemm TF32 " : "cublasSgemm ") : "cublasDgemm ") + shape).c_str(),
                 2.0 * batch * m * n * k);
    }
    for (int i = 0; i < batch; ++i) {
      const T *a = A + i * sa, *b = B + i * sb;
      std::vector<T> a_tf32, b_tf32;  // read when the GEMM runs, as a GPU would (so graph replays too)
      if constexpr (std::is_same_v<T, float>) {
        if (tf32) {
          a_tf32 = tf32_copy(a, a_t ? k : m, a_t ? m : k, lda);
          b_tf32 = tf32_copy(b, b_t ? n : k, b_t ? k : n, ldb);
          a = a_tf32.data();
          b = b_tf32.data();
        }
      }
      blas(CblasColMajor, a_t ? CblasTrans : CblasNoTrans, b_t ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
           std::max(lda, 1), b, std::max(ldb, 1), beta, C + i * sc, std::max(ldc, 1));
    }
  }, "cuBLAS gemm");
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  return gemm<float>(cudaStreamPerThread, ta, tb, m, n, k, *alpha, A, lda, 0, B, ldb, 0, *beta, C, ldc, 0, 1,
                     cblas_sgemm, handle && handle->tf32);
}
cublasStatus_t cublasDgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* A, int lda, const double* B, int ldb,
                           const double* beta, double* C, int ldc) {
  return gemm<double>(cudaStreamPerThread, ta, tb, m, n, k, *alpha, A, lda, 0, B, ldb, 0, *beta, C, ldc, 0, 1,
                      cblas_dgemm);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                                         int n, int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
  return gemm<float>(cudaStreamPerThread, ta, tb, m, n, k, *alpha, A, lda, sa, B, ldb, sb, *beta, C, ldc, sc, batch,
                     cblas_sgemm, handle && handle->tf32);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* A, int lda, long long sa,
                                         const double* B, int ldb, long long sb, const double* beta, double* C,
                                         int ldc, long long sc, int batch) {
  return gemm<double>(cudaStreamPerThread, ta, tb, m, n, k, *alpha, A, lda, sa, B, ldb, sb, *beta, C, ldc, sc, batch,
                      cblas_dgemm);
}
