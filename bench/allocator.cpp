// bench_allocator: speed of the exact inter-layer budget allocator (lorq/budget_allocator.h) on DeiT-Base- and
// DeiT-Tiny-sized instances: 50 layers (patch embed, 12 x {qkv, proj, fc1, fc2}, head) with ~250 options each,
// sizes from the spec's memory formulas (§2.4) and synthetic but realistically shaped errors. Prints figures only.
// Usage: bench_allocator [--seed N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "lorq/alloc/budget_allocator.h"

using namespace lorq;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_ms() {  // this thread's CPU time: less disturbed by other load on the machine than wall time
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Shape {
  int64_t m, n;
  bool low_rank;
};

std::vector<Shape> deit_shapes(int64_t dim) {
  std::vector<Shape> s = {{dim, 3 * 16 * 16, false}};  // patch embed conv: quantization only
  for (int b = 0; b < 12; ++b) {
    s.push_back({3 * dim, dim, true});  // qkv
    s.push_back({dim, dim, true});      // proj
    s.push_back({4 * dim, dim, true});  // fc1
    s.push_back({dim, 4 * dim, true});  // fc2
  }
  s.push_back({1000, dim, true});  // head
  return s;
}

// Options of one layer: Q(b) for b in {2,3,4,6,8} and LR(bA, bB, r) for bA, bB in {4,6,8} at ~27 ranks each, with
// S(Q) = b*m*n/8 and S(LR) = floor(r*(m*bA + n*bB)/8). Errors: quantization noise ~ 4^-b, low-rank truncation
// error from a power-law spectrum plus factor quantization noise, times a per-layer sensitivity spanning three
// decades and a few percent of multiplicative noise (which makes the fronts non-convex here and there).
std::vector<AllocOption> layer_options(const Shape& sh, std::mt19937_64& rng, bool dense) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const double sens = std::pow(10.0, -3.0 + 3.0 * (0.5 + 0.5 * u(rng)));
  const double alpha = 0.25 + 0.15 * (0.5 + 0.5 * u(rng));  // spectrum sigma_i ~ i^-alpha
  const int64_t k = std::min(sh.m, sh.n);
  std::vector<double> tail(k + 1, 0.0);  // tail[r] = energy fraction beyond rank r
  for (int64_t i = k; i >= 1; --i) tail[i - 1] = tail[i] + std::pow(static_cast<double>(i), -2 * alpha);
  for (int64_t i = k; i >= 0; --i) tail[i] /= tail[0];
  auto noise = [&](double amp) { return 1.0 + amp * u(rng); };
  std::vector<AllocOption> opts;
  for (int b : {2, 3, 4, 6, 8}) opts.push_back({b * sh.m * sh.n / 8, sens * std::pow(4.0, -(b - 2)) * noise(0.1)});
  if (!sh.low_rank) return opts;
  if (dense) {
    // Errors as a function of size only (as if every option sat on one smooth front, the spec's §5.4 filter having
    // already removed the dominated ones): error ~ 4^-(bits per weight), convex, with 2% noise.
    const double mn = static_cast<double>(sh.m * sh.n);
    for (int ba : {4, 6, 8})
      for (int bb : {4, 6, 8})
        for (int j = 0; j < 27; ++j) {
          const int64_t rmax = std::min(k, (8 * sh.m * sh.n - 1) / (sh.m * ba + sh.n * bb));
          const int64_t r = 2 + (rmax - 2) * j / 26;
          const int64_t bytes = r * (sh.m * ba + sh.n * bb) / 8;
          const double bits = 8.0 * bytes / mn;
          opts.push_back({bytes, sens * 4.0 * std::pow(4.0, -bits) * (1.0 + 0.3 * tail[r]) * noise(0.02)});
        }
    return opts;
  }
  for (int ba : {4, 6, 8})
    for (int bb : {4, 6, 8}) {
      const int64_t rmax = std::min(k, (8 * sh.m * sh.n - 1) / (sh.m * ba + sh.n * bb));
      const int nr = 27;
      for (int j = 0; j < nr; ++j) {
        const int64_t r = 2 + (rmax - 2) * j / (nr - 1);
        const double q = (std::pow(4.0, -(ba - 2)) + std::pow(4.0, -(bb - 2))) * (1.0 - tail[r]) * 0.6;
        opts.push_back({r * (sh.m * ba + sh.n * bb) / 8, sens * (2.0 * tail[r] + q) * noise(0.05)});
      }
    }
  return opts;
}

size_t pareto_size(std::vector<AllocOption> v) {
  std::sort(v.begin(), v.end(), [](const AllocOption& a, const AllocOption& b) {
    return a.bytes != b.bytes ? a.bytes < b.bytes : a.error < b.error;
  });
  size_t n = 0;
  double best = INFINITY;
  for (const auto& o : v)
    if (o.error < best) best = o.error, ++n;
  return n;
}

void run(const char* name, int64_t dim, uint64_t seed, bool dense) {
  std::mt19937_64 rng(seed);
  const std::vector<Shape> shapes = deit_shapes(dim);
  std::vector<std::vector<AllocOption>> layers;
  int64_t params = 0;
  size_t options = 0, pareto = 0;
  for (const Shape& s : shapes) {
    layers.push_back(layer_options(s, rng, dense));
    params += s.m * s.n;
    options += layers.back().size();
    pareto += pareto_size(layers.back());
  }
  std::printf("%s: %zu layers, %zu options (%.0f per layer, %.1f Pareto-optimal per layer), %lld weights\n", name,
              layers.size(), options, double(options) / layers.size(), double(pareto) / layers.size(),
              static_cast<long long>(params));

  std::vector<double> t_ctor;
  for (int i = 0; i < 21; ++i) {
    const double t = now_ms();
    BudgetAllocator a(layers);
    t_ctor.push_back(now_ms() - t);
  }
  const BudgetAllocator alloc(layers);
  std::printf("  constructor (validation, Pareto fronts, hulls, LP tables): %.3f ms median\n", median(t_ctor));
  std::printf("  min_bytes %lld (%.3f avg bits), max_bytes %lld (%.3f avg bits)\n",
              static_cast<long long>(alloc.min_bytes()), alloc.min_bytes() * 8.0 / params,
              static_cast<long long>(alloc.max_bytes()), alloc.max_bytes() * 8.0 / params);

  // The trade-off curve, uncached (a fresh allocator each time).
  std::vector<double> t_curve, c_curve;
  size_t curve_size = 0;
  for (int i = 0; i < 3; ++i) {
    const BudgetAllocator fresh(layers);
    const double t = now_ms(), c = cpu_ms();
    curve_size = fresh.tradeoff_curve().size();
    c_curve.push_back(cpu_ms() - c);
    t_curve.push_back(now_ms() - t);
  }
  std::printf("  trade-off curve: %zu breakpoints, %.1f ms (median of 3; %.1f ms thread CPU)\n", curve_size,
              median(t_curve), median(c_curve));
  alloc.tradeoff_curve();  // cache it for the lookups below

  for (double bits : {2.0, 3.0, 4.0, 6.0}) {
    const int64_t budget = budget_bytes_for_avg_bits(bits, params);
    if (budget < alloc.min_bytes()) continue;
    std::vector<double> ts, cs;
    AllocResult r;
    for (int i = 0; i < 51; ++i) {
      const double t = now_ms(), c = cpu_ms();
      r = alloc.solve(budget);
      cs.push_back(cpu_ms() - c);
      ts.push_back(now_ms() - t);
    }
    std::printf(
        "  solve at %.0f avg bits (%lld bytes): %.3f ms median of 51 (%.3f ms thread CPU); error %.6g "
        "(curve: %.6g), %lld bytes used\n",
        bits, static_cast<long long>(budget), median(ts), median(cs), r.error, alloc.optimal_error(budget),
        static_cast<long long>(r.bytes));
  }
  // A slider drag: 401 budgets across the whole range, each checked against the curve.
  std::vector<double> ts, cs;
  double worst_rel = 0;
  for (int i = 0; i <= 400; ++i) {
    const int64_t budget = alloc.min_bytes() + (alloc.max_bytes() - alloc.min_bytes()) * i / 400;
    const double t = now_ms(), c = cpu_ms();
    const AllocResult r = alloc.solve(budget);
    cs.push_back(cpu_ms() - c);
    ts.push_back(now_ms() - t);
    const double ref = alloc.optimal_error(budget);
    worst_rel = std::max(worst_rel, std::fabs(r.error - ref) / std::max(ref, 1e-300));
  }
  std::printf(
      "  401 budgets min..max: solve %.3f ms median, %.3f ms max (thread CPU: %.3f median, %.3f max); "
      "max |solve - curve| / curve = %.2g\n",
      median(ts), *std::max_element(ts.begin(), ts.end()), median(cs), *std::max_element(cs.begin(), cs.end()),
      worst_rel);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--seed")) seed = std::strtoull(argv[i + 1], nullptr, 10);
  // "dense fronts": a harder variant where most of the ~250 options of a layer are Pareto-optimal, as if the
  // spec's §5.4 filter had already removed the dominated ones (more breakpoints, a larger curve).
  run("DeiT-Base-sized", 768, seed, false);
  run("DeiT-Tiny-sized", 192, seed, false);
  run("DeiT-Base-sized, dense fronts", 768, seed, true);
  run("DeiT-Tiny-sized, dense fronts", 192, seed, true);
  return 0;
}
