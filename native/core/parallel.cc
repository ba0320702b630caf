#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define NIBBLE_PAUSE() _mm_pause()
#else
#define NIBBLE_PAUSE() std::this_thread::yield()
#endif

namespace nibble {

namespace {

struct Pool {
  std::vector<std::thread> workers;
  std::mutex mu;               // guards generation/job and sleeping
  std::condition_variable cv;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending{0};  // workers still inside the current job
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  std::atomic<int64_t> next{0};
  int64_t n = 0, chunk = 1;
  bool stop = false;
  std::mutex submit_mu;  // one job at a time

  explicit Pool(int nworkers) {
    for (int i = 0; i < nworkers; i++) workers.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> l(mu);
      stop = true;
      generation++;
    }
    cv.notify_all();
    for (auto& t : workers) t.join();
  }

  void run_chunks() {
    for (;;) {
      int64_t b = next.fetch_add(chunk);
      if (b >= n) break;
      (*fn)(b, std::min(n, b + chunk));
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      // spin ~50us waiting for the next job, then sleep
      auto t0 = std::chrono::steady_clock::now();
      while (generation.load(std::memory_order_acquire) == seen) {
        NIBBLE_PAUSE();
        if (std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(50)) {
          std::unique_lock<std::mutex> l(mu);
          cv.wait(l, [&] { return generation.load() != seen; });
          break;
        }
      }
      seen = generation.load(std::memory_order_acquire);
      if (stop) return;
      run_chunks();
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void run(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
    std::lock_guard<std::mutex> s(submit_mu);
    int nthreads = (int)workers.size() + 1;
    int64_t pieces = std::max<int64_t>(1, std::min<int64_t>(total / std::max<int64_t>(grain, 1), nthreads * 4));
    {
      std::lock_guard<std::mutex> l(mu);
      fn = &f;
      n = total;
      chunk = (total + pieces - 1) / pieces;
      next.store(0);
      pending.store((int)workers.size());
      generation.fetch_add(1, std::memory_order_release);
    }
    cv.notify_all();
    run_chunks();
    while (pending.load(std::memory_order_acquire) > 0) NIBBLE_PAUSE();
  }
};

int g_threads = 0;
Pool* g_pool = nullptr;
std::mutex& g_pool_mu = *new std::mutex;  // never destroyed (see storage.cc's cache)

int default_threads() {
  if (const char* e = std::getenv("NIBBLE_NUM_THREADS")) {
    int v = std::atoi(e);
    if (v > 0) return v;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? (int)hc : 1;
}

Pool* pool() {
  std::lock_guard<std::mutex> l(g_pool_mu);
  if (!g_threads) g_threads = default_threads();
  if (!g_pool && g_threads > 1) g_pool = new Pool(g_threads - 1);  // lives for the process
  return g_pool;
}

}  // namespace

int num_threads() {
  std::lock_guard<std::mutex> l(g_pool_mu);
  if (!g_threads) g_threads = default_threads();
  return g_threads;
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> l(g_pool_mu);
  if (n < 1) n = 1;
  if (n == g_threads) return;
  delete g_pool;
  g_pool = nullptr;
  g_threads = n;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  Pool* p = pool();
  if (!p || n <= grain) {
    fn(0, n);
    return;
  }
  p->run(n, grain, fn);
}

}  // namespace nibble
