// test_distributed.cpp - data-parallel training (nn/distributed.h).
//
// In one process: synchronised batch norm split across two threads that stand in for two
// processes equals batch norm on the whole batch; the loader's shards put a batch back together;
// the gradient sum and the BN averaging of a group of one change nothing.
// With MPI (built with it, and `mpirun` on PATH; otherwise each case says "skipped"): the anybit
// program run as 2 processes against 1 process with the same global batch, for a few steps of the
// joint trainer on ResNet-20; resuming with another number of processes; a signal to one process
// stops them all after the same step, with a checkpoint; a rank that cannot read its data stops
// the whole job with one message naming it.
#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include "data/loader.h"
#include "nn/checkpoint.h"
#include "nn/distributed.h"
#include "nn/json.h"
#include "nn/layers.h"
#include "tensor/cuda/cuda.h"
#include "tests/cuda_skip.h"
#include "tests/helpers.h"
#include "tests/run_helpers.h"

using namespace anybit;
using anybit::test::randn;
using anybit::test::require_close;
using anybit::test::run_command;

namespace {

// Two threads as the two processes of a group: each thread says which rank it is, and sum()
// waits for both, then gives each the same total (rank 0's part plus rank 1's, in that order).
class TwoThreads : public dist::ProcessGroup {
 public:
  static thread_local int my_rank;
  int rank() const override { return my_rank; }
  int size() const override { return 2; }
  void sum(double* d, int64_t n) override { exchange(d, n); }
  void sum(float* d, int64_t n) override { exchange(d, n); }
  void sum(int64_t* d, int64_t n) override { exchange(d, n); }
  void broadcast(void*, int64_t, int) override { FAIL("not used"); }
  std::string describe() const override { return "two threads"; }

 private:
  template <typename T>
  void exchange(T* d, int64_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t round = round_;
    parts_[my_rank].assign(reinterpret_cast<const char*>(d), reinterpret_cast<const char*>(d + n));
    if (++arrived_ == 2) {
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return round_ != round; });
    }
    const T* a = reinterpret_cast<const T*>(parts_[0].data());
    const T* b = reinterpret_cast<const T*>(parts_[1].data());
    for (int64_t i = 0; i < n; ++i) d[i] = a[i] + b[i];
    // Both threads must read the parts before either overwrites them in the next call.
    if (++read_ == 2) {
      read_ = 0;
      ++read_round_;
      cv_.notify_all();
    } else {
      const int64_t r = read_round_;
      cv_.wait(lock, [&] { return read_round_ != r; });
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::string parts_[2];
  int arrived_ = 0, read_ = 0;
  int64_t round_ = 0, read_round_ = 0;
};
thread_local int TwoThreads::my_rank = 0;

// Installs a group as dist::world() for one test, and the single process again afterwards.
struct WorldGuard {
  explicit WorldGuard(std::shared_ptr<dist::ProcessGroup> g) { dist::set_world(std::move(g)); }
  ~WorldGuard() { dist::set_world(nullptr); }
};

}  // namespace

TEST_CASE("batch_norm_sync split across two processes equals batch_norm on the whole batch", "[dist][norm]") {
  // x (8, 3, 4, 5) float32, the first 3 samples on rank 0 and the other 5 on rank 1 (parts of
  // different sizes: the statistics weigh values, not processes).
  const int64_t N = 8, C = 3, split = 3;
  Tensor x = randn({N, C, 4, 5}, 1, DType::F32);
  Tensor w = add(randn({C}, 2, DType::F32), 1.5).detach(), b = randn({C}, 3, DType::F32);
  Tensor dy = randn({N, C, 4, 5}, 4, DType::F32);

  // the whole batch in one process
  Tensor xw = x.clone().requires_grad_(), ww = w.clone().requires_grad_(), bw = b.clone().requires_grad_();
  Tensor rm = Tensor::zeros({C}), rv = Tensor::ones({C});
  Tensor y = batch_norm(xw, ww, bw, rm, rv, true, 0.1, 1e-5);
  sum(mul(y, dy)).backward();

  // two "processes", each with its part and its own copy of the parameters and running statistics
  auto group = std::make_shared<TwoThreads>();
  WorldGuard guard(group);
  struct Part {
    Tensor x, w, b, rm, rv, y;
  } parts[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      TwoThreads::my_rank = r;
      Part& p = parts[r];
      const int64_t lo = r == 0 ? 0 : split, hi = r == 0 ? split : N;
      p.x = x.slice(0, lo, hi).contiguous().requires_grad_();
      p.w = w.clone().requires_grad_();
      p.b = b.clone().requires_grad_();
      p.rm = Tensor::zeros({C});
      p.rv = Tensor::ones({C});
      p.y = batch_norm_sync(p.x, p.w, p.b, p.rm, p.rv, 0.1, 1e-5);
      sum(mul(p.y, dy.slice(0, lo, hi).contiguous())).backward();
    });
  for (auto& t : threads) t.join();

  // y and dx: each part is its rows of the whole batch's; the running statistics are the whole
  // batch's on both; dw and db are shares that add up to the whole batch's.
  for (int r = 0; r < 2; ++r) {
    const int64_t lo = r == 0 ? 0 : split, hi = r == 0 ? split : N;
    require_close(parts[r].y, y.slice(0, lo, hi), 1e-6, 1e-6, "y of part " + std::to_string(r));
    require_close(parts[r].x.grad(), xw.grad().slice(0, lo, hi), 1e-5, 1e-6, "dx of part " + std::to_string(r));
    require_close(parts[r].rm, rm, 1e-6, 1e-7, "running mean");
    require_close(parts[r].rv, rv, 1e-6, 1e-7, "running var");
  }
  require_close(add(parts[0].w.grad(), parts[1].w.grad()), ww.grad(), 1e-5, 1e-6, "dw");
  require_close(add(parts[0].b.grad(), parts[1].b.grad()), bw.grad(), 1e-5, 1e-6, "db");
}

TEST_CASE("batch_norm_sync in a single process is batch_norm, and its gradient checks", "[dist][norm]") {
  Tensor x = randn({4, 3, 2, 2}, 5, DType::F32);
  Tensor w = add(randn({3}, 6, DType::F32), 1.5).detach(), b = randn({3}, 7, DType::F32);
  Tensor rm1 = Tensor::zeros({3}), rv1 = Tensor::ones({3}), rm2 = Tensor::zeros({3}), rv2 = Tensor::ones({3});
  Tensor y1 = batch_norm(x, w, b, rm1, rv1, true), y2 = batch_norm_sync(x, w, b, rm2, rv2);
  REQUIRE(y1.to_vector<float>() == y2.to_vector<float>());  // the same kernels: bit for bit
  REQUIRE(rv1.to_vector<float>() == rv2.to_vector<float>());

  Tensor xd = randn({3, 2, 2, 2}, 8).requires_grad_();
  Tensor wd = add(randn({2}, 9), 1.5).detach().requires_grad_(), bd = randn({2}, 10).requires_grad_();
  auto f = [](const std::vector<Tensor>& v) { return batch_norm_sync(v[0], v[1], v[2], Tensor(), Tensor()); };
  REQUIRE(test::gradcheck(f, {xd, wd, bd}) == xd.numel() + 4);
}

TEST_CASE("loader shards: the parts of every batch put it back together, whatever the number of parts", "[dist][data]") {
  // An in-memory dataset of 10 examples: example i is a 1x2x2 image filled with i, label i % 3.
  struct Tiny : data::Dataset {
    std::vector<std::string> names{"a", "b", "c"};
    int64_t size() const override { return 10; }
    const std::vector<std::string>& class_names() const override { return names; }
    data::Example get(int64_t i) const override {
      data::Example e;
      e.image = data::Image(2, 2, 1);
      std::fill(e.image.pixels.begin(), e.image.pixels.end(), (uint8_t)(i * 10));
      e.label = i % 3;
      return e;
    }
    std::string describe() const override { return "tiny"; }
  };
  auto ds = std::make_shared<Tiny>();
  auto batches = [&](int shard, int shards) {
    data::LoaderOptions o;
    o.batch_size = 4;  // batches of 4, 4 and 2
    o.seed = 3;
    o.num_workers = 0;
    o.shard = shard;
    o.shards = shards;
    data::DataLoader loader(ds, data::Pipeline(), o);
    loader.set_epoch(1);
    std::vector<std::vector<int64_t>> out;
    data::Batch b;
    while (loader.next(b)) {
      REQUIRE(b.labels.size(0) == (int64_t)b.indices.size());
      out.push_back(b.indices);
    }
    return out;
  };
  const auto whole = batches(0, 1);
  REQUIRE(whole.size() == 3);
  for (int shards : {2, 3, 4}) {
    std::vector<std::vector<int64_t>> joined(whole.size());
    for (int s = 0; s < shards; ++s) {
      auto part = batches(s, shards);
      REQUIRE(part.size() == whole.size());  // every part has every batch, possibly empty
      for (size_t k = 0; k < part.size(); ++k) joined[k].insert(joined[k].end(), part[k].begin(), part[k].end());
    }
    INFO(shards << " shards");
    REQUIRE(joined == whole);
  }
  REQUIRE_THROWS_WITH(batches(2, 2), Catch::Contains("shard 2 of 2"));
}

TEST_CASE("a group of one: summing gradients and averaging BN statistics change nothing", "[dist]") {
  nn::BatchNorm2d bn(3);
  bn.running_mean_.fill_(0.25);
  Tensor p = randn({5}, 1, DType::F32).requires_grad_();
  sum(mul(p, p)).backward();
  auto before = p.grad().to_vector<float>();
  nn::GradientSync s = nn::sum_gradients({p}, dist::world());
  REQUIRE(s.buckets == 0);
  REQUIRE(p.grad().to_vector<float>() == before);
  nn::average_bn_statistics(bn, dist::world());
  REQUIRE(bn.running_mean_.to_vector<float>() == std::vector<float>(3, 0.25f));
}

TEST_CASE("sum_gradients packs buckets and sums every gradient across two processes", "[dist]") {
  auto group = std::make_shared<TwoThreads>();
  Tensor grads[2][3];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      TwoThreads::my_rank = r;
      // three parameters of 5, 7 and 3 floats; rank r's gradient of parameter k is (r + 1) * (k + 1)
      std::vector<Tensor> params;
      for (int k = 0; k < 3; ++k) {
        Tensor p = Tensor::zeros({k == 0 ? 5 : k == 1 ? 7 : 3}).requires_grad_();
        p.set_grad(Tensor::full(p.shape(), (r + 1) * (k + 1.0)));
        params.push_back(p);
      }
      nn::GradientSync s = nn::sum_gradients(params, *group, /*bucket_bytes=*/8 * 4);  // 8 floats a bucket
      CHECK(s.buckets == 3);  // 5 | 7 | 3: a gradient never shares a bucket that it would overflow
      for (int k = 0; k < 3; ++k) grads[r][k] = params[k].grad();
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k) {
      auto v = grads[r][k].to_vector<float>();
      REQUIRE(v == std::vector<float>(v.size(), 3.0f * (k + 1)));
    }
}

namespace {

// A group of two whose other process holds the same data as this one: sum() doubles it. With
// `device_pointers` it says it is CUDA-aware: sum(float*) then takes GPU memory too, as such an MPI
// library does. It knows which pointers are GPU memory from `on_gpu` (an MPI library asks the CUDA
// driver), reads and writes those through cuda::memcpy (a host pointer there fails the copy's
// check) and counts them. Host data it reads on the host (a GPU pointer there crashes, on a GPU
// and on the emulator).
class MirroredPair : public dist::ProcessGroup {
 public:
  MirroredPair(bool device_pointers, std::vector<const void*> on_gpu)
      : device_pointers_(device_pointers), on_gpu_(std::move(on_gpu)) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void sum(double* d, int64_t n) override { double_up(d, n); }
  void sum(int64_t* d, int64_t n) override { double_up(d, n); }
  void sum(float* d, int64_t n) override {
    if (std::find(on_gpu_.begin(), on_gpu_.end(), d) == on_gpu_.end()) return double_up(d, n);
    REQUIRE(device_pointers_);
    std::vector<float> host(n);
    cuda::memcpy_d2h(host.data(), d, n * sizeof(float));
    double_up(host.data(), n);
    cuda::memcpy_h2d(d, host.data(), n * sizeof(float));
    ++device_sums;
  }
  void broadcast(void*, int64_t, int) override { FAIL("not used"); }
  bool accepts_device_pointers() const override { return device_pointers_; }
  std::string describe() const override { return "a mirrored pair"; }
  int device_sums = 0;  // sum(float*) calls on GPU memory

 private:
  template <typename T>
  void double_up(T* d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) d[i] += d[i];
  }
  bool device_pointers_;
  std::vector<const void*> on_gpu_;
};

}  // namespace

TEST_CASE("sum_gradients on the GPU: staged through host memory, or in place for a CUDA-aware MPI", "[dist][cuda]") {
  SKIP_WITHOUT_GPU();
  const Device gpu(Device::CUDA);
  for (bool aware : {false, true}) {
    INFO((aware ? "CUDA-aware" : "staged through the host"));
    // Parameters of 5, 6 (its gradient a transposed 2x3 view: not contiguous) and 3 floats on the
    // GPU; parameter k's gradient is k + 1 everywhere, and its sum over the pair 2 (k + 1).
    std::vector<Tensor> params;
    for (int k = 0; k < 3; ++k) {
      Tensor p = Tensor::zeros(k == 1 ? std::vector<int64_t>{2, 3} : std::vector<int64_t>{k == 0 ? 5 : 3})
                     .to(gpu)
                     .requires_grad_();
      Tensor g = Tensor::full(k == 1 ? std::vector<int64_t>{3, 2} : p.shape(), k + 1.0).to(gpu);
      p.set_grad(k == 1 ? g.transpose(0, 1) : g);
      params.push_back(p);
    }
    REQUIRE(!params[1].grad().is_contiguous());
    std::vector<const void*> on_gpu;
    for (auto& p : params) on_gpu.push_back(p.grad().raw_data());
    MirroredPair pair(aware, on_gpu);
    nn::GradientSync s = nn::sum_gradients(params, pair, /*bucket_bytes=*/8 * 4);  // 8 floats a bucket
    // CUDA-aware: the contiguous gradients in place, one call each, and the strided one through a
    // bucket; staged: the three through buckets of at most 8 floats, 5 | 6 | 3.
    CHECK(pair.device_sums == (aware ? 2 : 0));
    CHECK(s.buckets == 3);
    CHECK(s.bytes == 14 * 4);
    for (int k = 0; k < 3; ++k) {
      INFO("parameter " << k);
      REQUIRE(params[k].grad().device() == gpu);
      auto v = params[k].grad().to(Device()).to_vector<float>();
      REQUIRE(v == std::vector<float>(v.size(), 2.0f * (k + 1)));
    }
  }
}

// ---- the program under mpirun ----------------------------------------------------------------------

namespace {

using namespace anybit::test;

const std::string kAnybit = anybit_program();

// Every tensor of two model files within rtol (require_same_tensors), ResNet-20's weights, three BN
// sets and the clip values.
void require_same_models(const std::string& a, const std::string& b, double rtol) {
  REQUIRE(require_same_tensors(a, b, rtol) > 200000);
}

}  // namespace

TEST_CASE("mpirun -np 2 trains the joint trainer as one process does with the same global batch", "[dist][mpi][app]") {
  if (!mpi_runs_here()) return;
  test::ScratchDir tmp("anybit_mpi");
  write_image_folder(tmp / "data", 16, 4);
  // ResNet-20 at {8,4,2} with the method (collaborative teachers, block swapping), a global batch of
  // 16, synchronised BN: the two processes together see what one process sees. Three steps, one
  // per epoch, at a constant learning rate and swap probability, so that a run stopped after epoch
  // e and resumed is the run that went on.
  const std::string args = " train --model resnet20 --bits 8,4,2 --data " + (tmp / "data") +
                           " --max-steps 1 --batch-size 16 --lr 0.001 --schedule multistep --swap-const 0.5 "
                           "--seed 5 --workers 1 --log-every 100000 --sync-bn 1";
  auto step_args = [&](int epoch) {
    return args + " --epochs " + std::to_string(epoch) + (epoch > 1 ? " --resume 1" : "");
  };

  // Each step starts both runs from the same checkpoint: one process's after the step before. The
  // two runs of a step differ at all only because the two processes sum the gradients of their
  // halves of the batch (the MPI sum of two partial sums) where one process sums the whole batch
  // inside each kernel, and add the BN partial sums in another order: within 1e-5. (A run of 3
  // steps left to itself is not held to 1e-5: once the weights differ by such roundings, a weight
  // that sits on a rounding boundary of its quantizer takes the next code in one run only, and the
  // runs move apart by quantization steps; docs/RESULTS.md, "What makes them differ at all".)
  std::string out;
  for (int epoch = 1; epoch <= 3; ++epoch) {
    INFO("step " << epoch);
    const std::string one = tmp / "one", two = tmp / ("two" + std::to_string(epoch));
    if (epoch > 1) REQUIRE(run_command("cp -r " + one + " " + two, nullptr) == 0);
    REQUIRE(run_command(kAnybit + step_args(epoch) + " --threads 2 --out " + one, &out) == 0);
    INFO(out);
    REQUIRE(run_command(mpirun(2) + kAnybit + step_args(epoch) + " --threads 1 --out " + two, &out) == 0);
    INFO(out);
    REQUIRE_THAT(out, Catch::Contains("data-parallel over 2 processes"));

    // The losses of every bit-width, the same block swaps and teacher votes, and every tensor:
    // weights, clip values and the running statistics of every BN set.
    nn::Json m1 = last_metrics(one), m2 = last_metrics(two);
    REQUIRE((int64_t)m1.find("epoch")->as_double() == epoch);
    REQUIRE((int64_t)m2.find("epoch")->as_double() == epoch);
    REQUIRE(m1.find("train")->members().size() == 3);
    for (auto& [bits, t1] : m1.find("train")->members()) {
      const nn::Json& t2 = *m2.find("train")->find(bits);
      const double l1 = t1.find("loss")->as_double(), l2 = t2.find("loss")->as_double();
      INFO(bits << ": " << l1 << " vs " << l2);
      REQUIRE(std::abs(l1 - l2) <= 1e-5 * std::abs(l1));
      REQUIRE(t1.find("swapped_blocks")->as_double() == t2.find("swapped_blocks")->as_double());
      REQUIRE(t1.find("teachers")->dump() == t2.find("teachers")->dump());
    }
    require_same_models(one + "/model.safetensors", two + "/model.safetensors", 1e-5);
  }

  // Each process's own BN statistics (the default): a different model, but the same on every rank
  // (the program checks the weights' hashes at every checkpoint) and rank 0 alone writes.
  REQUIRE(run_command(mpirun(2) + kAnybit + args + " --sync-bn 0 --threads 1 --out " + (tmp / "per_rank"), &out) == 0);
  REQUIRE_THAT(out, !Catch::Contains("synchronised batch norm"));
  REQUIRE(train_losses(tmp / "per_rank").size() == 3);
}

TEST_CASE("a run resumes under another number of processes", "[dist][mpi][app]") {
  if (!mpi_runs_here()) return;
  test::ScratchDir tmp("anybit_mpi_resume");
  write_image_folder(tmp / "data", 8, 2);
  // A constant learning rate (multistep without milestones) and swap probability, so that a run of
  // 1 epoch resumed to 2 epochs follows the run of 2 epochs. One step an epoch: epoch 1 of 1 and of
  // 2 processes then starts from the same weights, so no quantized code can part them before the
  // comparison below (see the test above).
  const std::string args = " train --model resnet20 --bits 8,4 --data " + (tmp / "data") +
                           " --max-steps 1 --batch-size 8 --lr 0.001 --schedule multistep --swap-const 0.5 --seed 5 "
                           "--workers 1 --log-every 100000 --eval-batches 1 --sync-bn 1 --threads 1";
  std::string out;
  REQUIRE(run_command(kAnybit + args + " --epochs 1 --out " + (tmp / "one_epoch"), &out) == 0);
  REQUIRE(run_command(kAnybit + args + " --epochs 2 --out " + (tmp / "straight"), &out) == 0);
  REQUIRE(run_command(mpirun(2) + kAnybit + args + " --epochs 1 --out " + (tmp / "resumed"), &out) == 0);
  INFO(out);
  // What 2 processes write after epoch 1 is what 1 process writes: the weights, and the optimizer's
  // state (momentum of every parameter, clip values' included: their gradients are sums over whole
  // activations, whose order of summation differs most, hence 1e-4).
  require_same_models(tmp / "one_epoch/model.safetensors", tmp / "resumed/model.safetensors", 1e-5);
  require_same_models(tmp / "one_epoch/state.safetensors", tmp / "resumed/state.safetensors", 1e-4);
  REQUIRE(run_command(kAnybit + args + " --epochs 2 --resume 1 --out " + (tmp / "resumed"), &out) == 0);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("resumed from") && Catch::Contains("at epoch 1"));
  // Epoch 2 resumed under 1 process follows epoch 2 of the straight run: the same block swaps (the
  // random generator's state came through the checkpoint) and the same losses. Not to 1e-5: the
  // two runs enter epoch 2 with weights 1e-6 apart, and where such a difference moves a 4-bit
  // activation across a rounding boundary the code changes by a whole step, which moves the
  // gradients by far more than 1e-6 (the weights of the two runs end about 1e-3 apart).
  auto swaps = [](const std::string& run) {
    return last_metrics(run).find("train")->find("W4A4")->find("swapped_blocks")->as_double();
  };
  REQUIRE(swaps(tmp / "resumed") == swaps(tmp / "straight"));
  auto straight = train_losses(tmp / "straight"), resumed = train_losses(tmp / "resumed");
  REQUIRE(straight.size() == 2);
  for (auto& [bits, loss] : straight) {
    INFO(bits << ": " << loss << " vs " << resumed.at(bits));
    REQUIRE(std::abs(loss - resumed.at(bits)) <= 1e-2 * std::abs(loss));
  }
}

TEST_CASE("a signal to one process stops every process after the same step, with a checkpoint to resume from",
          "[dist][mpi][app]") {
  if (!mpi_runs_here()) return;
  test::ScratchDir tmp("anybit_mpi_stop");
  write_image_folder(tmp / "data", 16, 2);
  // 8 steps an epoch and a checkpoint every 2 steps. The signalled run is given 100 epochs, so that
  // however fast the machine it is still training when the signal comes; it is resumed with 3, and
  // compared with a straight run of 3. A constant learning rate (multistep without milestones) and
  // swap probability make the first 3 epochs the same whatever the number of epochs.
  // SIGTERM goes to rank 1 alone once the first checkpoint exists (so both processes are
  // training). Rank 0, which writes the files, was never signalled: that it stops too, and writes
  // the checkpoint, shows the two agreed.
  const std::string args = " train --model resnet20 --bits 8,4 --data " + (tmp / "data") +
                           " --batch-size 8 --lr 0.01 --schedule multistep --swap-const 0.5 --seed 5 --workers 1 "
                           "--threads 1 --save-every 2 --log-every 100000 --eval-batches 1 --eval-every 0 --sync-bn 1";
  const std::string run = tmp / "run", straight = tmp / "straight";
  std::string out;
  const std::string script =
      "(" + mpirun(2) + kAnybit + args + " --epochs 100 --out " + run + " > " + (tmp / "log") + " 2>&1; echo $? > " +
      (tmp / "rc") + ") & "
      "for i in $(seq 6000); do [ -f " + run + "/state.safetensors ] && break; sleep 0.02; done; "
      "for p in $(pgrep -f 'out " + run + "'); do "
      "  tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && kill -TERM $p && echo signalled $p; "
      "done; wait";
  REQUIRE(run_command(script, &out) == 0);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("signalled"));
  const std::string log = read_text(tmp / "log");
  INFO(log);
  REQUIRE(read_text(tmp / "rc") != "0\n");    // mpirun reports the processes' non-zero exit
  REQUIRE(read_text(tmp / "rc") != "124\n");  // and `timeout` did not have to stop a hang
  REQUIRE_THAT(log, Catch::Contains("anybit: stopped "));  // in an epoch, or after one
  REQUIRE(!std::filesystem::exists(run + "/report.json"));

  // Resumed under mpirun, it ends where a run that never stopped ends.
  REQUIRE(run_command(mpirun(2) + kAnybit + args + " --epochs 3 --out " + run + " --resume 1", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("resumed from"));
  REQUIRE(run_command(mpirun(2) + kAnybit + args + " --epochs 3 --out " + straight, &out) == 0);
  require_same_models(run + "/model.safetensors", straight + "/model.safetensors", 0);
}

TEST_CASE("a rank that cannot read its data stops the whole job with one message naming it", "[dist][mpi][app]") {
  if (!mpi_runs_here()) return;
  test::ScratchDir tmp("anybit_mpi_fault");
  write_image_folder(tmp / "data", 4, 1);
  // 4 classes x 4 images and no shuffling of the failure: every image of class 3 is broken, so
  // whichever rank draws one first fails; the other must not wait for it forever.
  for (int i = 0; i < 4; ++i) std::ofstream(tmp / ("data/train/class3/" + std::to_string(i) + ".png")) << "not a png";
  std::string out;
  int status = run_command(mpirun(2) + kAnybit + " train --model resnet20 --data " + (tmp / "data") +
                               " --epochs 1 --batch-size 8 --workers 1 --threads 1 --out " + (tmp / "run"),
                           &out);
  INFO(out);
  REQUIRE(status != 0);
  REQUIRE(status != 124);  // `timeout` did not have to stop a hang
  REQUIRE_THAT(out, Catch::Matches("[\\s\\S]*anybit: error \\(rank [01] of 2\\): [\\s\\S]*class3/[0-3]\\.png[\\s\\S]*"));
}
