// test_cuda_app.cpp - the anybit program with `--device cuda`, end to end, on small image folders
// (8x8 pictures, ResNet-20):
//   - a run moves between the GPU and the CPU through its checkpoints (weights, BN statistics,
//     optimizer state and random generators carry no device) and goes on as if it had not moved;
//   - `anybit eval` on the CPU gives the figures the GPU run reported;
//   - a run stopped by Ctrl-C (a checkpoint at that step) and resumed ends as the run that went on;
//   - `--cuda-graph 1` gives the eager run's numbers bit for bit; `--cuda-tf32 1` gives them to TF32's
//     precision, and its checkpoint evaluates on the CPU;
//   - under mpirun, one process per GPU, data-parallel training equals one GPU process with the
//     same global batch (gradients staged through host memory, or summed in place by a CUDA-aware
//     MPI library).
// Each case is tagged [cuda] and skips, saying so, without a usable GPU (tests/cuda_skip.h). On the
// emulated GPU (anybit_tests_emu) the program run is anybit_emu (tests/run_helpers.h).
// Read next: apps/anybit/train.cpp, nn/distributed.h, tests/test_distributed.cpp.
#include <fstream>
#include <iterator>

#include "tests/cuda_skip.h"
#include "tests/helpers.h"
#include "tests/run_helpers.h"

using namespace anybit;
using namespace anybit::test;

namespace {

// Every training loss two runs logged last agrees: |a - b| <= rtol |a|.
void require_same_losses(const std::string& a, const std::string& b, double rtol) {
  auto la = train_losses(a), lb = train_losses(b);
  REQUIRE(la.size() == lb.size());
  for (auto& [bits, loss] : la) {
    INFO(bits << ": " << loss << " vs " << lb.at(bits));
    REQUIRE(std::abs(loss - lb.at(bits)) <= rtol * std::abs(loss));
  }
}

// The two runs' last epochs drew alike: for every bit-width, the same block swaps out of the same
// number of draws, and the same teachers.
void require_same_draws(const std::string& a, const std::string& b) {
  nn::Json ma = last_metrics(a), mb = last_metrics(b);
  for (auto& [bits, ta] : ma.find("train")->members()) {
    const nn::Json& tb = *mb.find("train")->find(bits);
    INFO(bits);
    REQUIRE(ta.find("swapped_blocks")->as_double() == tb.find("swapped_blocks")->as_double());
    REQUIRE(ta.find("block_draws")->as_double() == tb.find("block_draws")->as_double());
    REQUIRE(ta.find("teachers")->dump() == tb.find("teachers")->dump());
  }
}

// The per-bit-width top-1 of a run's report.json, as "W8A8 43.75 W4A4 37.5" (or "fp32 ...").
std::string report_top1(const std::string& report_json) {
  std::ifstream f(report_json);
  REQUIRE(f);
  nn::Json j = nn::Json::parse(std::string(std::istreambuf_iterator<char>(f), {}));
  std::string s;
  for (auto& r : j.find("results")->items())
    s += r.find("label")->as_string() + " " + std::to_string(r.find("top1")->as_double()) + " ";
  return s;
}

}  // namespace

TEST_CASE("cuda app: a run moves between the GPU and the CPU through its checkpoints and evaluates alike on both",
          "[cuda][app]") {
  SKIP_WITHOUT_GPU();
  const std::string anybit = anybit_program();
  ScratchDir tmp("anybit_cuda_app");
  write_image_folder(tmp / "data", 8, 4, 8);  // 32 training and 16 test images of 8x8
  // Full precision, so that the two devices' float roundings (1e-7 of a value) stay that small;
  // a quantized run turns them into whole quantization steps where a value sits on a rounding
  // boundary (docs/RESULTS.md, "The program on the CUDA emulator"). Two steps an epoch, momentum,
  // a constant learning rate: epoch 2 uses the optimizer state epoch 1 left in the checkpoint.
  const std::string base = " train --model resnet20 --data " + (tmp / "data") +
                           " --batch-size 8 --lr 0.05 --schedule multistep --seed 3 --workers 1 --threads 2 "
                           "--log-every 100000";
  const std::string args = base + " --max-steps 2";
  auto epochs = [](int e) { return " --epochs " + std::to_string(e) + (e > 1 ? " --resume 1" : ""); };
  const std::string a = tmp / "gpu_gpu_gpu", b = tmp / "gpu_cpu_gpu";
  std::string out;

  // An epoch of 4 steps on the GPU, eagerly and as a CUDA graph (2 eager steps, the capture, a
  // replay: nn/captured_step.h): the same numbers, bit for bit.
  const std::string four = base + " --max-steps 4 --epochs 1 --device cuda";
  REQUIRE(run_command(anybit + four + " --out " + (tmp / "eager"), &out) == 0);
  INFO(out);
  REQUIRE(run_command(anybit + four + " --cuda-graph 1 --out " + (tmp / "graph"), &out) == 0);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("step 3 captured as a CUDA graph"));
  require_same_losses(tmp / "eager", tmp / "graph", 0);
  require_same_tensors(tmp / "eager/model.safetensors", tmp / "graph/model.safetensors", 0);

  // --cuda-tf32 1, the GEMMs in TF32 (tensor/cuda/cuda.h): the last loss stays within 5% of the
  // float32 run's (1.9% measured on the emulator: TF32 rounds each input by up to 2^-11, 8000
  // times float32's 2^-24, and 4 steps at this learning rate amplify it), and its checkpoint
  // evaluates on the CPU, which has no TF32 (the run's config says cuda_tf32 = 1; eval takes that
  // setting from its own command line only). tests/test_cuda.cpp checks TF32's precision itself.
  REQUIRE(run_command(anybit + four + " --cuda-tf32 1 --out " + (tmp / "tf32"), &out) == 0);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("GEMMs (convolutions, linear layers) in TF32"));
  require_same_losses(tmp / "eager", tmp / "tf32", 5e-2);
  REQUIRE(run_command(anybit + " eval --run " + (tmp / "tf32") + " --data " + (tmp / "data") +
                          " --workers 1 --device cpu --out " + (tmp / "eval_tf32"),
                      &out) == 0);
  INFO(out);
  REQUIRE(run_command(anybit + base + " --max-steps 4 --epochs 1 --device cpu --cuda-tf32 1 --out " + (tmp / "cpu_tf32"),
                      &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--cuda-tf32 1 needs --device cuda"));

  // Epoch 1 on the GPU.
  REQUIRE(run_command(anybit + args + epochs(1) + " --device cuda --out " + a, &out) == 0);
  INFO(out);

  // Epoch 2 from the GPU's checkpoint, on the CPU and on the GPU; epoch 3 of the CPU's run back on
  // the GPU. After each epoch both runs hold the same model: weights, BN statistics and the
  // optimizer's momentum within 1e-4 of each tensor's largest value (float sums in another order
  // over 2 and 4 steps; a checkpoint left on the wrong device, or its state lost, is off by far more).
  REQUIRE(run_command("cp -r " + a + " " + b, nullptr) == 0);
  for (int e = 2; e <= 3; ++e) {
    INFO("epoch " << e);
    REQUIRE(run_command(anybit + args + epochs(e) + " --device cuda --out " + a, &out) == 0);
    INFO(out);
    REQUIRE(run_command(anybit + args + epochs(e) + (e == 2 ? " --device cpu" : " --device cuda") + " --out " + b,
                        &out) == 0);
    INFO(out);
    REQUIRE_THAT(out, Catch::Contains("resumed from") && Catch::Contains("at epoch " + std::to_string(e - 1)));
    require_same_losses(a, b, 1e-4);
    REQUIRE(require_same_tensors(a + "/model.safetensors", b + "/model.safetensors", 1e-4) > 250000);
    REQUIRE(require_same_tensors(a + "/state.safetensors", b + "/state.safetensors", 1e-4) > 250000);
  }

  // The GPU run's own report against `anybit eval` of its checkpoint on the CPU: the same top-1 on
  // all 16 test images.
  REQUIRE(run_command(anybit + " eval --run " + a + " --data " + (tmp / "data") + " --workers 1 --out " +
                          (tmp / "eval"),
                      &out) == 0);
  INFO(out);
  REQUIRE(report_top1(tmp / "eval/report.json") == report_top1(a + "/report.json"));
}

TEST_CASE("cuda app: Ctrl-C stops a GPU run with a checkpoint at that step, and resumed it ends as if never stopped",
          "[cuda][app]") {
  SKIP_WITHOUT_GPU();
  const std::string anybit = anybit_program();
  ScratchDir tmp("anybit_cuda_stop");
  write_image_folder(tmp / "data", 8, 2, 8);  // 32 training images of 8x8: 4 steps an epoch
  // The batches are copied to the GPU ahead of the step that uses them (data/device_batches.h), so
  // a run stopped mid-epoch leaves copies in flight; the resumed run must still see every batch.
  // The stopped run is given 100 epochs, so that however fast the GPU it is still training when
  // the signal comes, and resumed with 3; a constant learning rate (multistep without milestones)
  // makes its first 3 epochs those of the straight run of 3.
  const std::string args = " train --model resnet20 --data " + (tmp / "data") +
                           " --batch-size 8 --lr 0.05 --schedule multistep --seed 3 --workers 1 --threads 2 "
                           "--eval-batches 1 --eval-every 0 --log-every 100000 --device cuda";
  const std::string straight = tmp / "straight", stopped = tmp / "stopped";
  std::string out;
  REQUIRE(run_command(anybit + args + " --epochs 3 --out " + straight, &out) == 0);
  INFO(out);
  // SIGINT as soon as the run has started (its folder exists): it stops after the step in progress.
  REQUIRE(run_command(anybit + args + " --epochs 100 --out " + stopped + " > " + (tmp / "log") + " 2>&1 & pid=$!; " +
                          "for i in $(seq 6000); do [ -f " + stopped + "/config.txt ] && break; sleep 0.02; done; " +
                          "kill -INT $pid; wait $pid; echo $? > " + (tmp / "rc"),
                      &out) == 0);
  const std::string log = read_text(tmp / "log");
  INFO(log);
  REQUIRE(read_text(tmp / "rc") == "130\n");
  REQUIRE_THAT(log, Catch::Contains("anybit: stopped "));
  REQUIRE(run_command(anybit + args + " --epochs 3 --out " + stopped + " --resume 1", &out) == 0);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("resumed from"));
  require_same_losses(straight, stopped, 0);
  require_same_tensors(straight + "/model.safetensors", stopped + "/model.safetensors", 0);
}

TEST_CASE("cuda app: the joint trainer's run moves between the GPU and the CPU with its random draws", "[cuda][app]") {
  SKIP_WITHOUT_GPU();
  const std::string anybit = anybit_program();
  ScratchDir tmp("anybit_cuda_app_joint");
  write_image_folder(tmp / "data", 4, 2, 8);
  // {8,4} with the method: collaborative teachers and block swapping at a constant probability.
  const std::string args = " train --model resnet20 --bits 8,4 --data " + (tmp / "data") +
                           " --batch-size 8 --max-steps 2 --lr 0.01 --schedule multistep --swap-const 0.5 "
                           "--seed 3 --workers 1 --threads 2 --log-every 100000 --eval-batches 1";
  const std::string a = tmp / "gpu", b = tmp / "cpu";
  std::string out;
  REQUIRE(run_command(anybit + args + " --epochs 1 --device cuda --out " + a, &out) == 0);
  INFO(out);
  REQUIRE(run_command("cp -r " + a + " " + b, nullptr) == 0);
  REQUIRE(run_command(anybit + args + " --epochs 2 --resume 1 --device cuda --out " + a, &out) == 0);
  INFO(out);
  REQUIRE(run_command(anybit + args + " --epochs 2 --resume 1 --device cpu --out " + b, &out) == 0);
  INFO(out);
  // The block swaps of epoch 2 come from the generator's state in the GPU's checkpoint: the same on
  // both devices. The losses agree to a quantization step's effect, not to float rounding (see the
  // data-parallel case below).
  REQUIRE((int64_t)last_metrics(a).find("epoch")->as_double() == 2);
  REQUIRE((int64_t)last_metrics(b).find("epoch")->as_double() == 2);
  require_same_draws(a, b);
  require_same_losses(a, b, 1e-2);
}

TEST_CASE("cuda app: mpirun -np 2 --device cuda trains as one GPU process does with the same global batch",
          "[cuda][mpi][app]") {
  SKIP_WITHOUT_GPU();
  if (!mpi_runs_here()) return;
  const std::string anybit = anybit_program();
  ScratchDir tmp("anybit_cuda_mpi");
  write_image_folder(tmp / "data", 4, 2, 8);
  // One step of a global batch of 16 with synchronised BN: two processes of 8 images each, every
  // process on a GPU of its node (the same one where the node has one), against one process.
  const std::string args = " train --model resnet20 --data " + (tmp / "data") +
                           " --epochs 1 --max-steps 1 --batch-size 16 --lr 0.05 --schedule multistep --seed 5 "
                           "--workers 1 --log-every 100000 --eval-batches 1 --sync-bn 1 --device cuda";
  std::string out;
  SECTION("full precision: the same model within 1e-5") {
    REQUIRE(run_command(anybit + args + " --threads 2 --out " + (tmp / "one"), &out) == 0);
    INFO(out);
    REQUIRE(run_command(mpirun(2) + anybit + args + " --threads 1 --out " + (tmp / "two"), &out) == 0);
    INFO(out);
    REQUIRE_THAT(out, Catch::Contains("data-parallel over 2 processes") && Catch::Contains("trains on GPU"));
    // They differ at all because each process sums its half of the batch, and MPI adds the halves.
    require_same_losses(tmp / "one", tmp / "two", 1e-5);
    REQUIRE(require_same_tensors(tmp / "one/model.safetensors", tmp / "two/model.safetensors", 1e-5) > 250000);
  }
  // The joint trainer: the same teachers and block swaps. Its losses agree to a quantization step's
  // effect, not to float rounding: the two sides sum in another order, and where that puts a value
  // on the other side of a rounding boundary of its quantizer, its code moves by a whole step. On
  // the emulated GPU the W8A8 losses of this step differ by 9e-4 of their value; a single flipped
  // code in layer3 moves a loss that much (docs/RESULTS.md, "The program on the CUDA emulator").
  SECTION("the joint trainer: the same teachers and block swaps, the losses within 1e-2") {
    const std::string joint = args + " --bits 8,4 --swap-const 0.5";
    REQUIRE(run_command(anybit + joint + " --threads 2 --out " + (tmp / "one"), &out) == 0);
    INFO(out);
    REQUIRE(run_command(mpirun(2) + anybit + joint + " --threads 1 --out " + (tmp / "two"), &out) == 0);
    INFO(out);
    require_same_draws(tmp / "one", tmp / "two");
    require_same_losses(tmp / "one", tmp / "two", 1e-2);
  }
}
