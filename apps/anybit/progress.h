// progress.h - progress of long work: a live bar on a terminal, plain lines in a log.
//
// A phase of its own (a training epoch) keeps its last bar on a terminal and prints a line every
// `every` steps and at the end in a log. Work inside another phase (the evaluation after an
// epoch) is made transient(): its bar is erased when done, and a log gets a line only every
// `log_seconds`, so that only evaluations that take long (ImageNet on a CPU) show up there.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace anybit::app {

class Progress {
 public:
  // total: steps in this phase; every: on a non-terminal, print one line every `every` steps;
  // unit: what the rate counts ("img" for images, "clips" for videos).
  Progress(std::string label, int64_t total, int64_t every = 50, std::string unit = "img")
      : label_(std::move(label)), unit_(std::move(unit)), total_(total), every_(every), tty_(isatty(fileno(stderr))),
        start_(std::chrono::steady_clock::now()) {}

  // See the top of the file.
  void transient(double log_seconds) {
    transient_ = true;
    log_seconds_ = log_seconds;
  }

  // done: steps done so far; items: images (clips) processed so far (for the rate); info: "loss 0.12 ..."
  void update(int64_t done, int64_t items, const std::string& info) {
    double s = seconds();
    double rate = s > 0 ? items / s : 0;
    double eta = done > 0 ? s / done * (total_ - done) : 0;
    if (tty_) {
      if (s - last_draw_ < 0.1 && done < total_) return;  // at most 10 redraws a second
      last_draw_ = s;
      if (transient_ && done >= total_) {
        std::fprintf(stderr, "\r\033[K");  // erased: the caller prints the result
        std::fflush(stderr);
        return;
      }
      int width = 24, filled = total_ ? (int)(width * done / total_) : width;
      std::fprintf(stderr, "\r%s [%s%s] %lld/%lld %s %.0f %s/s ETA %s   ", label_.c_str(),
                   std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                   (long long)done, (long long)total_, info.c_str(), rate, unit_.c_str(), fmt_time(eta).c_str());
      if (done >= total_) std::fprintf(stderr, "\n");
    } else if (transient_) {
      if (done >= total_ || s - last_line_ < log_seconds_) return;
      last_line_ = s;
      std::fprintf(stderr, "%s step %lld/%lld %.0f %s/s ETA %s\n", label_.c_str(), (long long)done, (long long)total_,
                   rate, unit_.c_str(), fmt_time(eta).c_str());
    } else if (done == total_ || (every_ > 0 && done % every_ == 0)) {
      std::fprintf(stderr, "%s step %lld/%lld %s %.0f %s/s ETA %s\n", label_.c_str(), (long long)done,
                   (long long)total_, info.c_str(), rate, unit_.c_str(), fmt_time(eta).c_str());
    }
    std::fflush(stderr);
  }

  // A line between updates; on a terminal it takes the bar's line, and the next update draws the
  // bar again below it.
  void note(const std::string& line) {
    std::fprintf(stderr, tty_ ? "\r%s\033[K\n" : "%s\n", line.c_str());
    last_draw_ = -1;
    std::fflush(stderr);
  }

  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  static std::string fmt_time(double s) {
    char buf[32];
    int t = (int)(s + 0.5);
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else
      std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
    return buf;
  }

 private:
  std::string label_;
  std::string unit_;
  int64_t total_, every_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  double last_draw_ = -1;
  bool transient_ = false;
  double log_seconds_ = 0, last_line_ = 0;  // transient, in a log: a line at most every log_seconds_
};

}  // namespace anybit::app
