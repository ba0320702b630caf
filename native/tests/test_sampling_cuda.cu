// Native test of sampling on the GPU (native/cuda/sampling.cu) against the plain C++ reference
// of the JS rules (tests/sampling_ref.h): random rows (Gaussian at several scales, integer
// logits full of ties, rows with -inf entries, constant rows, a spike, huge scales where most
// weights underflow, -0 and subnormals), vocabularies from 1 to 100000 (shared-memory rows and
// the global-memory fallback), float32/float16/bfloat16 logits, every option alone and
// combined, minTokensToKeep > 1, batches with a finished row left out, the statuses (NaN,
// +inf, nothing left) and bad arguments. Token ids and statuses must agree exactly. Prints one
// PASS/FAIL line per check, timings, and a summary; exits non-zero on any failure.
//
// Usage: test_sampling_cuda [--seed N] [--only name-substring]
//        test_sampling_cuda --ref-dump FILE [--seed N]   (no GPU needed: writes the cases and
//        the reference's answers for a cross-check against the JS, see the end of this file)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cuda/sampling_cuda.h"
#include "tests/cuda_test_util.h"
#include "tests/sampling_ref.h"

using namespace nibble;
using namespace nibble_test;
using sampling_ref::Options;

namespace {

std::string g_only;
FILE* g_dump = nullptr;  // --ref-dump: write cases + reference answers, skip the GPU

struct NamedOptions {
  std::string name;
  Options o;
};

Options greedy() { return Options(); }
Options sampling() {
  Options o;
  o.do_sample = true;
  return o;
}

std::vector<NamedOptions> option_sets(int64_t V) {
  std::vector<NamedOptions> v;
  auto add = [&](const std::string& n, Options o) { v.push_back({n, o}); };
  add("greedy", greedy());
  { Options o = greedy(); o.repetition_penalty = 1.3; add("greedy rp1.3", o); }
  { Options o = greedy(); o.repetition_penalty = 0.7; add("greedy rp0.7", o); }
  add("sample", sampling());
  { Options o = sampling(); o.temperature = 0.7; add("t0.7", o); }
  { Options o = sampling(); o.temperature = 1.8; add("t1.8", o); }
  { Options o = sampling(); o.top_k = 1; add("topK1", o); }
  { Options o = sampling(); o.top_k = 5; add("topK5", o); }
  { Options o = sampling(); o.top_k = 50; add("topK50", o); }
  { Options o = sampling(); o.top_k = std::max<int64_t>(1, V - 1); add("topK=V-1", o); }
  { Options o = sampling(); o.top_k = V + 5; add("topK>V", o); }
  for (double p : {0.0, 0.1, 0.5, 0.9, 0.999}) {
    Options o = sampling();
    o.top_p = p;
    add("topP" + fmt_g(p), o);
  }
  for (double m : {0.0, 0.05, 0.2, 1.0}) {
    Options o = sampling();
    o.use_min_p = true;
    o.min_p = m;
    add("minP" + fmt_g(m), o);
  }
  { Options o = sampling(); o.repetition_penalty = 1.3; add("sample rp1.3", o); }
  { Options o = sampling(); o.temperature = 0.8; o.top_k = 50; o.top_p = 0.9; add("t0.8 topK50 topP0.9", o); }
  {
    Options o = sampling();
    o.temperature = 1.2;
    o.top_k = 40;
    o.top_p = 0.95;
    o.use_min_p = true;
    o.min_p = 0.05;
    o.repetition_penalty = 1.2;
    add("all: t1.2 topK40 topP0.95 minP0.05 rp1.2", o);
  }
  { Options o = sampling(); o.temperature = 0.6; o.top_p = 0.7; o.repetition_penalty = 0.9; add("t0.6 topP0.7 rp0.9", o); }
  { Options o = sampling(); o.min_tokens_to_keep = 3; o.top_k = 1; add("mtk3 topK1", o); }
  { Options o = sampling(); o.min_tokens_to_keep = 3; o.top_p = 0.1; add("mtk3 topP0.1", o); }
  { Options o = sampling(); o.min_tokens_to_keep = 3; o.use_min_p = true; o.min_p = 1.0; add("mtk3 minP1", o); }
  return v;
}

// Rows of one kind of values.
enum Kind { kRandn1, kRandn5, kTies, kNegInfs, kConstant, kSpike, kTinyScale, kHuge, kZerosSubnormals, kNumKinds };
const char* kind_name(int k) {
  static const char* n[] = {"randn", "randn*5", "integer ties", "30% -inf", "constant", "spike", "randn*1e-3",
                            "randn*40", "-0/subnormal ties"};
  return n[k];
}

std::vector<float> make_row(std::mt19937_64& rng, int kind, int64_t V) {
  std::vector<float> x = randn(rng, (size_t)V, 1.0f);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  switch (kind) {
    case kRandn1: break;
    case kRandn5: for (auto& v : x) v *= 5.0f; break;
    case kTies: for (auto& v : x) v = std::round(v * 1.5f); break;
    case kNegInfs:
      for (auto& v : x)
        if (U(rng) < 0.3) v = -INFINITY;
      break;
    case kConstant: for (auto& v : x) v = 0.5f; break;
    case kSpike:
      for (auto& v : x) v *= 0.1f;
      x[(size_t)(U(rng) * V)] = 20.0f;
      break;
    case kTinyScale: for (auto& v : x) v *= 1e-3f; break;
    case kHuge: for (auto& v : x) v *= 40.0f; break;
    case kZerosSubnormals:
      for (auto& v : x) {
        const double r = U(rng);
        v = r < 0.3 ? 0.0f : r < 0.6 ? -0.0f : r < 0.8 ? 1e-40f : -1e-40f;
      }
      break;
  }
  return x;
}

double uniform53(std::mt19937_64& rng) { return (double)(rng() >> 11) * (1.0 / 9007199254740992.0); }

cuda_sampling::Config to_config(const Options& o, int64_t V, bool force_global) {
  // What sampling_bindings.cc does with the JS options.
  cuda_sampling::Config c;
  c.do_sample = o.do_sample;
  c.repetition_penalty = (float)o.repetition_penalty;
  c.temperature = (float)o.temperature;
  c.top_k_keep = o.top_k == 0 ? 0 : std::min<int64_t>(std::max<int64_t>(o.top_k, o.min_tokens_to_keep), V);
  c.top_p = o.top_p;
  c.use_min_p = o.use_min_p;
  c.min_p = (float)o.min_p;
  c.min_tokens_to_keep = o.min_tokens_to_keep;
  c.force_global = force_global;
  return c;
}

// A batch [B, P, V] on the device; rows `rows` sample from position P-1.
struct Batch {
  int64_t B = 0, P = 0, V = 0;
  DType dt = DType::F32;
  std::vector<float> values;  // B*P*V, already rounded to dt
  std::vector<int64_t> rows;
  std::vector<double> u;
  std::vector<std::vector<int32_t>> hist;  // per entry of rows
};

// The sampler's row arguments for a batch (the histories point into b).
std::vector<cuda_sampling::Row> device_rows(const Batch& b) {
  std::vector<cuda_sampling::Row> rows(b.rows.size());
  for (size_t i = 0; i < rows.size(); i++) {
    rows[i].batch = b.rows[i];
    rows[i].u = b.u[i];
    rows[i].history = b.hist[i].data();
    rows[i].history_len = (int64_t)b.hist[i].size();
  }
  return rows;
}

std::vector<float> row_of(const Batch& b, int64_t r) {
  const size_t off = (size_t)((r * b.P + b.P - 1) * b.V);
  return std::vector<float>(b.values.begin() + off, b.values.begin() + off + b.V);
}

void dump_case(const Batch& b, const Options& o, size_t i, const sampling_ref::Result& want) {
  // Little-endian records: V u32 | doSample u8 | temperature f64 | topK f64 | topP f64 |
  // minP f64 (NaN = off) | penalty f64 | mtk f64 | u f64 | histLen u32 | hist i32[] |
  // logits f32[V] | id i32 | status i32
  auto w = [](const void* p, size_t n) { std::fwrite(p, 1, n, g_dump); };
  const uint32_t V = (uint32_t)b.V;
  const uint8_t ds = o.do_sample;
  const double nums[7] = {o.temperature, (double)o.top_k, o.top_p, o.use_min_p ? o.min_p : NAN,
                          o.repetition_penalty, (double)o.min_tokens_to_keep, b.u[i]};
  const uint32_t hl = (uint32_t)b.hist[i].size();
  const std::vector<float> row = row_of(b, b.rows[i]);
  const int32_t res[2] = {(int32_t)want.id, (int32_t)want.status};
  w(&V, 4);
  w(&ds, 1);
  w(nums, sizeof nums);
  w(&hl, 4);
  w(b.hist[i].data(), 4 * hl);
  w(row.data(), 4 * row.size());
  w(res, sizeof res);
}

// Draws whose target u * total lies within this relative distance of a boundary between two
// tokens may legitimately differ: the kernel's sums are rounded in another order than the
// JS's left-to-right ones (sampling.cu says so). Such rows are counted, not failed.
constexpr double kRoundingEps = 1e-10;
int g_rounding_ties = 0;

// Runs the batch through the kernel and the reference; returns "" or a description of the
// first mismatches.
std::string run_batch(const Batch& b, const Options& o, bool force_global, int* mismatches) {
  std::vector<sampling_ref::Result> want(b.rows.size());
  for (size_t i = 0; i < b.rows.size(); i++) {
    want[i] = sampling_ref::choose(row_of(b, b.rows[i]), b.hist[i], o, b.u[i]);
    if (g_dump) dump_case(b, o, i, want[i]);
  }
  if (g_dump) return "";
  HostFloats hf(b.dt, b.values);
  DevBuf d(hf.data(), hf.size_bytes());
  const std::vector<cuda_sampling::Row> rows = device_rows(b);
  std::vector<int32_t> ids(rows.size(), -7), status(rows.size(), -7);
  cuda_sampling::sample(d.p, b.dt, b.B, b.P, b.V, to_config(o, b.V, force_global), rows.data(), (int64_t)rows.size(),
                        ids.data(), status.data(), 0);
  std::string detail;
  int bad = 0;
  for (size_t i = 0; i < rows.size(); i++) {
    if (ids[i] == want[i].id && status[i] == want[i].status) continue;
    if (o.do_sample && status[i] == sampling_ref::kOk && want[i].status == sampling_ref::kOk) {
      std::vector<float> s = row_of(b, b.rows[i]);
      sampling_ref::prepare(s, b.hist[i], o);
      int64_t lo, hi;
      sampling_ref::draw_range(s, b.u[i], kRoundingEps, &lo, &hi);
      if (ids[i] >= lo && ids[i] <= hi && s[ids[i]] != -INFINITY) {
        g_rounding_ties++;
        continue;
      }
    }
    if (++bad <= 3)
      detail += " [row " + std::to_string(b.rows[i]) + ": gpu " + std::to_string(ids[i]) + "/" + std::to_string(status[i]) +
                " ref " + std::to_string(want[i].id) + "/" + std::to_string(want[i].status) + "]";
  }
  *mismatches += bad;
  return detail;
}

Batch random_batch(std::mt19937_64& rng, int kind, int64_t V, DType dt, int64_t B = 6, int64_t P = 2) {
  Batch b;
  b.B = B;
  b.P = P;
  b.V = V;
  b.dt = dt;
  b.values.reserve((size_t)(B * P * V));
  for (int64_t r = 0; r < B * P; r++) {
    std::vector<float> x = make_row(rng, kind, V);
    b.values.insert(b.values.end(), x.begin(), x.end());
  }
  // round to the dtype so the reference sees what the kernel reads
  HostFloats hf(dt, b.values);
  for (size_t i = 0; i < b.values.size(); i++) b.values[i] = as_float((const uint8_t*)hf.data(), dt, i);
  std::uniform_int_distribution<int64_t> id(0, V - 1);
  std::uniform_int_distribution<int> len(0, 300);
  for (int64_t r = 0; r < B; r++) {
    if (B > 2 && r == 2) continue;  // a finished row: not asked for
    b.rows.push_back(r);
    b.u.push_back(r == 0 ? 0.0 : r == B - 1 ? 1.0 - 1.0 / 9007199254740992.0 : uniform53(rng));
    std::vector<int32_t> h((size_t)len(rng));
    for (auto& x : h) x = (int32_t)id(rng);
    if (!h.empty()) h.push_back(h[0]);  // a repeat: penalised once
    b.hist.push_back(h);
  }
  return b;
}

void check(Table& t, const std::string& name, const std::function<std::string()>& body) {
  if (!g_only.empty() && name.find(g_only) == std::string::npos) return;
  try {
    std::string d = body();
    if (g_dump) {
      if (!d.empty() && d[0] == '!') std::printf("reference FAIL %s: %s\n", name.c_str(), d.c_str());
      return;
    }
    t.add(name, d.empty() || d[0] != '!', d.empty() ? "exact" : d);
  } catch (const std::exception& e) {
    t.add(name, false, std::string("threw: ") + e.what());
  }
}

void test_random(Table& t, std::mt19937_64& rng) {
  struct Shape {
    int64_t V;
    DType dt;
    bool force_global;
  };
  std::vector<Shape> shapes = {{1, DType::F32, false},     {2, DType::F32, false},    {3, DType::F32, false},
                               {17, DType::F32, false},    {1000, DType::F32, false}, {1000, DType::F16, false},
                               {1000, DType::BF16, false}, {4097, DType::F32, false}, {50257, DType::F32, false},
                               {50257, DType::F32, true},  {100000, DType::F32, false}};
  for (const Shape& s : shapes) {
    if (g_dump && s.V > 50257) continue;
    const std::string where = "V=" + std::to_string(s.V) + " " + dtype_name(s.dt) + (s.force_global ? " global" : "");
    for (const NamedOptions& no : option_sets(s.V)) {
      check(t, where + " " + no.name, [&]() -> std::string {
        int bad = 0, total = 0;
        const int ties_before = g_rounding_ties;
        std::string first;
        for (int kind = 0; kind < kNumKinds; kind++) {
          // big vocabularies: fewer rows per kind, to keep the CPU reference quick
          Batch b = random_batch(rng, kind, s.V, s.dt, s.V > 5000 ? 3 : 6);
          const int before = bad;
          std::string d = run_batch(b, no.o, s.force_global, &bad);
          total += (int)b.rows.size();
          if (bad > before && first.empty()) first = std::string(kind_name(kind)) + ":" + d;
        }
        if (g_dump) return "";
        if (bad) return "!" + std::to_string(bad) + "/" + std::to_string(total) + " rows differ; " + first;
        const int ties = g_rounding_ties - ties_before;
        if (ties)
          return std::to_string(total) + " rows, " + std::to_string(ties) +
                 " differ only within rounding of a boundary (u * total within 1e-10)";
        return "exact, " + std::to_string(total) + " rows";
      });
    }
  }
}

// Specials: each status, +inf and all--inf rows greedy, a temperature that overflows.
void test_specials(Table& t) {
  const int64_t V = 300;
  auto one = [&](const std::string& name, std::vector<float> row, Options o, int64_t want_id, int want_status) {
    check(t, "special: " + name, [&]() -> std::string {
      Batch b;
      b.B = 2;
      b.P = 1;
      b.V = V;
      std::vector<float> other(V, 0.0f);
      other[7] = 1.0f;
      b.values = row;
      b.values.insert(b.values.end(), other.begin(), other.end());
      b.rows = {0, 1};
      b.u = {0.25, 0.5};
      b.hist = {{}, {}};
      sampling_ref::Result r = sampling_ref::choose(row, {}, o, 0.25);
      if (r.id != want_id || r.status != want_status)
        return "!reference gives " + std::to_string(r.id) + "/" + std::to_string(r.status);
      int bad = 0;
      std::string d = run_batch(b, o, false, &bad);
      if (g_dump) return "";
      return bad ? "!" + d : "id " + std::to_string(want_id) + " status " + std::to_string(want_status) + ", other row unaffected";
    });
  };
  std::vector<float> base(V);
  for (int64_t i = 0; i < V; i++) base[i] = (float)std::sin((double)i);
  { auto r = base; r[5] = NAN; one("NaN greedy", r, greedy(), -1, sampling_ref::kNaN); }
  { auto r = base; r[5] = NAN; one("NaN sampling", r, sampling(), -1, sampling_ref::kNaN); }
  { auto r = base; r[9] = INFINITY; r[4] = INFINITY; one("+inf greedy: first +inf", r, greedy(), 4, sampling_ref::kOk); }
  { auto r = base; r[9] = INFINITY; one("+inf sampling", r, sampling(), -1, sampling_ref::kPosInf); }
  { std::vector<float> r(V, -INFINITY); one("all -inf greedy: id 0", r, greedy(), 0, sampling_ref::kOk); }
  { std::vector<float> r(V, -INFINITY); one("all -inf sampling", r, sampling(), -1, sampling_ref::kAllFiltered); }
  {
    auto r = base;
    r[11] = 3e38f;
    Options o = sampling();
    o.temperature = 0.5;
    one("temperature overflows to +inf", r, o, -1, sampling_ref::kPosInf);
  }
  {
    std::vector<float> r(V, -INFINITY);
    r[123] = -5.0f;
    Options o = sampling();
    o.top_p = 0.5;
    o.use_min_p = true;
    o.min_p = 0.5;
    one("one finite score", r, o, 123, sampling_ref::kOk);
  }
}

void test_errors(Table& t) {
  if (g_dump) return;
  auto expect_throw = [&](const std::string& name, const std::function<void()>& f) {
    check(t, "error: " + name, [&]() -> std::string {
      try {
        f();
      } catch (const std::invalid_argument& e) {
        return std::string("invalid_argument: ") + e.what();
      }
      return "!no exception";
    });
  };
  DevBuf d(sizeof(float) * 16);
  int32_t id, st;
  cuda_sampling::Row r;
  expect_throw("row outside the batch", [&] {
    r.batch = 3;
    cuda_sampling::sample(d.p, DType::F32, 2, 1, 8, cuda_sampling::Config(), &r, 1, &id, &st, 0);
  });
  expect_throw("int32 logits", [&] {
    r.batch = 0;
    cuda_sampling::sample(d.p, DType::I32, 2, 1, 8, cuda_sampling::Config(), &r, 1, &id, &st, 0);
  });
  expect_throw("u outside [0, 1)", [&] {
    r.batch = 0;
    r.u = 1.0;
    cuda_sampling::Config c;
    c.do_sample = true;
    cuda_sampling::sample(d.p, DType::F32, 2, 1, 8, c, &r, 1, &id, &st, 0);
  });
  check(t, "error: the device still works after the errors", [&]() -> std::string {
    std::vector<float> v(16, 0.0f);
    v[8 + 5] = 1.0f;
    d.upload(v.data(), v.size() * 4);
    r.batch = 1;
    r.u = 0.0;
    cuda_sampling::sample(d.p, DType::F32, 2, 1, 8, cuda_sampling::Config(), &r, 1, &id, &st, 0);
    return id == 5 && st == 0 ? "argmax 5" : "!got " + std::to_string(id);
  });
}

// sample_async: several calls queued before any is waited for (each has its own staging),
// and the feed: kOk rows' ids land in feed[batch] on the device, other entries untouched.
void test_async_feed(Table& t, std::mt19937_64& rng) {
  if (g_dump) return;
  check(t, "async: 3 calls queued then waited, ids as the synchronous call; feed = ids of settled rows", [&]() -> std::string {
    const int64_t B = 4, V = 50257;
    std::vector<std::vector<float>> rowsets;
    std::vector<DevBuf> bufs;
    std::uniform_real_distribution<float> uni(-5.0f, 5.0f);
    for (int c = 0; c < 3; c++) {
      std::vector<float> v((size_t)(B * V));
      for (auto& x : v) x = uni(rng);
      if (c == 1) v[(size_t)(2 * V + 17)] = NAN;  // row 2 of call 1: left to the host
      rowsets.push_back(v);
      bufs.emplace_back(v.data(), v.size() * 4);
    }
    std::vector<cuda_sampling::Row> rows(3);
    rows[0].batch = 0, rows[1].batch = 2, rows[2].batch = 3;  // row 1 is "finished": not asked for
    DevBuf feed(sizeof(int32_t) * B);
    const std::vector<int32_t> init = {-7, -7, -7, -7};
    feed.upload(init.data(), init.size() * 4);
    std::vector<cuda_sampling::Pending*> pend;
    for (int c = 0; c < 3; c++)
      pend.push_back(cuda_sampling::sample_async(bufs[c].p, DType::F32, B, 1, V, cuda_sampling::Config(), rows.data(), 3,
                                                 c == 1 ? feed.as<int32_t>() : nullptr, 0));
    std::string err;
    for (int c = 0; c < 3; c++) {
      std::vector<int32_t> ids(3), st(3), ids2(3), st2(3);
      cuda_sampling::sample_wait(pend[c], ids.data(), st.data());
      cuda_sampling::sample(bufs[c].p, DType::F32, B, 1, V, cuda_sampling::Config(), rows.data(), 3, ids2.data(), st2.data(), 0);
      if (ids != ids2 || st != st2) err += " call " + std::to_string(c) + " differs from the synchronous call;";
      for (int r = 0; r < 3; r++) {
        const float* row = rowsets[c].data() + rows[r].batch * V;
        const int32_t want = c == 1 && r == 1 ? -1 : (int32_t)(std::max_element(row, row + V) - row);
        if (ids[r] != want) err += " call " + std::to_string(c) + " row " + std::to_string(r) + ": " + std::to_string(ids[r]);
      }
      if (c == 1) {
        const std::vector<int32_t> f = feed.download<int32_t>(B);
        const float* r0 = rowsets[1].data();
        const float* r3 = rowsets[1].data() + 3 * V;
        const std::vector<int32_t> want = {(int32_t)(std::max_element(r0, r0 + V) - r0), -7, -7,
                                           (int32_t)(std::max_element(r3, r3 + V) - r3)};
        if (f != want) err += " feed [" + std::to_string(f[0]) + " " + std::to_string(f[1]) + " " + std::to_string(f[2]) + " " + std::to_string(f[3]) + "]";
      }
    }
    return err.empty() ? "3 calls, feed ok" : "!" + err;
  });
}

void test_determinism(Table& t, std::mt19937_64& rng) {
  if (g_dump) return;
  check(t, "same inputs, same ids (20 launches, V=50257 all options)", [&]() -> std::string {
    Batch b = random_batch(rng, kRandn1, 50257, DType::F32, 8, 1);
    Options o = sampling();
    o.temperature = 1.1;
    o.top_p = 0.8;
    o.use_min_p = true;
    o.min_p = 0.01;
    HostFloats hf(b.dt, b.values);
    DevBuf d(hf.data(), hf.size_bytes());
    // (no repetition penalty here: the histories are not read)
    const std::vector<cuda_sampling::Row> rows = device_rows(b);
    std::vector<int32_t> first;
    for (int it = 0; it < 20; it++) {
      std::vector<int32_t> ids(rows.size()), st(rows.size());
      cuda_sampling::sample(d.p, b.dt, b.B, b.P, b.V, to_config(o, b.V, false), rows.data(), (int64_t)rows.size(),
                            ids.data(), st.data(), 0);
      if (it == 0) first = ids;
      else if (ids != first) return "!launch " + std::to_string(it) + " differs";
    }
    return "identical";
  });
}

void timings(std::mt19937_64& rng) {
  if (g_dump || !g_only.empty()) return;
  std::printf("\ntimings: sample() call = copy rows in, kernel, copy ids out, sync (V=50257, float32 randn*3 rows)\n");
  for (int64_t B : {1, 8}) {
    Batch b = random_batch(rng, kRandn1, 50257, DType::F32, B, 1);
    for (auto& v : b.values) v *= 3.0f;
    HostFloats hf(b.dt, b.values);
    DevBuf d(hf.data(), hf.size_bytes());
    std::vector<cuda_sampling::Row> rows(B);
    for (int64_t i = 0; i < B; i++) {
      rows[i].batch = i;
      rows[i].u = uniform53(rng);
      rows[i].history = b.hist[0].data();
      rows[i].history_len = (int64_t)b.hist[0].size();
    }
    std::vector<NamedOptions> sets;
    auto add = [&](const char* n, Options o) { sets.push_back({n, o}); };
    add("greedy", greedy());
    { Options o = greedy(); o.repetition_penalty = 1.3; add("greedy rp1.3", o); }
    add("sample", sampling());
    { Options o = sampling(); o.top_k = 50; add("topK50", o); }
    { Options o = sampling(); o.top_p = 0.9; add("topP0.9", o); }
    { Options o = sampling(); o.top_k = 50; o.top_p = 0.9; o.temperature = 0.8; add("t0.8 topK50 topP0.9", o); }
    { Options o = sampling(); o.use_min_p = true; o.min_p = 0.1; add("minP0.1", o); }
    for (auto& s : sets) {
      std::vector<int32_t> ids(B), st(B);
      auto cfg = to_config(s.o, b.V, false);
      for (int w = 0; w < 3; w++) cuda_sampling::sample(d.p, b.dt, b.B, 1, b.V, cfg, rows.data(), B, ids.data(), st.data(), 0);
      const int iters = 50;
      auto t0 = std::chrono::steady_clock::now();
      for (int it = 0; it < iters; it++)
        cuda_sampling::sample(d.p, b.dt, b.B, 1, b.V, cfg, rows.data(), B, ids.data(), st.data(), 0);
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
      std::printf("  B=%lld %-22s %8.1f us\n", (long long)B, s.name.c_str(), us);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = std::random_device{}();
  seed = (seed << 32) ^ (uint64_t)std::chrono::high_resolution_clock::now().time_since_epoch().count();
  std::string dump;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--only" && i + 1 < argc) g_only = argv[++i];
    else if (a == "--ref-dump" && i + 1 < argc) dump = argv[++i];
  }
  std::mt19937_64 rng(seed);
  Table t;
  if (!dump.empty()) {
    g_dump = std::fopen(dump.c_str(), "wb");
    if (!g_dump) {
      std::perror(dump.c_str());
      return 1;
    }
    test_specials(t);
    test_random(t, rng);
    std::fclose(g_dump);
    std::printf("reference answers written to %s (seed %llu)\n", dump.c_str(), (unsigned long long)seed);
    return 0;
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("test_sampling_cuda: no CUDA device; nothing tested\n");
    return 2;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("test_sampling_cuda on %s (sm_%d%d), seed %llu; rows up to V=%lld in shared memory\n\n", prop.name,
              prop.major, prop.minor, (unsigned long long)seed, (long long)cuda_sampling::max_shared_vocab(0));
  auto t0 = std::chrono::steady_clock::now();
  test_errors(t);
  test_specials(t);
  test_random(t, rng);
  test_determinism(t, rng);
  test_async_feed(t, rng);
  timings(rng);
  t.summary();
  std::printf("draws that differ only within rounding of a token boundary: %d\n", g_rounding_ties);
  std::printf("seed %llu, %.1f s\n", (unsigned long long)seed,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return t.failures() == 0 ? 0 : 1;
}
