// process_group.h - the processes that train one model together, as the layers below the
// application see them: a rank, a size, and in-place sums across the processes.
//
// A single process is a group of size 1 whose sums do nothing; that is what world() returns unless
// the program was started by mpirun (nn/distributed.h installs an MPI group then). The few places
// of the library whose result depends on the data of every process read world():
//   - synchronised batch norm (autograd/norm.cpp, BatchNorm2d::sync): the batch statistics and
//     the two sums of its backward pass,
//   - the collaborative teacher's batch-level vote (quant/joint_trainer.cpp), which decides the
//     block swaps,
//   - LSQ's first-batch step initialisation (quant/lsq.cpp).
// Everything else (the gradients, the running statistics, evaluation) is reduced by the trainer
// through nn/distributed.h.
//
// Every process must make the same calls in the same order with the same lengths (the MPI rule
// for collective operations): a process that skips one leaves the others waiting.
// Read next: nn/distributed.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace anybit::dist {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;  // 0 .. size() - 1
  virtual int size() const = 0;
  // data[i] = the sum over the processes of their data[i], on every process, in place.
  virtual void sum(double* data, int64_t n) = 0;
  virtual void sum(float* data, int64_t n) = 0;
  virtual void sum(int64_t* data, int64_t n) = 0;
  // Replaces data on every process with root's.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  // True when sum(float*) accepts pointers to GPU memory (a CUDA-aware MPI library).
  virtual bool accepts_device_pointers() const { return false; }
  virtual std::string describe() const = 0;  // "single process", "MPI rank 1 of 4 (Open MPI v4.1.4)"
};

// The group of this program; a single process unless set_world() installed another.
ProcessGroup& world();
void set_world(std::shared_ptr<ProcessGroup> group);

// One process alone: rank 0 of 1, sums and broadcasts leave the data as it is.
class SingleProcess : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void sum(double*, int64_t) override {}
  void sum(float*, int64_t) override {}
  void sum(int64_t*, int64_t) override {}
  void broadcast(void*, int64_t, int) override {}
  std::string describe() const override { return "single process"; }
};

}  // namespace anybit::dist
