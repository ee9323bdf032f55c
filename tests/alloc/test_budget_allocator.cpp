// The exact budget allocator (lorq/budget_allocator.h) against a slow, obviously correct brute force that
// enumerates every combination, on many small random instances with and without constraints; its input checks;
// and solve() against the trade-off curve on a realistic 50 x 250 instance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lorq/alloc/budget_allocator.h"
#include "lorq/common/error.h"

using namespace lorq;

namespace {

using Layers = std::vector<std::vector<AllocOption>>;

// Every feasible combination under the constraints, as (bytes, error, choice), the error added in layer order.
struct Combo {
  int64_t bytes;
  double error;
  std::vector<int> choice;
};

bool allowed_by(const AllocConstraints& k, int l, int c) {
  if (!k.pinned.empty() && k.pinned[l] >= 0 && k.pinned[l] != c) return false;
  return k.allowed.empty() || k.allowed[l].empty() || k.allowed[l][c];
}

bool groups_hold(const AllocConstraints& k, const std::vector<int>& choice) {
  for (const auto& g : k.groups)
    for (int l : g)
      if (choice[l] != choice[g[0]]) return false;
  return true;
}

std::vector<Combo> enumerate(const Layers& layers, const AllocConstraints& k) {
  std::vector<Combo> out;
  std::vector<int> choice(layers.size(), 0);
  std::function<void(size_t)> rec = [&](size_t l) {
    if (l == layers.size()) {
      if (!groups_hold(k, choice)) return;
      Combo c{0, 0.0, choice};
      for (size_t i = 0; i < layers.size(); ++i) {
        c.bytes += layers[i][choice[i]].bytes;
        c.error += layers[i][choice[i]].error;
      }
      out.push_back(std::move(c));
      return;
    }
    for (int c = 0; c < static_cast<int>(layers[l].size()); ++c) {
      if (!allowed_by(k, static_cast<int>(l), c)) continue;
      choice[l] = c;
      rec(l + 1);
    }
  };
  rec(0);
  std::sort(out.begin(), out.end(),
            [](const Combo& a, const Combo& b) { return a.bytes != b.bytes ? a.bytes < b.bytes : a.error < b.error; });
  return out;
}

// The brute-force answer for any budget: prefix minima of the error over the combinations sorted by bytes.
struct Brute {
  std::vector<int64_t> bytes;
  std::vector<double> prefix_min;
  std::vector<CurvePoint> curve;  // Pareto sweep of the sorted combinations
  explicit Brute(const std::vector<Combo>& combos) {
    double best = std::numeric_limits<double>::infinity();
    for (const Combo& c : combos) {
      if (c.error < best) curve.push_back({c.bytes, c.error});
      best = std::min(best, c.error);
      bytes.push_back(c.bytes);
      prefix_min.push_back(best);
    }
  }
  double optimum(int64_t budget) const {  // +inf when nothing fits
    const size_t k = std::upper_bound(bytes.begin(), bytes.end(), budget) - bytes.begin();
    return k == 0 ? std::numeric_limits<double>::infinity() : prefix_min[k - 1];
  }
};

bool near(double a, double b, double rel) {
  return std::fabs(a - b) <= rel * std::max({1e-300, std::fabs(a), std::fabs(b)});
}

// Checks one result: a valid, allowed choice that fits, with the reported totals.
void check_result(const Layers& layers, const AllocConstraints& k, const AllocResult& r, int64_t budget) {
  ASSERT_EQ(r.choice.size(), layers.size());
  int64_t bytes = 0;
  double error = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    ASSERT_GE(r.choice[l], 0);
    ASSERT_LT(r.choice[l], static_cast<int>(layers[l].size()));
    EXPECT_TRUE(allowed_by(k, static_cast<int>(l), r.choice[l])) << "layer " << l;
    bytes += layers[l][r.choice[l]].bytes;
    error += layers[l][r.choice[l]].error;
  }
  EXPECT_TRUE(groups_hold(k, r.choice));
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_DOUBLE_EQ(r.error, error);
  EXPECT_LE(r.bytes, budget);
}

// Random layers: bytes from a small range (duplicates and zero likely) or a wide one; errors either dyadic
// (k/64, so that every sum is exact and ties are real ties) or continuous.
Layers random_layers(std::mt19937_64& rng, int nl, const std::vector<int>& counts, bool dyadic) {
  Layers layers(nl);
  const bool small_bytes = rng() % 2 == 0;
  for (int l = 0; l < nl; ++l)
    for (int c = 0; c < counts[l]; ++c) {
      AllocOption o;
      o.bytes = small_bytes ? static_cast<int64_t>(rng() % 12) : static_cast<int64_t>(rng() % 100000);
      if (dyadic)
        o.error = static_cast<double>(rng() % 40) / 64.0;
      else
        o.error = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * std::pow(10.0, -static_cast<int>(rng() % 4));
      layers[l].push_back(o);
    }
  return layers;
}

// Budgets to try: every distinct achievable total (a sample when there are many), its neighbours, and the ends.
std::vector<int64_t> budgets_for(const std::vector<Combo>& combos, std::mt19937_64& rng) {
  std::vector<int64_t> totals;
  for (const Combo& c : combos)
    if (totals.empty() || totals.back() != c.bytes) totals.push_back(c.bytes);
  std::vector<int64_t> out;
  if (totals.size() > 120) {
    std::vector<int64_t> sample;
    for (int i = 0; i < 120; ++i) sample.push_back(totals[rng() % totals.size()]);
    totals.swap(sample);
    totals.push_back(combos.front().bytes);
    totals.push_back(combos.back().bytes);
  }
  for (int64_t t : totals) {
    out.push_back(t);
    out.push_back(t + 1);
    if (t > 0) out.push_back(t - 1);
  }
  out.push_back(std::numeric_limits<int64_t>::max());
  return out;
}

// Runs one instance against the brute force; returns false when the constraints leave nothing feasible (and then
// checks that the constructor refuses it).
bool check_instance(const Layers& layers, const AllocConstraints& k, bool exact_sums, std::mt19937_64& rng) {
  const std::vector<Combo> combos = enumerate(layers, k);
  if (combos.empty()) {
    EXPECT_THROW(BudgetAllocator(layers, k), Error);
    return false;
  }
  const Brute brute(combos);
  const BudgetAllocator alloc(layers, k);
  EXPECT_EQ(alloc.num_layers(), static_cast<int>(layers.size()));
  EXPECT_EQ(alloc.min_bytes(), combos.front().bytes);

  // The curve: the brute-force Pareto sweep, point for point.
  const std::vector<CurvePoint> curve = alloc.tradeoff_curve();
  EXPECT_EQ(curve.size(), brute.curve.size());
  for (size_t i = 0; i < std::min(curve.size(), brute.curve.size()); ++i) {
    EXPECT_EQ(curve[i].bytes, brute.curve[i].bytes) << "point " << i;
    if (exact_sums)
      EXPECT_EQ(curve[i].error, brute.curve[i].error) << "point " << i;
    else
      EXPECT_TRUE(near(curve[i].error, brute.curve[i].error, 1e-12)) << "point " << i;
  }
  for (size_t i = 1; i < curve.size(); ++i) {
    EXPECT_LT(curve[i - 1].bytes, curve[i].bytes);
    EXPECT_GT(curve[i - 1].error, curve[i].error);
  }
  EXPECT_EQ(alloc.max_bytes(), brute.curve.back().bytes);

  // solve() at many budgets.
  EXPECT_THROW(alloc.solve(alloc.min_bytes() - 1), Error);
  for (int64_t budget : budgets_for(combos, rng)) {
    if (budget < alloc.min_bytes()) continue;
    const AllocResult r = alloc.solve(budget);
    check_result(layers, k, r, budget);
    const double opt = brute.optimum(budget);
    EXPECT_TRUE(near(r.error, opt, 1e-9)) << "budget " << budget << ": " << r.error << " vs " << opt;
    EXPECT_TRUE(near(alloc.optimal_error(budget), opt, 1e-9)) << "budget " << budget;
  }
  return true;
}

std::vector<int> random_counts(std::mt19937_64& rng, int nl, int max_options) {
  std::vector<int> counts(nl);
  for (int& c : counts) c = 1 + static_cast<int>(rng() % max_options);
  return counts;
}

// Random constraints: some pins, some masks, some groups (whose members get equal option counts beforehand).
AllocConstraints random_constraints(std::mt19937_64& rng, const Layers& layers, bool pins, bool masks,
                                    const std::vector<std::vector<int>>& groups) {
  AllocConstraints k;
  const int nl = static_cast<int>(layers.size());
  if (pins) {
    k.pinned.assign(nl, -1);
    for (int l = 0; l < nl; ++l)
      if (rng() % 4 == 0) k.pinned[l] = static_cast<int>(rng() % layers[l].size());
  }
  if (masks) {
    k.allowed.resize(nl);
    for (int l = 0; l < nl; ++l) {
      if (rng() % 3 == 0) continue;  // empty = all allowed
      k.allowed[l].resize(layers[l].size());
      for (auto& a : k.allowed[l]) a = rng() % 3 != 0;
      k.allowed[l][rng() % layers[l].size()] = 1;
    }
  }
  k.groups = groups;
  return k;
}

}  // namespace

TEST(BudgetAllocator, MatchesBruteForceDyadic) {
  std::mt19937_64 rng(12345);
  for (int t = 0; t < 800; ++t) {
    const int nl = 1 + static_cast<int>(rng() % 6);
    const Layers layers = random_layers(rng, nl, random_counts(rng, nl, 8), true);
    SCOPED_TRACE("instance " + std::to_string(t));
    check_instance(layers, {}, true, rng);
  }
}

TEST(BudgetAllocator, MatchesBruteForceContinuous) {
  std::mt19937_64 rng(777);
  for (int t = 0; t < 400; ++t) {
    const int nl = 1 + static_cast<int>(rng() % 6);
    const Layers layers = random_layers(rng, nl, random_counts(rng, nl, 8), false);
    SCOPED_TRACE("instance " + std::to_string(t));
    check_instance(layers, {}, false, rng);
  }
}

TEST(BudgetAllocator, MatchesBruteForceWithConstraints) {
  std::mt19937_64 rng(2024);
  int feasible = 0;
  for (int t = 0; t < 1200; ++t) {
    const int nl = 1 + static_cast<int>(rng() % 6);
    std::vector<int> counts = random_counts(rng, nl, 8);
    // Groups: a random partition of a random subset of the layers into groups of >= 1; equal option counts.
    std::vector<std::vector<int>> groups;
    if (rng() % 2) {
      std::vector<int> perm(nl);
      for (int l = 0; l < nl; ++l) perm[l] = l;
      std::shuffle(perm.begin(), perm.end(), rng);
      const int ng = 1 + static_cast<int>(rng() % 3);
      size_t at = 0;
      for (int g = 0; g < ng && at < perm.size(); ++g) {
        const size_t size = 1 + rng() % 3;
        std::vector<int> group(perm.begin() + at, perm.begin() + std::min(perm.size(), at + size));
        at += group.size();
        for (int l : group) counts[l] = counts[group[0]];
        if (rng() % 4 == 0) group.push_back(group[0]);  // a layer listed twice is fine
        groups.push_back(group);
      }
    }
    const Layers layers = random_layers(rng, nl, counts, true);
    const int kind = static_cast<int>(rng() % 4);  // pins / masks / both / groups only
    const AllocConstraints k = random_constraints(rng, layers, kind == 0 || kind == 2, kind == 1 || kind == 2, groups);
    SCOPED_TRACE("instance " + std::to_string(t));
    feasible += check_instance(layers, k, true, rng);
  }
  EXPECT_GT(feasible, 800);  // most are feasible; the rest checked the constructor's refusal
}

TEST(BudgetAllocator, OverlappingGroupsMerge) {
  // Groups {0,1} and {1,2} tie all three layers together.
  const Layers layers = {{{1, 3.0}, {5, 1.0}}, {{1, 3.0}, {5, 1.0}}, {{1, 3.0}, {5, 1.0}}, {{2, 2.0}, {4, 0.5}}};
  AllocConstraints k;
  k.groups = {{0, 1}, {1, 2}};
  const BudgetAllocator a(layers, k);
  EXPECT_EQ(a.min_bytes(), 5);
  EXPECT_EQ(a.max_bytes(), 19);
  const AllocResult r = a.solve(17);
  EXPECT_EQ(r.choice, (std::vector<int>{1, 1, 1, 0}));
  EXPECT_EQ(r.bytes, 17);
  EXPECT_DOUBLE_EQ(r.error, 5.0);
  const AllocResult r2 = a.solve(16);
  EXPECT_EQ(r2.choice, (std::vector<int>{0, 0, 0, 1}));
}

TEST(BudgetAllocator, AllPinned) {
  const Layers layers = {{{10, 1.0}, {20, 0.5}}, {{5, 2.0}, {7, 0.1}, {9, 0.0}}, {{0, 0.25}}};
  AllocConstraints k;
  k.pinned = {1, 0, 0};
  const BudgetAllocator a(layers, k);
  EXPECT_EQ(a.min_bytes(), 25);
  EXPECT_EQ(a.max_bytes(), 25);
  for (int64_t budget : {int64_t{25}, int64_t{26}, int64_t{1000}, std::numeric_limits<int64_t>::max()}) {
    const AllocResult r = a.solve(budget);
    EXPECT_EQ(r.choice, (std::vector<int>{1, 0, 0}));
    EXPECT_EQ(r.bytes, 25);
    EXPECT_DOUBLE_EQ(r.error, 2.75);
  }
  EXPECT_THROW(a.solve(24), Error);
  const std::vector<CurvePoint> curve = a.tradeoff_curve();
  ASSERT_EQ(curve.size(), 1u);
  EXPECT_EQ(curve[0].bytes, 25);
  EXPECT_DOUBLE_EQ(curve[0].error, 2.75);
}

TEST(BudgetAllocator, NoLayers) {
  const BudgetAllocator a({});
  EXPECT_EQ(a.min_bytes(), 0);
  EXPECT_EQ(a.max_bytes(), 0);
  EXPECT_TRUE(a.solve(0).choice.empty());
  EXPECT_EQ(a.tradeoff_curve().size(), 1u);
  EXPECT_THROW(a.solve(-1), Error);
}

TEST(BudgetAllocator, TiesAreBrokenDeterministically) {
  // Exact duplicates and equal-error options: the lowest index among identical options is kept.
  const Layers layers = {{{4, 1.0}, {4, 1.0}, {8, 0.5}, {8, 0.5}}, {{4, 1.0}, {8, 0.5}, {4, 1.0}}};
  const BudgetAllocator a(layers);
  const AllocResult r = a.solve(12);
  EXPECT_DOUBLE_EQ(r.error, 1.5);
  EXPECT_EQ(r.bytes, 12);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.solve(12).choice, r.choice);
  EXPECT_EQ(a.solve(8).choice, (std::vector<int>{0, 0}));
  EXPECT_EQ(a.solve(16).choice, (std::vector<int>{2, 1}));
}

namespace {

// Expects lorq::Error whose message contains every fragment.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no lorq::Error thrown; expected one mentioning " << fragments[0];
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "'" << frag << "' not in: " << msg;
  }
}

}  // namespace

TEST(BudgetAllocator, RejectsInvalidInput) {
  const Layers ok = {{{1, 1.0}, {2, 0.5}}, {{1, 1.0}, {3, 0.2}, {4, 0.1}}, {{2, 0.3}, {5, 0.0}}};
  auto with = [&](int l, int c, AllocOption o) {
    Layers x = ok;
    x[l][c] = o;
    return x;
  };
  expect_error([&] { BudgetAllocator a(with(1, 2, {-5, 0.1})); }, {"layer 1", "option 2", "negative size", "-5"});
  expect_error([&] { BudgetAllocator a(with(2, 0, {2, std::nan("")})); }, {"layer 2", "option 0", "not finite"});
  expect_error([&] { BudgetAllocator a(with(0, 1, {2, HUGE_VAL})); }, {"layer 0", "option 1", "not finite"});
  expect_error([&] { BudgetAllocator a(with(0, 0, {1, -0.5})); }, {"layer 0", "negative error"});
  {
    Layers x = ok;
    x[1].clear();
    expect_error([&] { BudgetAllocator a(x); }, {"layer 1", "no options"});
  }
  {
    AllocConstraints k;
    k.pinned = {0, 3, -1};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"layer 1", "pinned option 3", "out of range"});
    k.pinned = {0, -2, -1};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"layer 1", "pinned option -2"});
    k.pinned = {0, 1};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"pinned", "2 entries", "3 layers"});
  }
  {
    AllocConstraints k;
    k.allowed = {{}, {1, 0}, {}};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"layer 1", "mask", "2 entries", "3 options"});
    k.allowed = {{}, {0, 0, 0}, {}};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"layer 1", "every option is excluded"});
    k.allowed = {{}, {1, 0, 1}, {}};
    k.pinned = {-1, 1, -1};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"layer 1", "pinned option 1", "excluded"});
    k.pinned.clear();
    k.allowed = {{}};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"allowed", "1 entries", "3 layers"});
  }
  {
    AllocConstraints k;
    k.groups = {{0, 7}};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"groups[0]", "layer index 7", "out of range"});
    k.groups = {{2}, {0, 1}};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"groups[1]", "layer 0 has 2 options", "layer 1 has 3"});
    k.groups = {{0, 2}};
    k.pinned = {0, -1, 1};
    expect_error([&] { BudgetAllocator a(ok, k); }, {"layers 0, 2", "no option index is allowed"});
  }
  {
    const int64_t big = std::numeric_limits<int64_t>::max() / 2 + 1;
    expect_error([&] { BudgetAllocator a({{{big, 0.0}}, {{big, 0.0}}}); }, {"overflows"});
    expect_error([&] { BudgetAllocator a({{{1, 1e308}}, {{1, 1e308}}}); }, {"overflows"});
  }
  const BudgetAllocator a(ok);
  expect_error([&] { a.solve(3); }, {"budget of 3 bytes", "4 bytes", "min_bytes"});
  expect_error([&] { a.optimal_error(2); }, {"budget of 2 bytes", "4 bytes"});
}

TEST(BudgetAllocator, BudgetHelpers) {
  // Spec §2.5: DeiT-S, 21,912,576 compressed weights, W3 budget 8.22 MB.
  EXPECT_EQ(budget_bytes_for_avg_bits(3.0, 21912576), 8217216);
  EXPECT_EQ(budget_bytes_for_ratio(32.0 / 3.0, 21912576), 8217216);
  EXPECT_EQ(budget_bytes_for_avg_bits(8.0, 1000), 1000);
  EXPECT_EQ(budget_bytes_for_avg_bits(4.1, 1000000), 512500);  // 4.1 is not exact in binary
  EXPECT_EQ(budget_bytes_for_avg_bits(3.0, 7), 2);             // floor(21 / 8)
  EXPECT_EQ(budget_bytes_for_ratio(8.0, 1000), 500);
  EXPECT_EQ(budget_bytes_for_ratio(3.0, 10), 13);  // floor(40 / 3)
  EXPECT_EQ(budget_bytes_for_avg_bits(0.0, 1000), 0);
  expect_error([] { budget_bytes_for_avg_bits(-1.0, 10); }, {"bit-width"});
  expect_error([] { budget_bytes_for_avg_bits(std::nan(""), 10); }, {"bit-width"});
  expect_error([] { budget_bytes_for_avg_bits(3.0, -10); }, {"negative weight count"});
  expect_error([] { budget_bytes_for_ratio(0.0, 10); }, {"ratio"});
  expect_error([] { budget_bytes_for_ratio(-2.0, 10); }, {"ratio"});
  expect_error([] { budget_bytes_for_avg_bits(1e300, 10); }, {"overflows"});
}

namespace {

// A DeiT-Base-like instance: 50 layers with ~250 options each, sizes from the spec's formulas and synthetic,
// Pareto-ish errors (see bench/allocator.cpp for the fuller generator).
Layers realistic_instance(uint64_t seed, int64_t dim) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  struct Shape {
    int64_t m, n;
    bool lr;
  };
  std::vector<Shape> shapes = {{dim, 768, false}};
  for (int b = 0; b < 12; ++b) {
    shapes.push_back({3 * dim, dim, true});
    shapes.push_back({dim, dim, true});
    shapes.push_back({4 * dim, dim, true});
    shapes.push_back({dim, 4 * dim, true});
  }
  shapes.push_back({1000, dim, true});
  Layers layers;
  for (const Shape& s : shapes) {
    const double sens = std::pow(10.0, -3.0 + 1.5 * (1.0 + u(rng)));
    std::vector<AllocOption> opts;
    for (int b : {2, 3, 4, 6, 8}) opts.push_back({b * s.m * s.n / 8, sens * std::pow(4.0, 2 - b) * (1 + 0.1 * u(rng))});
    if (s.lr) {
      const int64_t k = std::min(s.m, s.n);
      for (int ba : {4, 6, 8})
        for (int bb : {4, 6, 8}) {
          const int64_t rmax = std::min(k, (8 * s.m * s.n - 1) / (s.m * ba + s.n * bb));
          for (int j = 0; j < 27; ++j) {
            const int64_t r = 2 + (rmax - 2) * j / 26;
            const double tail = std::pow(1.0 - static_cast<double>(r) / k, 1.5);
            const double q = (std::pow(4.0, 2 - ba) + std::pow(4.0, 2 - bb)) * (1 - tail) * 0.6;
            opts.push_back({r * (s.m * ba + s.n * bb) / 8, sens * (2 * tail + q) * (1 + 0.05 * u(rng))});
          }
        }
    }
    layers.push_back(std::move(opts));
  }
  return layers;
}

}  // namespace

TEST(BudgetAllocator, RealisticInstanceSolveMatchesCurve) {
  const Layers layers = realistic_instance(5, 768);
  ASSERT_EQ(layers.size(), 50u);
  const BudgetAllocator a(layers);
  const std::vector<CurvePoint> curve = a.tradeoff_curve();
  ASSERT_FALSE(curve.empty());
  EXPECT_EQ(curve.front().bytes, a.min_bytes());
  EXPECT_EQ(curve.back().bytes, a.max_bytes());
  std::mt19937_64 rng(9);
  for (int i = 0; i < 100; ++i) {
    // Half spread evenly, half at curve breakpoints (where the optimum just became reachable) or one byte below.
    int64_t budget = a.min_bytes() + (a.max_bytes() - a.min_bytes()) * i / 99;
    if (i % 2) {
      const CurvePoint& p = curve[rng() % curve.size()];
      budget = p.bytes - (i % 4 == 1 && p.bytes > a.min_bytes() ? 1 : 0);
    }
    const AllocResult r = a.solve(budget);
    check_result(layers, {}, r, budget);
    EXPECT_TRUE(near(r.error, a.optimal_error(budget), 1e-9)) << "budget " << budget;
  }
}

TEST(BudgetAllocator, ConstraintsOnRealisticInstance) {
  // Pins, masks (e.g. "at least 4 bits": only options 2.. of the Q family) and one group per block type; the
  // curve and solve() must agree, and the constraints must hold.
  const Layers layers = realistic_instance(6, 192);
  AllocConstraints k;
  k.pinned.assign(layers.size(), -1);
  k.pinned[0] = 2;
  k.allowed.resize(layers.size());
  k.allowed[5].assign(layers[5].size(), 1);
  k.allowed[5][0] = k.allowed[5][1] = 0;
  k.groups = {{1, 5, 9}, {4, 8}};
  const BudgetAllocator a(layers, k);
  for (int i = 0; i <= 40; ++i) {
    const int64_t budget = a.min_bytes() + (a.max_bytes() - a.min_bytes()) * i / 40;
    const AllocResult r = a.solve(budget);
    check_result(layers, k, r, budget);
    EXPECT_TRUE(near(r.error, a.optimal_error(budget), 1e-9)) << "budget " << budget;
  }
}

TEST(BudgetAllocator, CopiesAndThreads) {
  const Layers layers = realistic_instance(7, 192);
  const BudgetAllocator a(layers);
  const BudgetAllocator b = a;  // copies share the (immutable) problem and the curve cache
  const int64_t budget = a.min_bytes() + (a.max_bytes() - a.min_bytes()) / 3;
  const AllocResult ra = a.solve(budget);
  std::vector<AllocResult> rs(4);
  std::vector<size_t> sizes(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      const BudgetAllocator& x = t % 2 ? a : b;
      sizes[t] = x.tradeoff_curve().size();
      rs[t] = x.solve(budget);
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(rs[t].choice, ra.choice);
    EXPECT_EQ(sizes[t], sizes[0]);
  }
}
