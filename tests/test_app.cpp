// test_app.cpp - the `anybit` program end to end: bad options give one clear line and a non-zero
// exit; a run killed with SIGKILL, or stopped by Ctrl-C (SIGINT: it writes a checkpoint and exits
// 130), and resumed ends bit-identical to an uninterrupted run; --help;
// report labels; checkpoint pairs; the metrics file; --recalibrate-bn; progress lines in a log.
//
// The data is a small synthetic MNIST written by the test in the official IDX format, so these
// tests need no download and no shared folder.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

#include "apps/anybit/progress.h"
#include "nn/checkpoint.h"
#include "nn/json.h"
#include "tests/helpers.h"

using namespace anybit;
using anybit::test::run_command;

namespace {

const std::string kAnybit = std::string(ANYBIT_BINARY_DIR) + "/anybit";

void write_be32(std::ofstream& f, uint32_t v) {
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
  f.write((const char*)b, 4);
}

// n images of 28x28: class c is a bright bar at row 2c plus noise, so the task is learnable.
void write_mnist(const std::string& dir, const std::string& split, int n, uint64_t seed) {
  Generator g(seed);
  std::ofstream img(dir + "/" + split + "-images-idx3-ubyte", std::ios::binary);
  std::ofstream lab(dir + "/" + split + "-labels-idx1-ubyte", std::ios::binary);
  write_be32(img, 2051);
  write_be32(img, n);
  write_be32(img, 28);
  write_be32(img, 28);
  write_be32(lab, 2049);
  write_be32(lab, n);
  for (int i = 0; i < n; ++i) {
    int c = (int)g.below(10);
    lab.put((char)c);
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        int v = (int)g.below(60);
        if (y >= 2 * c + 3 && y < 2 * c + 6 && x > 4 && x < 24) v = 200 + (int)g.below(55);
        img.put((char)v);
      }
  }
}

std::string make_dataset() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = "/tmp/anybit_app_test_" + std::to_string(getpid());
  mkdir(dir.c_str(), 0755);
  mkdir((dir + "/mnist").c_str(), 0755);
  write_mnist(dir + "/mnist", "train", 2048, 1);
  write_mnist(dir + "/mnist", "t10k", 256, 2);
  return dir;
}

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::vector<std::string> train_args(const std::string& data, const std::string& out) {
  return {kAnybit, "train", "--model", "lenet5", "--bits", "8,4,2", "--data", data, "--out", out, "--epochs", "2",
          "--batch-size", "32", "--optimizer", "adam", "--lr", "2e-3", "--weight-decay", "0", "--clip-init", "4",
          "--weight-scale", "sat", "--workers", "2", "--threads", "2", "--seed", "7", "--save-every", "3",
          "--eval-every", "0", "--log-every", "100000"};
}

std::string joined(const std::vector<std::string>& a) {
  std::string s;
  for (auto& x : a) s += x + " ";
  return s;
}

// Starts the program `args` in the background, its stdout and stderr into `log`; returns its pid.
pid_t start_program(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    freopen(log.c_str(), "w", stderr);
    freopen(log.c_str(), "a", stdout);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits (up to two minutes) for a file to appear.
void wait_for_file(const std::string& path) {
  auto t0 = std::chrono::steady_clock::now();
  while (!exists(path) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The final weights of two runs are bit-identical.
void require_same_model(const std::string& a, const std::string& b) {
  nn::SafeTensors wa = nn::read_safetensors(a), wb = nn::read_safetensors(b);
  REQUIRE(wa.tensors.size() == wb.tensors.size());
  for (size_t i = 0; i < wa.tensors.size(); ++i) {
    INFO(wa.tensors[i].first);
    REQUIRE(wa.tensors[i].first == wb.tensors[i].first);
    const Tensor &x = wa.tensors[i].second, &y = wb.tensors[i].second;
    REQUIRE(x.shape() == y.shape());
    REQUIRE(std::memcmp(x.raw_data(), y.raw_data(), x.numel() * dtype_size(x.dtype())) == 0);
  }
}

}  // namespace

TEST_CASE("anybit: a bad option value or input gives one clear line and a non-zero exit", "[app]") {
  std::string data = make_dataset() + "/mnist", out;
  REQUIRE(run_command(kAnybit + " train --data " + data + " --epochs x", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--epochs") && Catch::Contains("'x'") && Catch::Contains("not an integer"));
  REQUIRE(run_command(kAnybit + " train --data " + data + " --bits 8,3x", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--bits"));
  REQUIRE(run_command(kAnybit + " train --data " + data + " --teacher best --bits 8,4", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--teacher") && Catch::Contains("best"));
  REQUIRE(run_command(kAnybit + " train --data /nonexistent/mnist", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("/nonexistent/mnist"));
  // A value that needs no data to check is checked before the data is opened, and a bad value
  // leaves no run folder behind, whenever it is found.
  REQUIRE(run_command(kAnybit + " train --data /nonexistent/mnist --epochs 0", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--epochs must be at least 1") && !Catch::Contains("/nonexistent/mnist"));
  const std::string run = make_dataset() + "/bad_run";
  for (const char* bad : {"--lr abc", "--optimizer adagrad", "--clip-lr 8:x --bits 8,4"}) {
    REQUIRE(run_command(kAnybit + " train --model lenet5 --data " + data + " --out " + run + " " + bad, &out) != 0);
    INFO(bad << ": " << out);
    CHECK(!exists(run));
  }
  REQUIRE(run_command(kAnybit + " train --data " + data + " --epoch 3", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("unknown option 'epoch'") && Catch::Contains("epochs"));
  // The command line overrides the config file wherever --config stands.
  std::string cfg = make_dataset() + "/override.cfg";
  std::ofstream(cfg) << "# a test config\nepochs = 2\ndata = /nonexistent/from-file\n";
  REQUIRE(run_command(kAnybit + " train --data /nonexistent/from-cli --config " + cfg, &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("/nonexistent/from-cli"));
  std::ofstream(cfg) << "epochs 2\n";
  REQUIRE(run_command(kAnybit + " train --config " + cfg, &out) != 0);
  REQUIRE_THAT(out, Catch::Contains(cfg + ":1") && Catch::Contains("key = value"));
  REQUIRE(run_command(kAnybit + " frobnicate", &out) != 0);
  REQUIRE(run_command(kAnybit + " eval --run /nonexistent/run", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("/nonexistent/run"));
}

TEST_CASE("anybit: a run killed with SIGKILL, or stopped by Ctrl-C, and resumed ends bit-identical to an uninterrupted run",
          "[app][checkpoint]") {
  std::string base = make_dataset(), data = base + "/mnist";
  std::string a = base + "/run_a", b = base + "/run_b", c = base + "/run_c", out;

  // A: uninterrupted.
  REQUIRE(run_command(joined(train_args(data, a)), &out) == 0);
  REQUIRE(exists(a + "/report.json"));

  // B: killed with SIGKILL as soon as its first mid-epoch checkpoint exists, then resumed.
  std::vector<std::string> args = train_args(data, b);
  pid_t pid = start_program(args, "/dev/null");
  wait_for_file(b + "/state.safetensors");
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  REQUIRE(WIFSIGNALED(st));               // it really was killed ...
  REQUIRE(!exists(b + "/report.json"));   // ... before it finished
  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  resume.push_back("1");
  REQUIRE(run_command(joined(resume), &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("resumed from"));
  require_same_model(a + "/model.safetensors", b + "/model.safetensors");

  // C: no checkpoints of its own (--save-every 0), stopped by SIGINT as soon as it has started (its
  // folder exists). It finishes the step it is in, writes a checkpoint there, says so and exits with
  // 130; resumed, it ends where A ended.
  args = train_args(data, c);
  args[std::find(args.begin(), args.end(), "--save-every") - args.begin() + 1] = "0";
  pid = start_program(args, base + "/run_c.log");
  wait_for_file(c + "/config.txt");
  kill(pid, SIGINT);
  waitpid(pid, &st, 0);
  out = read_text(base + "/run_c.log");
  INFO(out);
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 130);
  REQUIRE_THAT(out, Catch::Contains("stopping after this step") && Catch::Contains("stopped in epoch 1 after step") &&
                        Catch::Contains("--resume 1"));
  REQUIRE(!exists(c + "/report.json"));
  const int64_t stopped_at = (int64_t)std::stoll(nn::read_safetensors(c + "/model.safetensors").metadata.at("iteration"));
  REQUIRE_THAT(out, Catch::Contains("after step " + std::to_string(stopped_at) + ";"));
  resume = args;
  resume.push_back("--resume");
  resume.push_back("1");
  REQUIRE(run_command(joined(resume), &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("resumed from " + c + " at epoch 0, batch " + std::to_string(stopped_at)));
  require_same_model(a + "/model.safetensors", c + "/model.safetensors");

  // D: a second signal while the first is being honoured stops the program at once. (Two SIGINTs
  // sent together may merge into one pending signal, so the other is a SIGTERM; either may be
  // handled first, and the one handled second ends the program.)
  const std::string d = base + "/run_d";
  args = train_args(data, d);
  pid = start_program(args, "/dev/null");
  wait_for_file(d + "/config.txt");
  kill(pid, SIGINT);
  kill(pid, SIGTERM);
  waitpid(pid, &st, 0);
  REQUIRE(WIFSIGNALED(st));
  REQUIRE((WTERMSIG(st) == SIGINT || WTERMSIG(st) == SIGTERM));
  run_command("rm -rf " + a + " " + b + " " + c + " " + d, nullptr);
}

extern "C" int stbi_write_png(char const* filename, int w, int h, int comp, const void* data, int stride_in_bytes);

TEST_CASE("anybit: an unreadable image stops training with its name, unless --skip-bad-files", "[app][data]") {
  std::string root = make_dataset() + "/folder";
  for (const char* split : {"train", "test"})
    for (const char* cls : {"a", "b"}) {
      std::string dir = root + "/" + split + "/" + cls;
      run_command("mkdir -p " + dir, nullptr);
      for (int i = 0; i < 4; ++i) {
        std::vector<unsigned char> px(32 * 32 * 3, (unsigned char)(cls[0] == 'a' ? 40 : 200));
        REQUIRE(stbi_write_png((dir + "/" + std::to_string(i) + ".png").c_str(), 32, 32, 3, px.data(), 32 * 3));
      }
    }
  std::ofstream(root + "/train/a/broken.png") << "not a png";
  std::string cmd = kAnybit + " train --model resnet20 --data " + root + " --out " + root +
                    "/run --epochs 1 --batch-size 4 --workers 1 --eval-every 0 --augment none";
  std::string out;
  REQUIRE(run_command(cmd, &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("broken.png"));
  REQUIRE(run_command(cmd + " --skip-bad-files 1", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("broken.png") && Catch::Contains("skipped 1"));
  run_command("rm -rf " + root, nullptr);
}

TEST_CASE("anybit: --recalibrate-bn N sets each bit-width's BN statistics to the average over N batches",
          "[app][quant]") {
  // 16 noisy training images. A trained ResNet-20 at {8,4} is recalibrated twice (resumed after its
  // last epoch, so only the recalibration runs): once on 1 batch of 16, once on 4 batches of 4. The
  // stem's BN reads the FP stem conv of the images, whatever the batches, so its running mean must
  // come out the same both times: the mean of 4 batch means of 4 is the mean of the 16 (which a
  // momentum other than 1/(k+1) after a reset would miss). The deeper BNs read activations
  // normalised with each batch's own statistics, so they depend on the batching: not compared.
  test::ScratchDir tmp("anybit_recal");
  Generator g(3);
  for (const char* split : {"train", "test"})
    for (int c = 0; c < 4; ++c) {
      const std::string dir = tmp / (std::string(split) + "/c" + std::to_string(c));
      run_command("mkdir -p " + dir, nullptr);
      for (int i = 0; i < (std::string(split) == "train" ? 4 : 1); ++i) {
        std::vector<unsigned char> px(32 * 32 * 3);
        for (auto& v : px) v = (unsigned char)(40 * c + g.below(100));
        REQUIRE(stbi_write_png((dir + "/" + std::to_string(i) + ".png").c_str(), 32, 32, 3, px.data(), 32 * 3));
      }
    }
  const std::string args = kAnybit + " train --model resnet20 --bits 8,4 --data " + tmp.path.string() +
                           " --augment none --epochs 1 --max-steps 1 --eval-batches 1 --workers 1 --threads 2 "
                           "--log-every 100000 --out ";
  std::string out;
  REQUIRE(run_command(args + (tmp / "base") + " --batch-size 16", &out) == 0);
  REQUIRE(run_command("cp -r " + (tmp / "base") + " " + (tmp / "one") + " && cp -r " + (tmp / "base") + " " +
                          (tmp / "four"),
                      nullptr) == 0);
  REQUIRE(run_command(args + (tmp / "one") + " --batch-size 16 --resume 1 --recalibrate-bn 1", &out) == 0);
  REQUIRE(run_command(args + (tmp / "four") + " --batch-size 4 --resume 1 --recalibrate-bn 4", &out) == 0);
  INFO(out);
  nn::SafeTensors base = nn::read_safetensors(tmp / "base/model.safetensors");
  nn::SafeTensors one = nn::read_safetensors(tmp / "one/model.safetensors");
  nn::SafeTensors four = nn::read_safetensors(tmp / "four/model.safetensors");
  int compared = 0;
  for (size_t i = 0; i < base.tensors.size(); ++i) {
    const std::string& name = base.tensors[i].first;
    if (name.rfind("bn1.bn.", 0) != 0 || name.find("running_mean") == std::string::npos) continue;  // the stem's BN
    INFO(name);
    REQUIRE(one.tensors[i].first == name);
    REQUIRE(four.tensors[i].first == name);
    std::vector<float> b = base.tensors[i].second.to_vector<float>(), o = one.tensors[i].second.to_vector<float>(),
                       f = four.tensors[i].second.to_vector<float>();
    double moved = 0, diff = 0, mag = 0;
    for (size_t k = 0; k < o.size(); ++k) {
      moved = std::max(moved, (double)std::abs(o[k] - b[k]));
      diff = std::max(diff, (double)std::abs(o[k] - f[k]));
      mag = std::max(mag, (double)std::abs(o[k]));
    }
    CHECK(moved > 0.1 * mag);    // the recalibration replaced what training left
    CHECK(diff <= 1e-5 * mag);   // 1 batch of 16 and 4 batches of 4 agree
    ++compared;
  }
  REQUIRE(compared == 2);  // one BN set per bit-width
}

namespace {

// A short plain-FP (or, with extra "--bits ...", quantized) run: a few steps, one test batch.
std::string short_run(const std::string& data, const std::string& out, const std::string& extra = "") {
  return kAnybit + " train --model lenet5 --data " + data + " --out " + out +
         " --epochs 1 --max-steps 3 --batch-size 32 --eval-batches 1 --workers 1 --threads 2 --log-every 100000 " +
         extra;
}

}  // namespace

TEST_CASE("progress in a log: a phase prints every `every` steps and at its end, transient work only every "
          "log_seconds and never at its end", "[app]") {
  // stderr into a file: a log, not a terminal.
  test::ScratchDir tmp("anybit_progress");
  std::fflush(stderr);
  const int saved = dup(2), fd = open((tmp / "log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  dup2(fd, 2);
  close(fd);
  {
    app::Progress epoch("epoch 1/1", 5, 2);
    for (int i = 1; i <= 5; ++i) epoch.update(i, 10 * i, "loss 1");
    app::Progress quick("test W4A4", 5, 0);  // an evaluation shorter than its log_seconds: silent
    quick.transient(3600);
    for (int i = 0; i <= 5; ++i) quick.update(i, 10 * i, "");
    app::Progress slow("test W2A2", 3, 0);  // one longer than its log_seconds: a line per step taken
    slow.transient(0);
    for (int i = 0; i <= 3; ++i) slow.update(i, 10 * i, "");
  }
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  const std::string log = read_text(tmp / "log");
  INFO(log);
  REQUIRE_THAT(log, Catch::Contains("epoch 1/1 step 2/5 loss 1") && Catch::Contains("epoch 1/1 step 4/5") &&
                        Catch::Contains("epoch 1/1 step 5/5") && !Catch::Contains("epoch 1/1 step 3/5"));
  REQUIRE_THAT(log, !Catch::Contains("test W4A4"));
  REQUIRE_THAT(log, Catch::Contains("test W2A2 step 0/3") && Catch::Contains("test W2A2 step 2/3") &&
                        !Catch::Contains("test W2A2 step 3/3"));
}

TEST_CASE("anybit --help and every subcommand's --help print the options and exit 0", "[app]") {
  std::string out;
  REQUIRE(run_command(kAnybit + " --help", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("train") && Catch::Contains("eval") && Catch::Contains("info"));
  REQUIRE(run_command(kAnybit + " help", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("--epochs"));
  REQUIRE(run_command(kAnybit + " train --help", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("anybit train") && Catch::Contains("--epochs") && Catch::Contains("--bits"));
  REQUIRE(run_command(kAnybit + " train --epochs 3 -h", &out) == 0);  // anywhere on the line
  REQUIRE_THAT(out, Catch::Contains("--epochs"));
  REQUIRE(run_command(kAnybit + " eval --help", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("anybit eval") && Catch::Contains("--run") && Catch::Contains("--eval-batches"));
  REQUIRE(run_command(kAnybit + " info --help", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("anybit info") && Catch::Contains("--input") && Catch::Contains("--model"));
  REQUIRE(run_command(kAnybit + " help eval", &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("--run"));
}

TEST_CASE("anybit: errors name no source file and line unless ANYBIT_DEBUG=1 or --verbose", "[app]") {
  std::string data = make_dataset() + "/mnist", out;
  REQUIRE(run_command(kAnybit + " train --data " + data + " --epochs x", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("anybit: error: --epochs: 'x' is not an integer"));
  REQUIRE_THAT(out, !Catch::Contains(".cpp:"));
  REQUIRE(run_command(kAnybit + " train --data /nonexistent/mnist", &out) != 0);
  REQUIRE_THAT(out, !Catch::Contains(".cpp:"));
  REQUIRE(run_command("ANYBIT_DEBUG=1 " + kAnybit + " train --data " + data + " --epochs x", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("config.cpp:") && Catch::Contains("not an integer"));
  REQUIRE(run_command(kAnybit + " train --verbose --data " + data + " --epochs x", &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("config.cpp:") && Catch::Contains("not an integer"));
}

TEST_CASE("anybit: a full-precision run is labelled fp32 in its report, a --name wins", "[app]") {
  std::string base = make_dataset(), data = base + "/mnist", dir = base + "/fp_label", out;
  REQUIRE(run_command(short_run(data, dir), &out) == 0);
  nn::Json rep = nn::Json::parse(read_text(dir + "/report.json"));
  REQUIRE(rep.find("name")->as_string() == "fp32");
  REQUIRE(run_command(short_run(data, dir, "--name mine"), &out) == 0);
  REQUIRE(nn::Json::parse(read_text(dir + "/report.json")).find("name")->as_string() == "mine");
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4"), &out) == 0);
  REQUIRE(nn::Json::parse(read_text(dir + "/report.json")).find("name")->as_string() == "ours");
  run_command("rm -rf " + dir, nullptr);
}

TEST_CASE("anybit: a run stopped between the two checkpoint writes resumes from the state file and loses nothing",
          "[app][checkpoint]") {
  // The state file (weights, optimizer, step) is written first, then model.safetensors. A stop
  // between the two leaves a model one checkpoint older than the state. Simulated here: train 1
  // epoch, resume for a 2nd, put epoch 1's model back, resume for a 3rd; the result must equal the
  // same three commands without the tampering.
  std::string base = make_dataset(), data = base + "/mnist", dir = base + "/pair", ref = base + "/pair_ref", out;
  for (int e = 1; e <= 3; ++e)
    REQUIRE(run_command(short_run(data, ref, "--bits 8,4 --resume 1 --epochs " + std::to_string(e)), &out) == 0);
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4"), &out) == 0);
  REQUIRE(run_command("cp " + dir + "/model.safetensors " + dir + "/model.old", nullptr) == 0);
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4 --epochs 2 --resume 1"), &out) == 0);
  REQUIRE(run_command("mv " + dir + "/model.old " + dir + "/model.safetensors", nullptr) == 0);
  // both files carry the step in their metadata: here they differ
  REQUIRE(nn::read_safetensors(dir + "/model.safetensors").metadata.at("iteration") == "3");
  REQUIRE(nn::read_safetensors(dir + "/state.safetensors").metadata.at("iteration") == "6");
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4 --epochs 3 --resume 1"), &out) == 0);
  REQUIRE_THAT(out, Catch::Contains("resumed from"));
  require_same_model(ref + "/model.safetensors", dir + "/model.safetensors");

  // A state file of an older run holds no weights: resume then reads model.safetensors and
  // refuses a model and a state written at different steps, naming both.
  nn::TrainingState st = nn::load_training_state(dir + "/state.safetensors");
  st.model.clear();
  st.iteration = 3;
  nn::save_training_state(dir + "/state.safetensors", st);
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4 --epochs 4 --resume 1"), &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("model.safetensors") && Catch::Contains("state.safetensors") &&
                        Catch::Contains("step 9") && Catch::Contains("step 3"));
  run_command("rm -rf " + dir + " " + ref, nullptr);
}

TEST_CASE("anybit: --clip-lr per bit-width gives each bit-width's quantizer group its own learning rate", "[app]") {
  std::string base = make_dataset(), data = base + "/mnist", dir = base + "/cliplr", out;
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4 --clip-init 2 --clip-lr 8:0.5,4:0"), &out) == 0);
  int moved8 = 0, moved4 = 0;
  for (auto& [name, t] : nn::read_safetensors(dir + "/model.safetensors").tensors) {
    if (name.find("clip_b8") != std::string::npos) moved8 += t.item<float>() != 2.0f;
    if (name.find("clip_b4") != std::string::npos) moved4 += t.item<float>() != 2.0f;
  }
  REQUIRE(moved8 > 0);   // lr 0.5: the 8-bit clips learn
  REQUIRE(moved4 == 0);  // lr 0 (and no weight decay at 4 bits): the 4-bit clips stay put
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4 --clip-lr 8:x"), &out) != 0);
  REQUIRE_THAT(out, Catch::Contains("--clip-lr") && Catch::Contains("8:x"));
  run_command("rm -rf " + dir, nullptr);
}

TEST_CASE("anybit: metrics.jsonl has one JSON object per epoch with the documented keys", "[app]") {
  std::string base = make_dataset(), data = base + "/mnist", dir = base + "/metrics", out;
  REQUIRE(run_command(short_run(data, dir, "--bits 8,4 --epochs 2 --eval-every 2"), &out) == 0);
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  std::vector<nn::Json> lines;
  while (std::getline(f, line)) {
    INFO(line);
    REQUIRE(line.rfind("{\"epoch\": " + std::to_string(lines.size() + 1) + ", \"iteration\": ", 0) == 0);
    lines.push_back(nn::Json::parse(line));
  }
  REQUIRE(lines.size() == 2);
  std::vector<std::string> keys;
  for (auto& kv : lines[1].members()) keys.push_back(kv.first);
  REQUIRE(keys == std::vector<std::string>{"epoch", "iteration", "lr", "seconds", "images_per_s", "swap_p", "train", "test"});
  REQUIRE(lines[0].find("test") == nullptr);  // --eval-every 2: no test figures after epoch 1
  const nn::Json* w4 = lines[1].find("train")->find("W4A4");
  REQUIRE(w4);
  keys.clear();
  for (auto& kv : w4->members()) keys.push_back(kv.first);
  REQUIRE(keys == std::vector<std::string>{"loss", "acc", "teachers", "swapped_blocks", "block_draws"});
  REQUIRE(w4->find("teachers")->find("W8A8")->as_int() == 3 * 32);
  REQUIRE(lines[1].find("iteration")->as_int() == 6);
  REQUIRE(lines[1].find("test")->find("W8A8")->is_number());
  // and a plain FP run logs its loss and accuracy under "fp32"
  REQUIRE(run_command(short_run(data, dir), &out) == 0);
  std::ifstream g(dir + "/metrics.jsonl");
  REQUIRE(std::getline(g, line));
  nn::Json fp = nn::Json::parse(line);
  keys.clear();
  for (auto& kv : fp.members()) keys.push_back(kv.first);
  REQUIRE(keys == std::vector<std::string>{"epoch", "iteration", "lr", "seconds", "images_per_s", "train", "test"});
  REQUIRE(fp.find("train")->find("fp32")->find("acc")->is_number());
  run_command("rm -rf " + dir, nullptr);
}
