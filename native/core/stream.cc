#include "core/stream.h"

#include <cstdlib>
#include <stdexcept>

namespace nibble {

CpuStream& CpuStream::instance() {
  static CpuStream* s = new CpuStream();  // lives for the process; never joined at exit
  return *s;
}

CpuStream::CpuStream() {
  const char* e = std::getenv("NIBBLE_SYNC");
  inline_ = e && e[0] == '1';
  if (!inline_) {
    thread_ = std::thread([this] { loop(); });
    thread_.detach();
  }
}

void CpuStream::enqueue(std::function<void()> fn) {
  if (inline_) {
    try {
      fn();
    } catch (const std::exception& ex) {
      std::lock_guard<std::mutex> l(mu_);
      if (error_.empty()) error_ = ex.what();
    }
    return;
  }
  bool wake;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(fn));
    submitted_++;
    // Work is batched until the caller waits (flush) or a long run builds up: on a machine
    // with few cores, kernels racing the JS thread that is still enqueueing them cost more
    // than they overlap.
    wake = queue_.size() >= kFlushThreshold;
  }
  if (wake) cv_work_.notify_one();
}

void CpuStream::flush() {
  {
    std::lock_guard<std::mutex> l(mu_);
    flushed_through_ = submitted_;
  }
  cv_work_.notify_one();
}

void CpuStream::loop() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_work_.wait(l, [&] { return !queue_.empty() && (running_ || flushed_through_ > completed_ || queue_.size() >= kFlushThreshold); });
      running_ = true;
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string err;
    try {
      fn();
    } catch (const std::exception& ex) {
      err = ex.what();
    } catch (...) {
      err = "unknown error in a CPU kernel";
    }
    fn = nullptr;  // drop captured storages before reporting completion
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!err.empty() && error_.empty()) error_ = err;
      completed_++;
      if (queue_.empty()) running_ = false;
    }
    cv_done_.notify_all();
  }
}

void CpuStream::sync() {
  if (inline_) {
    std::lock_guard<std::mutex> l(mu_);
    if (!error_.empty()) {
      std::string e = std::move(error_);
      error_.clear();
      throw std::runtime_error(e);
    }
    return;
  }
  flush();
  std::unique_lock<std::mutex> l(mu_);
  uint64_t target = submitted_;
  cv_done_.wait(l, [&] { return completed_ >= target; });
  if (!error_.empty()) {
    std::string e = std::move(error_);
    error_.clear();
    throw std::runtime_error(e);
  }
}

bool CpuStream::idle() {
  std::lock_guard<std::mutex> l(mu_);
  return completed_ == submitted_;
}

}  // namespace nibble
