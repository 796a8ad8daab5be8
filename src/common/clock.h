// Clock: the time seam. The workflow engine reads time and sleeps only
// through a Clock so unit tests can drive it deterministically.
// SystemClock is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace pgshift {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t NowMs() = 0;
  virtual void SleepMs(int64_t ms) = 0;
};

class SystemClock : public Clock {
 public:
  int64_t NowMs() override;
  void SleepMs(int64_t ms) override;
};

Clock& DefaultClock();

// Monotonic milliseconds, for measuring durations inside one process.
int64_t MonotonicMs();
int64_t MonotonicUs();

// "2026-11-24T23:59:01.123Z"
std::string FormatTimeMs(int64_t epoch_ms);

}  // namespace pgshift
