// distributed.h - data-parallel training across processes with MPI (Open MPI from Debian).
//
//   mpirun -np 4 build/anybit train --config configs/cifar10_ours.cfg ...
//
// Each process (a "rank") holds the whole model and reads its own part of every global batch
// (data/loader.h: LoaderOptions::shard). One training step, on every rank:
//   1. forward and backward on the rank's part, the loss scaled by its share n_p / n of the batch
//      (so the sum of the ranks' gradients is the gradient of the global batch's mean loss);
//   2. sum_gradients: the gradients summed across the ranks (MPI_Allreduce, in buckets);
//   3. the same optimizer step everywhere: the weights stay equal without ever being sent.
// The joint trainer runs every bit-width before step 2: one all-reduce per step, whatever the bit
// set. Its random draws (teacher rule, block swaps) come from generators seeded alike on every
// rank; the one data-dependent choice, the collaborative teacher's batch vote, is summed across
// ranks (tensor/process_group.h lists the few such places).
//
// Batch norm normalises each rank's part with its own statistics (PyTorch DDP's default), or with
// those of the whole batch when set_sync_bn() is on (batch_norm_sync). The running statistics are
// averaged across the ranks before every evaluation and checkpoint, so evaluation is the same
// everywhere.
//
// Without MPI compiled in (no libopenmpi-dev at build time), start_processes() refuses a launch by
// mpirun with more than one process, and everything else runs as one process of one.
// Read next: tensor/process_group.h, apps/anybit/train.cpp (where these calls are made).
#pragma once
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/process_group.h"

namespace anybit::nn {

// Starts MPI and installs it as dist::world() when the program was launched by mpirun (Open MPI,
// or a PMI launcher such as srun); otherwise the program is one process of one. Returns world().
dist::ProcessGroup& start_processes(int* argc, char*** argv);
// MPI_Finalize after a clean run (a no-op for a single process).
void stop_processes();
// Stops every process of the job (MPI_Abort) with exit status `code`: a rank that fails must not
// leave the others waiting in a collective call forever. A single process just exits.
[[noreturn]] void abort_processes(int code);
// True when built with MPI support.
bool built_with_mpi();

// This process's rank among the processes of its node (the launcher's OMPI_COMM_WORLD_LOCAL_RANK,
// MPI_LOCALRANKID or SLURM_LOCALID; the world rank when none is set).
int local_rank();
// One process per GPU: makes GPU local_rank() mod (GPUs of this node) this process's device and
// returns its index. Called by `anybit train --device cuda` under mpirun.
int use_gpu_of_this_process();

// What one sum_gradients call did: bytes summed (this rank's gradients), buckets, wall seconds
// (waiting for slower ranks included).
struct GradientSync {
  int64_t bytes = 0;
  int buckets = 0;
  double seconds = 0;
};

// Sums the gradients of `params` (float32; undefined gradients count as zeros and stay undefined
// where every rank has none) across the ranks of `group`, in place, packed into buckets of at most
// bucket_bytes. CUDA gradients are staged through host memory unless the MPI library accepts
// device pointers (group.accepts_device_pointers()).
GradientSync sum_gradients(const std::vector<Tensor>& params, dist::ProcessGroup& group,
                           int64_t bucket_bytes = 16 << 20);

// Replaces the running mean and variance of every BatchNorm2d in m by their mean over the ranks.
void average_bn_statistics(Module& m, dist::ProcessGroup& group);

// Sets BatchNorm2d::sync on every BatchNorm2d in m; returns how many there are.
int set_sync_bn(Module& m, bool on);

// Throws unless every rank holds bitwise the same tensors (a 64-bit hash of each, compared with
// rank 0's), naming the first tensor that differs and `what` they are.
void check_same_everywhere(const NamedTensors& tensors, dist::ProcessGroup& group, const std::string& what);

}  // namespace anybit::nn
