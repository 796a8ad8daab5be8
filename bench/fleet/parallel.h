// ForEach: runs fn(i) for every i in [0, n) on `threads` threads (the bench
// makes, checks, stops and removes hundreds of clusters; one at a time is
// too slow on a loaded host). Blocks until all are done; fn must be
// thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace pgshift::bench {

template <typename Fn>
void ForEach(size_t n, int threads, Fn fn) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < n; i = next++) fn(i);
    });
  }
  for (auto& t : pool) t.join();
}

}  // namespace pgshift::bench
