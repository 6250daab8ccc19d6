// cuda_runtime.h (the emulator's) - the part of the CUDA runtime that anybit's kernels and
// runtime.cu use, for compiling tensor/cuda/*.cu with g++ and running them on the CPU
// (tensor/cuda/emu/emulator.cpp says how, and what the emulator checks and what it cannot).
//
// Only the checking programs anybit_tests_emu and anybit_emu are built from this header, never
// the library that users run: that one has the real CUDA backend (nvcc) or the stub (no nvcc).
// The build copies each .cu file, rewrites its launches `kernel<<<grid, block>>>(args)` into
// `::anybit::cuda_emu::launch(kernel, "kernel", grid, block)(args)` (rewrite_launches.cmake), and
// puts this folder before any other on the include path.
// Read next: tensor/cuda/emu/emulator.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- the language: qualifiers, the built-in indices, the barrier ----------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// `__shared__ T name[n];` is rewritten at build time (rewrite_launches.cmake) into a reference
// into the running block's shared memory: `T (&name)[n] = anybit::cuda_emu::shared<T[n]>([] {});`
// (below), so __shared__ itself is left undefined.

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Set by the emulator before it runs (or resumes) each CUDA thread.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

// Every thread of the block waits here until all of the block's threads that have not returned
// have reached a __syncthreads().
void __syncthreads();

// On a GPU the calling thread sleeps for between 0 and about twice the nanoseconds asked for. The
// emulated device does its work when it is queued, so no work piles up behind a sleeping kernel:
// here it returns at once.
inline void __nanosleep(unsigned) {}

// ---- the runtime API --------------------------------------------------------------------------------
// The real values of the enumerators, so that messages read as on a GPU.
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};

namespace anybit::cuda_emu {
struct Stream;
struct Event;
struct Graph;
}  // namespace anybit::cuda_emu

using cudaStream_t = anybit::cuda_emu::Stream*;
using cudaEvent_t = anybit::cuda_emu::Event*;
using cudaGraph_t = anybit::cuda_emu::Graph*;
using cudaGraphExec_t = anybit::cuda_emu::Graph*;

// As in CUDA, a handle that means "the calling thread's default stream". A null stream means the
// same here, as in a .cu file compiled with nvcc --default-stream per-thread (CMakeLists.txt).
#define cudaStreamPerThread ((cudaStream_t)0x2)
constexpr unsigned cudaStreamNonBlocking = 0x01;
constexpr unsigned cudaEventDefault = 0x00;
constexpr unsigned cudaEventDisableTiming = 0x02;
constexpr unsigned cudaHostAllocDefault = 0x00;
constexpr unsigned cudaHostAllocPortable = 0x01;
constexpr unsigned cudaHostAllocMapped = 0x02;  // the emulator's pinned memory is always mapped

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);

cudaError_t cudaMalloc(void** ptr, size_t size);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t size) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), size);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned flags);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream = nullptr);
cudaError_t cudaDeviceSynchronize();

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0);

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

// ---- kernel launches ------------------------------------------------------------------------------
namespace anybit::cuda_emu {

// Device work, queued on a stream: run at once, or recorded when the stream is being captured
// into a graph. `name` names the kernel in messages; `thread` runs one CUDA thread.
// Dynamic shared memory (shared_bytes > 0) is not emulated: no kernel of anybit asks for it, and
// a launch that does fails with cudaErrorInvalidValue.
void launch_grid(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                 std::function<void()> thread);

// A block's shared memory, as on a GPU: every block gets its own, its threads share it, and it
// starts out holding garbage (bytes 0xff: NaN as a float or double, -1 as an integer), so a kernel
// that reads a slot no thread of the block wrote reads a wrong value instead of the previous
// block's. `site` identifies the declaration (its address is the same for every thread and block,
// and different for each declaration); the block gets at most 48 KiB in all, CUDA's limit for
// static shared memory.
void* shared_memory(const void* site, size_t bytes, size_t align);

template <typename Array, typename Declaration>
Array& shared(Declaration) {
  static const char site = 0;  // one per declaration: each has its own lambda type
  return *static_cast<Array*>(shared_memory(&site, sizeof(Array), alignof(Array)));
}

// The emulated device's memory is mapped twice (emulator.cpp): at the addresses that cudaMalloc
// hands out, where the host can neither read nor write it, and at a second, readable place that
// only device work uses. A kernel's pointer arguments are moved to the second place at its launch,
// and so are the pointers inside an argument that lists them with a member
//   template <typename F> void for_each_pointer(F&& f)   (f(pointer) for each, as an lvalue)
// (a table of tensors passed by value, as the optimizers' in tensor/cuda/fused.cu).
// A pointer that is neither device memory nor pinned host memory fails the launch.
void* device_access(const void* p, const char* kernel);

struct AnyPointer {  // a callable that takes any pointer, for lists_pointers
  template <typename P>
  void operator()(P*&) const {}
};
template <typename T, typename = void>
struct lists_pointers : std::false_type {};
template <typename T>
struct lists_pointers<T, std::void_t<decltype(std::declval<T&>().for_each_pointer(AnyPointer()))>> : std::true_type {};

template <typename T>
T for_kernel(T arg, const char* kernel) {
  if constexpr (std::is_pointer_v<T>) {
    return arg ? static_cast<T>(device_access(arg, kernel)) : arg;
  } else if constexpr (lists_pointers<T>::value) {
    arg.for_each_pointer([kernel](auto*& p) {
      using Pointer = std::remove_reference_t<decltype(p)>;
      if (p) p = static_cast<Pointer>(device_access(p, kernel));
    });
    return arg;
  } else {
    return arg;
  }
}

template <typename Param, typename Arg>
Param converted(Arg&& arg) {
  return std::forward<Arg>(arg);  // the implicit conversion of a call
}

// kernel<<<grid, block, shared, stream>>>(args...) is rewritten as
// launch(kernel, "kernel", grid, block, shared, stream)(args...). The arguments are converted to the
// kernel's parameter types and copied once, at the launch, as CUDA does.
template <typename... Params>
struct Launch {
  void (*kernel)(Params...);
  const char* name;
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;

  template <typename... Args>
  void operator()(Args&&... args) const {
    auto params = std::make_shared<std::tuple<Params...>>(
        for_kernel(converted<Params>(std::forward<Args>(args)), name)...);
    auto k = kernel;
    // The launch owns the arguments from here on (the race check frees them with the launch).
    launch_grid(name, grid, block, shared_bytes, stream, [k, params = std::move(params)] { std::apply(k, *params); });
  }
};

template <typename... Params>
Launch<Params...> launch(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block, size_t shared_bytes = 0,
                         cudaStream_t stream = nullptr) {
  return Launch<Params...>{kernel, name, grid, block, shared_bytes, stream};
}

}  // namespace anybit::cuda_emu
