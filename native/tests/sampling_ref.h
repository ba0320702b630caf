// Plain C++ reference of the token choice in lib/generation (logits-processors.ts and
// sampler.ts), line for line the JS, sums in the JS's order: what native/cuda/sampling.cu is
// checked against. Options are given as the JS sees them (doubles; the processors round to
// float32 themselves); the result follows the kernel's contract (sampling_cuda.h): an id, or
// a status that sends the step back to the host.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <unordered_set>
#include <vector>

namespace sampling_ref {

struct Options {
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  bool use_min_p = false;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  int64_t min_tokens_to_keep = 1;
};

enum { kOk = 0, kNaN = 1, kPosInf = 2, kAllFiltered = 3 };

inline float fround(double x) { return (float)x; }
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr double kInf = std::numeric_limits<double>::infinity();

inline void apply_repetition_penalty(std::vector<float>& s, const std::vector<int32_t>& ids, double penalty) {
  if (penalty == 1) return;
  const float p = fround(penalty);
  std::unordered_set<int32_t> seen;
  for (int32_t id : ids) {
    if (seen.count(id) || id < 0 || id >= (int64_t)s.size()) continue;
    seen.insert(id);
    const float v = s[id];
    s[id] = v < 0 ? fround((double)v * p) : fround((double)v / p);
  }
}

inline void apply_temperature(std::vector<float>& s, double temperature) {
  if (temperature == 1) return;
  const float t = fround(temperature);
  for (auto& v : s) v = fround((double)v / t);
}

// The k-th largest value (NaN counts as -inf); only the value matters, not how it is found.
template <typename T>
inline double kth_largest(const std::vector<T>& values, int64_t k) {
  std::vector<double> a(values.size());
  for (size_t i = 0; i < a.size(); i++) a[i] = std::isnan((double)values[i]) ? -kInf : (double)values[i];
  std::nth_element(a.begin(), a.begin() + (k - 1), a.end(), std::greater<double>());
  return a[k - 1];
}

inline void apply_top_k(std::vector<float>& s, int64_t k, int64_t mtk) {
  const int64_t keep = std::min<int64_t>(std::max<int64_t>(k, mtk), (int64_t)s.size());
  if (keep <= 0 || keep >= (int64_t)s.size()) return;
  const double threshold = kth_largest(s, keep);
  for (auto& v : s)
    if (v < threshold) v = kNegInf;
}

inline std::vector<double> softmax(const std::vector<float>& s) {
  float max = kNegInf;
  for (float v : s)
    if (v > max) max = v;
  std::vector<double> p(s.size(), 0.0);
  if (max == kNegInf) return p;
  double sum = 0;
  for (size_t i = 0; i < s.size(); i++) {
    const float v = s[i];
    if (v == kNegInf) continue;
    const double e = std::exp((double)v - (double)max);
    p[i] = e;
    sum += e;
  }
  const double inv = 1 / sum;
  for (auto& x : p)
    if (x != 0) x = fround(x * inv);
  return p;
}

// ascendingCrossing: the JS quickselect, partition for partition (its sums follow that order).
inline double ascending_crossing(const std::vector<double>& values, double limit) {
  std::vector<double> a = values;
  size_t lo = 0, hi = a.size();
  double acc = 0;
  while (lo < hi) {
    const size_t mid = (lo + hi) >> 1;
    const double x = a[lo], y = a[mid], z = a[hi - 1];
    const double pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    size_t lt = lo, i = lo, gt = hi;
    double sum_less = 0;
    while (i < gt) {
      const double v = a[i];
      if (v < pivot) {
        a[i] = a[lt];
        a[lt++] = v;
        sum_less += v;
        i++;
      } else if (v > pivot) {
        a[i] = a[--gt];
        a[gt] = v;
      } else {
        i++;
      }
    }
    if (fround(acc + sum_less) > limit) {
      hi = lt;
      continue;
    }
    double sum_eq = 0;
    for (size_t j = lt; j < gt; j++) sum_eq += a[j];
    if (fround(acc + sum_less + sum_eq) > limit) return pivot;
    acc += sum_less + sum_eq;
    lo = gt;
  }
  return kInf;
}

inline void apply_top_p(std::vector<float>& s, double top_p, int64_t mtk) {
  if (top_p >= 1) return;
  const std::vector<double> probs = softmax(s);
  const double limit = fround(1 - top_p);
  std::vector<int64_t> finite;
  std::vector<double> fp;
  for (size_t i = 0; i < s.size(); i++)
    if (s[i] > kNegInf) {
      finite.push_back((int64_t)i);
      fp.push_back(probs[i]);
    }
  const int64_t nfin = (int64_t)finite.size();
  const double tau =
      nfin == 0 ? kInf : std::min(ascending_crossing(fp, limit), kth_largest(fp, std::min<int64_t>(mtk, nfin)));
  double below = 0;
  for (double p : fp)
    if (p < tau) below += p;
  std::vector<int64_t> cand;
  int64_t above = 0;
  for (int64_t j = 0; j < nfin; j++) {
    const int64_t i = finite[j];
    if (fp[j] < tau) s[i] = kNegInf;
    else if (fp[j] > tau) above++;
    else cand.push_back(i);
  }
  // (score ascending, id ascending); -0 and +0 tie as floats do
  std::sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) { return s[a] < s[b] || (s[a] == s[b] && a < b); });
  const int64_t n = (int64_t)cand.size();
  const int64_t removable = n - std::min<int64_t>(std::max<int64_t>(0, mtk - above), n);
  double cum = below;
  for (int64_t j = 0; j < removable; j++) {
    const int64_t id = cand[j];
    cum += probs[id];
    if (fround(cum) <= limit) s[id] = kNegInf;
    else break;
  }
}

inline void apply_min_p(std::vector<float>& s, double min_p, int64_t mtk) {
  const std::vector<double> probs = softmax(s);
  double top = 0;
  for (double p : probs)
    if (p > top) top = p;
  const double threshold = fround((double)fround(min_p) * top);
  int64_t kept = 0;
  for (double p : probs)
    if (!(p < threshold)) kept++;
  if (kept >= mtk) {
    for (size_t i = 0; i < s.size(); i++)
      if (probs[i] < threshold) s[i] = kNegInf;
    return;
  }
  std::vector<int64_t> order(s.size());
  for (size_t i = 0; i < s.size(); i++) order[i] = (int64_t)i;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
  std::set<int64_t> keep(order.begin(), order.begin() + std::min<int64_t>(mtk, (int64_t)order.size()));
  for (size_t i = 0; i < s.size(); i++)
    if (probs[i] < threshold && !keep.count((int64_t)i)) s[i] = kNegInf;
}

inline int64_t argmax(const std::vector<float>& s) {
  int64_t best = 0;
  float best_v = kNegInf;
  for (size_t i = 0; i < s.size(); i++)
    if (s[i] > best_v) {
      best_v = s[i];
      best = (int64_t)i;
    }
  return best;
}

// sampleToken's walk for an explicit target (u * total): the first index whose running sum
// exceeds it, or the last index with a nonzero weight.
inline int64_t draw_at(const std::vector<double>& w, double target) {
  double acc = 0;
  int64_t last = -1;
  for (size_t i = 0; i < w.size(); i++) {
    if (w[i] == 0) continue;
    acc += w[i];
    last = (int64_t)i;
    if (target < acc) return (int64_t)i;
  }
  return last;
}

inline std::vector<double> weights(const std::vector<float>& s, double* total) {
  float max = kNegInf;
  for (float v : s)
    if (v > max) max = v;
  *total = 0;
  std::vector<double> w(s.size(), 0.0);
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == kNegInf) continue;
    const double e = std::exp((double)s[i] - (double)max);
    w[i] = e;
    *total += e;
  }
  return w;
}

// sampleToken with u = rng.nextFloat(); scores hold no NaN and no +inf, and some are finite.
inline int64_t sample_token(const std::vector<float>& s, double u) {
  double total;
  const std::vector<double> w = weights(s, &total);
  return draw_at(w, u * total);
}

// The ids a draw can give when its sums are rounded in another order: those for targets within
// a relative eps of u * total (the choice is monotone in the target).
inline void draw_range(const std::vector<float>& s, double u, double eps, int64_t* lo, int64_t* hi) {
  double total;
  const std::vector<double> w = weights(s, &total);
  *lo = draw_at(w, u * total * (1 - eps));
  *hi = draw_at(w, u * total * (1 + eps));
}

struct Result {
  int64_t id;
  int status;
};

// One row: the processors of buildLogitsProcessors in their order (s is edited), then the
// status; kOk means s is ready for the choice.
inline int prepare(std::vector<float>& s, const std::vector<int32_t>& history, const Options& o) {
  for (float v : s)
    if (std::isnan(v)) return kNaN;
  apply_repetition_penalty(s, history, o.repetition_penalty);
  if (!o.do_sample) return kOk;
  apply_temperature(s, o.temperature);
  float max = kNegInf;
  for (float v : s) max = std::max(max, v);
  if (max == std::numeric_limits<float>::infinity()) return kPosInf;
  if (max == kNegInf) return kAllFiltered;
  if (o.top_k != 0) apply_top_k(s, o.top_k, o.min_tokens_to_keep);
  if (o.top_p < 1) apply_top_p(s, o.top_p, o.min_tokens_to_keep);
  if (o.use_min_p) apply_min_p(s, o.min_p, o.min_tokens_to_keep);
  return kOk;
}

inline Result choose(std::vector<float> s, const std::vector<int32_t>& history, const Options& o, double u) {
  const int st = prepare(s, history, o);
  if (st != kOk) return {-1, st};
  return {o.do_sample ? sample_token(s, u) : argmax(s), kOk};
}

}  // namespace sampling_ref
