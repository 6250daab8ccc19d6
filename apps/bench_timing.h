// bench_timing.h - the timing the benchmark programs share: the median of repeated runs.
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

namespace anybit::bench {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds of `reps` runs of f, after one warm-up run.
template <typename F>
double median_time(int reps, F f) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace anybit::bench
