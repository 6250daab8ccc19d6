// distributed.cpp - MPI process groups and the data-parallel helpers (see distributed.h).
#include "nn/distributed.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "nn/layers.h"
#include "tensor/cuda/cuda.h"

#ifdef ANYBIT_WITH_MPI
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>  // Open MPI's MPIX_CUDA_AWARE_SUPPORT and MPIX_Query_cuda_support()
#endif
#endif

namespace anybit::nn {

namespace {

// The processes a launcher started, from the variables it sets in each: Open MPI's mpirun
// (OMPI_COMM_WORLD_SIZE), MPICH's hydra and Slurm's PMI-2 (PMI_SIZE), Slurm's srun (SLURM_NTASKS,
// with PMIX_RANK or PMI_RANK when it starts MPI processes). 1 when none is set: run by hand.
int launched_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* s = std::getenv(v)) return std::max(1, std::atoi(s));
  if (std::getenv("PMIX_RANK") || std::getenv("PMI_RANK"))
    if (const char* s = std::getenv("SLURM_NTASKS")) return std::max(1, std::atoi(s));
  return 1;
}

}  // namespace

#ifdef ANYBIT_WITH_MPI

namespace {

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  AB_FAIL("MPI: ", what, " failed: ", std::string(text, len));
}

// MPI_COMM_WORLD. Collective errors return codes (MPI_ERRORS_RETURN) and become exceptions, which
// the program turns into one message and abort_processes().
class MpiWorld : public dist::ProcessGroup {
 public:
  MpiWorld() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    library_ = std::string(version, len);
    library_ = library_.substr(0, library_.find_first_of(",\n"));
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
    cuda_aware_ = MPIX_Query_cuda_support() == 1;  // compiled in, and enabled at run time
#endif
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void sum(double* d, int64_t n) override { allreduce(d, n, MPI_DOUBLE, sizeof(double)); }
  void sum(float* d, int64_t n) override { allreduce(d, n, MPI_FLOAT, sizeof(float)); }
  void sum(int64_t* d, int64_t n) override { allreduce(d, n, MPI_INT64_T, sizeof(int64_t)); }
  void broadcast(void* d, int64_t bytes, int root) override {
    for (int64_t done = 0; done < bytes; done += INT_MAX) {
      int part = (int)std::min<int64_t>(INT_MAX, bytes - done);
      mpi_check(MPI_Bcast(static_cast<char*>(d) + done, part, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }
  bool accepts_device_pointers() const override { return cuda_aware_; }
  std::string describe() const override {
    return "MPI rank " + std::to_string(rank_) + " of " + std::to_string(size_) + " (" + library_ +
           (cuda_aware_ ? ", CUDA-aware" : "") + ")";
  }

 private:
  // MPI counts are ints: longer arrays go in parts.
  void allreduce(void* d, int64_t n, MPI_Datatype type, size_t elem) {
    for (int64_t done = 0; done < n; done += INT_MAX) {
      int part = (int)std::min<int64_t>(INT_MAX, n - done);
      mpi_check(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(d) + done * elem, part, type, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce");
    }
  }
  int rank_ = 0, size_ = 1;
  bool cuda_aware_ = false;
  std::string library_;
};

bool mpi_started = false;

}  // namespace

bool built_with_mpi() { return true; }

dist::ProcessGroup& start_processes(int* argc, char*** argv) {
  if (launched_size() <= 1) return dist::world();  // run by hand (or mpirun -np 1): no MPI at all
  // Only the main thread calls MPI (the loader's threads never do): MPI_THREAD_FUNNELED.
  int provided = 0;
  mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  mpi_started = true;
  dist::set_world(std::make_shared<MpiWorld>());
  return dist::world();
}

void stop_processes() {
  if (!mpi_started) return;
  dist::set_world(nullptr);
  MPI_Finalize();
  mpi_started = false;
}

void abort_processes(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_started) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

#else  // built without MPI

bool built_with_mpi() { return false; }

dist::ProcessGroup& start_processes(int*, char***) {
  AB_CHECK(launched_size() <= 1, "this anybit was built without MPI, but was started as one of ", launched_size(),
           " processes: each would train alone. Install Open MPI's development files (scripts/install-deps.sh) "
           "and rebuild, or run a single process");
  return dist::world();
}

void stop_processes() {}

void abort_processes(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::exit(code);
}

#endif

int local_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return dist::world().rank();
}

int use_gpu_of_this_process() {
  const int n = cuda::device_count();
  AB_CHECK(n > 0, "--device cuda: no GPU on this node for rank ", dist::world().rank());
  const int index = local_rank() % n;
  cuda::use_device(index);
  return index;
}

// ---- data-parallel helpers -------------------------------------------------------------------------

GradientSync sum_gradients(const std::vector<Tensor>& params, dist::ProcessGroup& group, int64_t bucket_bytes) {
  GradientSync stats;
  if (group.size() == 1) return stats;
  auto t0 = std::chrono::steady_clock::now();
  // Which parameters have a gradient, on how many ranks (the same graph runs everywhere, so this is
  // all or none, but a zero stands in where a rank has none).
  std::vector<int64_t> has(params.size());
  for (size_t i = 0; i < params.size(); ++i) has[i] = params[i].grad().defined();
  group.sum(has.data(), (int64_t)has.size());
  std::vector<Tensor> grads;  // one per parameter with a gradient somewhere, in parameter order
  for (size_t i = 0; i < params.size(); ++i) {
    if (!has[i]) continue;
    Tensor p = params[i];
    AB_CHECK(p.dtype() == DType::F32, "sum_gradients: parameter ", i, " is ", dtype_name(p.dtype()),
             "; data-parallel training sums float32 gradients");
    if (!p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), DType::F32).to(p.device()));
    grads.push_back(p.grad());
  }
  // A CUDA-aware MPI sums device memory in place, one gradient at a time (no packing needed).
  bool device_direct = group.accepts_device_pointers();
  std::vector<float> bucket;
  const int64_t cap = std::max<int64_t>(bucket_bytes / (int64_t)sizeof(float), 1);
  size_t first = 0;  // the first gradient of the bucket being filled
  int64_t filled = 0;
  auto flush = [&](size_t end) {  // sums gradients [first, end), packed in `bucket`
    if (filled == 0) return;
    group.sum(bucket.data(), filled);
    int64_t at = 0;
    for (size_t k = first; k < end; ++k) {
      Tensor& g = grads[k];
      const int64_t n = g.numel();
      if (g.device().is_cpu() && g.is_contiguous()) {
        std::memcpy(g.data<float>(), bucket.data() + at, n * sizeof(float));
      } else {
        Tensor host = Tensor::empty(g.shape(), DType::F32);
        std::memcpy(host.data<float>(), bucket.data() + at, n * sizeof(float));
        g.copy_(host);  // host to device (staged), or into a strided CPU gradient
      }
      at += n;
    }
    stats.bytes += filled * (int64_t)sizeof(float);
    stats.buckets++;
    first = end;
    filled = 0;
  };
  for (size_t k = 0; k < grads.size(); ++k) {
    Tensor& g = grads[k];
    if (device_direct && !g.device().is_cpu() && g.is_contiguous()) {
      flush(k);
      group.sum(g.data<float>(), g.numel());
      stats.bytes += g.numel() * (int64_t)sizeof(float);
      stats.buckets++;
      first = k + 1;
      continue;
    }
    if (filled > 0 && filled + g.numel() > cap) flush(k);
    Tensor host = g.device().is_cpu() ? g.contiguous() : g.to(Device()).contiguous();
    if ((int64_t)bucket.size() < filled + g.numel()) bucket.resize(filled + g.numel());
    std::memcpy(bucket.data() + filled, host.data<float>(), g.numel() * sizeof(float));
    filled += g.numel();
  }
  flush(grads.size());
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

void average_bn_statistics(Module& m, dist::ProcessGroup& group) {
  if (group.size() == 1) return;
  std::vector<BatchNorm2d*> bns;
  for (auto& [name, mod] : m.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(mod.get())) bns.push_back(bn);
  std::vector<double> all;  // every running mean, then every running variance, in double
  for (int which = 0; which < 2; ++which)
    for (auto* bn : bns)
      for (double v : (which ? bn->running_var_ : bn->running_mean_).to_vector<double>()) all.push_back(v);
  group.sum(all.data(), (int64_t)all.size());
  size_t at = 0;
  for (int which = 0; which < 2; ++which)
    for (auto* bn : bns) {
      Tensor& t = which ? bn->running_var_ : bn->running_mean_;
      std::vector<double> mean(all.begin() + at, all.begin() + at + t.numel());
      for (auto& v : mean) v /= group.size();
      t.copy_(Tensor::from_vector(mean, t.shape()).to(t.dtype()).to(t.device()));
      at += t.numel();
    }
}

int set_sync_bn(Module& m, bool on) {
  int n = 0;
  for (auto& [name, mod] : m.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(mod.get())) bn->sync = on, ++n;
  return n;
}

void check_same_everywhere(const NamedTensors& tensors, dist::ProcessGroup& group, const std::string& what) {
  if (group.size() == 1) return;
  std::vector<uint64_t> hashes;
  for (auto& [name, t] : tensors) {
    Tensor c = t.to(Device()).contiguous();
    const unsigned char* p = static_cast<const unsigned char*>(c.raw_data());
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the bytes
    for (size_t i = 0; i < c.numel() * dtype_size(c.dtype()); ++i) h = (h ^ p[i]) * 1099511628211ull;
    hashes.push_back(h);
  }
  std::vector<uint64_t> root = hashes;
  group.broadcast(root.data(), (int64_t)(root.size() * sizeof(uint64_t)), 0);
  for (size_t i = 0; i < hashes.size(); ++i)
    AB_CHECK(hashes[i] == root[i], "rank ", group.rank(), "'s ", what, " ", tensors[i].first,
             " differs from rank 0's: the ranks no longer train the same model (a rank did not take part in "
             "the same steps, or the MPI library summed in different orders on different ranks)");
}

}  // namespace anybit::nn
