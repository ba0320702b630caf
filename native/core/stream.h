// The CPU execution queue. Bindings validate arguments on the JS thread, then enqueue the
// kernel here and return at once; one dispatcher thread runs kernels in order (each kernel
// fans out over the thread pool). JS waits only when it reads results back (sync), so a
// whole forward pass runs while the event loop stays free. This mirrors CUDA stream
// semantics, so the JS layer drives CPU and GPU the same way.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace nibble {

class CpuStream {
 public:
  static CpuStream& instance();

  // Runs fn on the dispatcher thread after everything enqueued before it. An exception from
  // fn is recorded and reported by the next sync(); later kernels still run.
  void enqueue(std::function<void()> fn);
  // Starts running everything enqueued so far (enqueue batches work until then).
  void flush();
  // Blocks until all enqueued work is done; throws the first recorded kernel error.
  void sync();
  // True when nothing is queued or running (a fresh buffer may then be written directly).
  bool idle();

 private:
  CpuStream();
  void loop();

  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<std::function<void()>> queue_;
  static constexpr size_t kFlushThreshold = 512;
  uint64_t submitted_ = 0, completed_ = 0, flushed_through_ = 0;
  bool running_ = false;
  std::string error_;
  bool inline_ = false;  // NIBBLE_SYNC=1 runs kernels on the caller's thread (debugging)
  std::thread thread_;
};

}  // namespace nibble
