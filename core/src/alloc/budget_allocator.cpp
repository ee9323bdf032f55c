// Exact multiple-choice knapsack for the inter-layer stage (spec §7). Plain C++17, no dependencies.
//
// Notation: L layers, K options per layer, "item" = a free layer or a group of layers tied to one option index
// (a group is one item whose option costs are summed over its members). P = Pareto options of an item, H = its
// convex hull vertices (H <= P <= K), S = all hull segments of all items (S < sum of H).
//
// Preprocessing (constructor), O(L*K log K + n*S):
//   1. Validate; merge groups (union-find); intersect pins and masks into each item's allowed option set.
//   2. Reduce each item to its Pareto front: sort by (bytes, error, index), keep strictly decreasing errors, so of
//      exact ties the lowest option index is kept. Dominated options are never needed: swapping one for its
//      dominating option keeps any solution feasible and no worse. Items left with one option are folded into a
//      constant (this is where pins end up).
//   3. Lower convex hull of each front (monotone chain), and all hull segments sorted by slope = error decrease
//      per byte. The greedy over that order is the LP relaxation of the knapsack at every budget (Sinha-Zoltners /
//      Dyer-Zemel): take the first min_bytes, then segments in slope order, the last one fractionally. Stopping
//      before the fractional segment gives a feasible integer solution (each item's taken segments are a prefix
//      of its own hull, because slopes strictly decrease along a hull).
//   4. The DP order (below) and, per suffix of it, the LP relaxation of the remaining items as a table (their
//      hull segments in slope order with prefix sums): O(n*S) time and memory, n = number of items (a few MB for
//      50 layers x 250 options; 12.5 MB at worst when every option is a hull vertex).
//
// solve(budget): dynamic programming over the items in a fixed order, whose states after j items are the Pareto
// set of (bytes, error) partial sums, each with a back-pointer; the optimum is the last state. Unbounded, that is
// the trade-off curve below restricted to the budget; what makes it fast is bounding (a branch and bound whose
// equivalent branches are merged by dominance):
//   * incumbent UB: a feasible total. It starts as the LP-rounded solution, greedily filled up to the budget, and
//     is improved at every new state by completing it with the remaining items' LP-rounded solution.
//   * Lagrangian bound, O(1) per state and option: with lambda = the LP dual (slope of the fractional segment at
//     the budget), every completion of a state (b, e) costs at least e + sum_rest min_c(e_c + lambda*b_c)
//     - lambda*(budget - b). Extending by option c adds its reduced cost rc_c - min rc >= 0, so each item's
//     options are visited in reduced-cost order and the scan stops at the first one over the state's slack.
//   * LP bound of the remaining items at the residual budget (a binary search in the suffix's table): a state is
//     kept only if e + LP_rest(budget - b) <= limit.
//   * capacity: b + (minimum bytes of the remaining items) <= budget.
//   * limit = min(UB, LB + delta), delta growing 8x per round from (UB - LB)/256, LB = the LP bound at the root:
//     a round that keeps any final state has found the optimum (see solve()); one that keeps none proves
//     OPT > limit and is redone with a larger delta. Tight limits keep the early stages small, where the
//     incumbent is still weak; failed rounds are cheap because they are tight.
//   Items go in decreasing order of their error range, so the items that matter most are decided while the
//   states are few. A stage files its candidates by option (each option's run is then a staircase, as states are
//   visited in byte order) and Pareto-merges the runs with the skipping k-way merge described below.
//   Pruning compares lower bounds with achievable totals (or with a limit that the result is checked against),
//   with a tolerance far above floating-point summation error (1e-10 of the magnitudes), so the optimal path is
//   never cut: the result is exact. The worst case is the full Pareto DP (bounded by the frontier size below).
//   Measured (bench/allocator.cpp, 2-core machine) on 50 layers x ~250 options: 0.02-0.3 ms per solve at
//   typical budgets; the worst of 1600 budgets per instance type was under 3 ms CPU for DeiT-Base-sized and
//   about 6 ms for one DeiT-Tiny-sized stress instance; tens to a few hundred states per stage (up to ~800).
//   Budgets >= max_bytes() are answered directly. Buffers are thread-local and reused, so
//   concurrent solves are safe and a solve allocates only its result.
//
// tradeoff_curve(): Pareto merge of the item fronts, one item at a time (in increasing order of their byte range,
// which keeps the intermediate frontiers smaller): F <- Pareto(F (+) G) where (+) is the Minkowski sum. The merge
// is a |G|-way merge of the shifted copies F + g in byte order with a running best error E; a cursor whose
// candidate is dominated (error >= E) jumps ahead by galloping search to the first point of its copy below E
// (E only decreases, so the skipped points are dominated too). The cost is O((|result| + jumps) * log|G|) heap
// operations per merge (plus the galloping), instead of |F|*|G|; the result is the exact optimal-error step
// function with strictly increasing bytes and strictly decreasing error. Its size is data dependent (at most
// max_bytes - min_bytes + 1): for DeiT-Base-sized instances 1e5 to 3.3e5 breakpoints, computed in about 0.1 to
// 0.5 s, the sum of the intermediate frontiers (2e6 to 6e6 points) being the work. (Pruning intermediate points
// that cannot extend to an optimal solution, by Lagrangian reduced cost against the LP gap, was tried: nearly all
// of them can, so it saved under 5%.)
#include "lorq/alloc/budget_allocator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>

#include "lorq/common/error.h"

namespace lorq {

class BudgetAllocator::CurveCache {
 public:
  std::once_flag once;
  std::vector<CurvePoint> curve;
};

namespace {

const std::string kWho = "budget allocator: ";
constexpr int64_t kMaxBytes = std::numeric_limits<int64_t>::max();

std::string num(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

int64_t add_bytes(int64_t a, int64_t b, const std::string& what) {  // both >= 0
  if (a > kMaxBytes - b) throw Error(kWho + what + ": the summed size overflows 64-bit bytes");
  return a + b;
}

std::string layer_list(const std::vector<int>& layers) {
  std::string s;
  for (size_t i = 0; i < layers.size(); ++i) s += (i ? ", " : "") + std::to_string(layers[i]);
  return s;
}

int find_root(std::vector<int>& parent, int x) {
  while (parent[x] != x) x = parent[x] = parent[parent[x]];
  return x;
}

// Pareto(F (+) G): see the file comment. F and G have strictly increasing bytes and strictly decreasing errors.
std::vector<CurvePoint> pareto_merge(const std::vector<CurvePoint>& f, const std::vector<CurvePoint>& g) {
  // A binary min-heap of the |G| cursors keyed by (bytes, cursor), with an in-place "replace top".
  struct Entry {
    int64_t bytes;
    int g;  // cursor = index into g
  };
  const int nf = static_cast<int>(f.size()), ng = static_cast<int>(g.size());
  std::vector<int> pos(ng, 0);  // per cursor: index into f
  std::vector<Entry> heap(ng);
  for (int j = 0; j < ng; ++j) heap[j] = {f[0].bytes + g[j].bytes, j};  // sorted, hence a heap
  int size = ng;
  auto less = [](const Entry& a, const Entry& b) { return a.bytes < b.bytes || (a.bytes == b.bytes && a.g < b.g); };
  auto sift_down = [&](Entry e) {
    int i = 0;
    for (;;) {
      int c = 2 * i + 1;
      if (c >= size) break;
      if (c + 1 < size && less(heap[c + 1], heap[c])) ++c;
      if (!less(heap[c], e)) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = e;
  };
  std::vector<CurvePoint> out;
  out.reserve(f.size() + g.size());
  double best = std::numeric_limits<double>::infinity();
  while (size > 0) {
    const Entry top = heap[0];
    const int j = top.g;
    const int i = pos[j];
    const double ge = g[j].error;
    const double e = f[i].error + ge;
    int next;
    if (e < best) {
      // Same bytes as the last point but less error (cursors with equal bytes pop in any error order): replace.
      if (!out.empty() && out.back().bytes == top.bytes)
        out.back().error = e;
      else
        out.push_back({top.bytes, e});
      best = e;
      next = i + 1;
    } else {
      // Dominated, and so is every later point of this cursor with error >= best (best only falls): skip to the
      // first index with f[next].error + ge < best (a monotone predicate, as f's error falls): gallop, then bisect.
      int lo = i, step = 1, hi = i + 1;  // invariant: f[lo] fails
      while (hi < nf && !(f[hi].error + ge < best)) {
        lo = hi;
        step *= 2;
        hi = i + step;
      }
      if (hi > nf) hi = nf;
      while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (f[mid].error + ge < best)
          hi = mid;
        else
          lo = mid;
      }
      next = hi;
    }
    if (next < nf) {
      pos[j] = next;
      sift_down({f[next].bytes + g[j].bytes, j});
    } else {
      sift_down(heap[--size]);
    }
  }
  return out;
}

// floor(x) for a non-negative byte count, taking x within rounding noise of an integer as that integer.
int64_t floor_bytes(long double x, const std::string& what) {
  if (!(x >= 0)) throw Error(kWho + what + ": the budget is negative or not a number");
  if (x >= 9.2e18L) throw Error(kWho + what + ": the budget overflows 64-bit bytes");
  const long double r = std::nearbyintl(x);
  if (std::fabs(x - r) <= 1e-12L * std::max(1.0L, x)) return static_cast<int64_t>(r);
  return static_cast<int64_t>(std::floor(x));
}

}  // namespace

BudgetAllocator::BudgetAllocator(std::vector<std::vector<AllocOption>> layers, AllocConstraints constraints)
    : layers_(std::move(layers)), curve_cache_(std::make_shared<CurveCache>()) {
  const int nl = static_cast<int>(layers_.size());
  if (layers_.size() > static_cast<size_t>(std::numeric_limits<int>::max())) throw Error(kWho + "too many layers");
  for (int l = 0; l < nl; ++l) {
    const auto& opts = layers_[l];
    const std::string where = "layer " + std::to_string(l);
    if (opts.empty()) throw Error(kWho + where + " has no options");
    if (opts.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
      throw Error(kWho + where + ": too many options");
    for (size_t c = 0; c < opts.size(); ++c) {
      const std::string at = where + ", option " + std::to_string(c);
      if (opts[c].bytes < 0) throw Error(kWho + at + ": negative size " + std::to_string(opts[c].bytes) + " bytes");
      if (!std::isfinite(opts[c].error)) throw Error(kWho + at + ": error is not finite (" + num(opts[c].error) + ")");
      if (opts[c].error < 0) throw Error(kWho + at + ": negative error " + num(opts[c].error));
    }
  }

  // Pins and masks, checked per layer so that the message names the layer.
  const auto& pinned = constraints.pinned;
  const auto& allowed = constraints.allowed;
  if (!pinned.empty() && pinned.size() != layers_.size())
    throw Error(kWho + "constraints.pinned has " + std::to_string(pinned.size()) + " entries for " +
                std::to_string(nl) + " layers");
  if (!allowed.empty() && allowed.size() != layers_.size())
    throw Error(kWho + "constraints.allowed has " + std::to_string(allowed.size()) + " entries for " +
                std::to_string(nl) + " layers");
  auto is_allowed = [&](int l, int c) {
    if (!pinned.empty() && pinned[l] >= 0 && pinned[l] != c) return false;
    return allowed.empty() || allowed[l].empty() || allowed[l][c] != 0;
  };
  for (int l = 0; l < nl; ++l) {
    const int n = static_cast<int>(layers_[l].size());
    const std::string where = "layer " + std::to_string(l);
    if (!pinned.empty() && (pinned[l] < -1 || pinned[l] >= n))
      throw Error(kWho + where + ": pinned option " + std::to_string(pinned[l]) + " is out of range (" +
                  std::to_string(n) + " options; -1 = free)");
    if (!allowed.empty() && !allowed[l].empty() && allowed[l].size() != layers_[l].size())
      throw Error(kWho + where + ": the allowed mask has " + std::to_string(allowed[l].size()) + " entries for " +
                  std::to_string(n) + " options");
    bool any = false;
    for (int c = 0; c < n && !any; ++c) any = is_allowed(l, c);
    if (!any) {
      if (!pinned.empty() && pinned[l] >= 0)
        throw Error(kWho + where + ": pinned option " + std::to_string(pinned[l]) + " is excluded by its allowed mask");
      throw Error(kWho + where + ": every option is excluded by its allowed mask");
    }
  }

  // Groups: union-find over layers.
  std::vector<int> parent(nl);
  std::iota(parent.begin(), parent.end(), 0);
  for (size_t g = 0; g < constraints.groups.size(); ++g) {
    const auto& group = constraints.groups[g];
    const std::string where = "constraints.groups[" + std::to_string(g) + "]";
    for (int l : group)
      if (l < 0 || l >= nl)
        throw Error(kWho + where + ": layer index " + std::to_string(l) + " is out of range (" + std::to_string(nl) +
                    " layers)");
    for (int l : group) {
      if (layers_[l].size() != layers_[group[0]].size())
        throw Error(kWho + where + ": layer " + std::to_string(group[0]) + " has " +
                    std::to_string(layers_[group[0]].size()) + " options but layer " + std::to_string(l) + " has " +
                    std::to_string(layers_[l].size()) + " (grouped layers need option lists of equal length)");
      parent[find_root(parent, l)] = find_root(parent, group[0]);
    }
  }

  // Items, ordered by their lowest layer; each reduced to its Pareto front.
  fixed_choice_.assign(nl, -1);
  std::vector<int> item_of_root(nl, -1);
  std::vector<std::vector<int>> members;
  for (int l = 0; l < nl; ++l) {
    const int r = find_root(parent, l);
    if (item_of_root[r] < 0) {
      item_of_root[r] = static_cast<int>(members.size());
      members.emplace_back();
    }
    members[item_of_root[r]].push_back(l);
  }
  for (auto& mem : members) {
    const std::string where = mem.size() == 1 ? "layer " + std::to_string(mem[0]) : "grouped layers " + layer_list(mem);
    std::vector<FrontPoint> opts;
    const int n = static_cast<int>(layers_[mem[0]].size());
    for (int c = 0; c < n; ++c) {
      bool ok = true;
      for (int l : mem) ok = ok && is_allowed(l, c);
      if (!ok) continue;
      FrontPoint p{0, 0.0, c};
      for (int l : mem) {
        p.bytes = add_bytes(p.bytes, layers_[l][c].bytes, where);
        p.error += layers_[l][c].error;
      }
      if (!std::isfinite(p.error)) throw Error(kWho + where + ": the summed error overflows");
      opts.push_back(p);
    }
    if (opts.empty())
      throw Error(kWho + where + ": no option index is allowed for all of them (their pins or masks conflict)");
    std::sort(opts.begin(), opts.end(), [](const FrontPoint& a, const FrontPoint& b) {
      if (a.bytes != b.bytes) return a.bytes < b.bytes;
      if (a.error != b.error) return a.error < b.error;
      return a.option < b.option;
    });
    Item item;
    item.layers = mem;
    for (const FrontPoint& p : opts)
      if (item.front.empty() || p.error < item.front.back().error) item.front.push_back(p);
    if (item.front.size() == 1) {
      for (int l : mem) fixed_choice_[l] = item.front[0].option;
      fixed_bytes_ = add_bytes(fixed_bytes_, item.front[0].bytes, "the whole model");
      fixed_error_ += item.front[0].error;
      continue;
    }
    // Lower convex hull (monotone chain on the computed slopes, so they strictly decrease as stored).
    const auto& f = item.front;
    auto slope = [&](int a, int b) { return (f[a].error - f[b].error) / static_cast<double>(f[b].bytes - f[a].bytes); };
    auto& hull = item.hull;
    hull = {0};
    for (int j = 1; j < static_cast<int>(f.size()); ++j) {
      while (hull.size() >= 2 && !(slope(hull[hull.size() - 2], hull.back()) > slope(hull.back(), j))) hull.pop_back();
      hull.push_back(j);
    }
    for (size_t s = 1; s < hull.size(); ++s) {
      item.seg_bytes.push_back(f[hull[s]].bytes - f[hull[s - 1]].bytes);
      item.seg_gain.push_back(f[hull[s - 1]].error - f[hull[s]].error);
      item.seg_slope.push_back(slope(hull[s - 1], hull[s]));
    }
    items_.push_back(std::move(item));
  }

  min_bytes_ = max_bytes_ = fixed_bytes_;
  error_scale_ = fixed_error_;
  for (int i = 0; i < static_cast<int>(items_.size()); ++i) {
    const Item& item = items_[i];
    min_bytes_ = add_bytes(min_bytes_, item.front.front().bytes, "the whole model");
    max_bytes_ = add_bytes(max_bytes_, item.front.back().bytes, "the whole model");
    error_scale_ += item.front.front().error;
    for (size_t s = 0; s < item.seg_slope.size(); ++s)
      segments_.push_back({item.seg_slope[s], item.seg_bytes[s], item.seg_gain[s], i});
  }
  if (!std::isfinite(error_scale_)) throw Error(kWho + "the summed error of the whole model overflows");
  std::stable_sort(segments_.begin(), segments_.end(),
                   [](const Segment& a, const Segment& b) { return a.slope > b.slope; });
  segment_cum_bytes_.assign(1, 0);
  for (const Segment& s : segments_) segment_cum_bytes_.push_back(segment_cum_bytes_.back() + s.bytes);

  // DP order: by decreasing error range (first error minus last). Items that matter most are decided first,
  // while the states are few, and the suffix bounds of the later stages cover only small errors. Then the
  // per-suffix LP tables: suffix p holds the segments of items order_[p..], in the global slope order.
  const int n = static_cast<int>(items_.size());
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  auto error_range = [&](int i) { return items_[i].front.front().error - items_[i].front.back().error; };
  std::stable_sort(order_.begin(), order_.end(), [&](int a, int b) { return error_range(a) > error_range(b); });
  std::vector<int> pos(n);
  for (int p = 0; p < n; ++p) pos[order_[p]] = p;
  suf_minb_.assign(n + 1, 0);
  suf_base_.assign(n + 1, 0.0);
  for (int p = n - 1; p >= 0; --p) {
    suf_minb_[p] = suf_minb_[p + 1] + items_[order_[p]].front.front().bytes;
    suf_base_[p] = suf_base_[p + 1] + items_[order_[p]].front.front().error;
  }
  size_t total = 0;
  for (const Segment& s : segments_) total += pos[s.item] + 1;  // a segment is in suffixes 0..pos
  total += n + 1;
  suf_off_.assign(n + 2, 0);
  suf_cum_bytes_.reserve(total);
  suf_cum_gain_.reserve(total);
  suf_next_.reserve(total);
  for (int p = 0; p <= n; ++p) {
    suf_off_[p] = suf_cum_bytes_.size();
    int64_t b = 0;
    double g = 0;
    for (size_t k = 0; k < segments_.size(); ++k) {
      const Segment& s = segments_[k];
      if (pos[s.item] < p) continue;
      suf_cum_bytes_.push_back(b);
      suf_cum_gain_.push_back(g);
      suf_next_.push_back(static_cast<int>(k));
      b += s.bytes;
      g += s.gain;
    }
    suf_cum_bytes_.push_back(b);
    suf_cum_gain_.push_back(g);
    suf_next_.push_back(-1);
  }
  suf_off_[n + 1] = suf_cum_bytes_.size();
}

void BudgetAllocator::throw_below_min(int64_t budget_bytes) const {
  throw Error(kWho + "the budget of " + std::to_string(budget_bytes) +
              " bytes is below the smallest achievable total of " + std::to_string(min_bytes_) +
              " bytes (min_bytes) under the constraints");
}

AllocResult BudgetAllocator::make_result(std::vector<int> item_choice) const {
  AllocResult r;
  r.choice = fixed_choice_;
  for (size_t i = 0; i < items_.size(); ++i)
    for (int l : items_[i].layers) r.choice[l] = items_[i].front[item_choice[i]].option;
  for (size_t l = 0; l < layers_.size(); ++l) {
    r.bytes += layers_[l][r.choice[l]].bytes;
    r.error += layers_[l][r.choice[l]].error;
  }
  return r;
}

namespace {

// Per-thread buffers of solve(), kept between calls: a solve allocates nothing once they have grown.
struct SolveScratch {
  struct Cand {
    int64_t bytes;
    double error;
    int parent;  // state index in the previous stage
  };
  struct Head {
    int64_t bytes;
    double error;
    int run;
  };
  std::vector<double> min_rc, suf_minrc;
  std::vector<size_t> rc_off;                 // per item: its slice of rc
  std::vector<std::pair<double, int>> rc;     // (rc - min rc, front index), ascending per item
  std::vector<int> cur, taken;                // the greedy incumbent
  std::vector<int64_t> sb;                    // states of the current stage: bytes...
  std::vector<double> se;                     // ...and error
  std::vector<size_t> stage_off;              // per stage: its slice of back_parent / back_option
  std::vector<int> back_parent, back_option;  // per state of every stage
  std::vector<std::vector<Cand>> runs;        // candidates by option of the current item
  std::vector<size_t> at;                     // per run: its head
  std::vector<Head> heap;
};

}  // namespace

AllocResult BudgetAllocator::solve(int64_t budget_bytes) const {
  if (budget_bytes < min_bytes_) throw_below_min(budget_bytes);
  const int n = static_cast<int>(items_.size());
  std::vector<int> pick(n);
  if (budget_bytes >= max_bytes_) {
    for (int i = 0; i < n; ++i) pick[i] = static_cast<int>(items_[i].front.size()) - 1;
    return make_result(std::move(pick));
  }
  thread_local SolveScratch w;
  const int64_t cap = budget_bytes - fixed_bytes_;  // for the items

  // LP dual at the budget: the slope of the fractional segment (one exists, as budget < max_bytes).
  const int64_t z = budget_bytes - min_bytes_;
  const size_t split =
      std::upper_bound(segment_cum_bytes_.begin(), segment_cum_bytes_.end(), z) - segment_cum_bytes_.begin() - 1;
  const double lambda = segments_[split].slope;

  // Reduced costs rc_c = e_c + lambda * b_c: each item's options sorted by rc - min rc.
  w.min_rc.assign(n, 0.0);
  w.rc_off.assign(n + 1, 0);
  w.rc.clear();
  size_t max_front = 0;
  for (int i = 0; i < n; ++i) {
    const auto& f = items_[i].front;
    max_front = std::max(max_front, f.size());
    w.rc_off[i] = w.rc.size();
    double m = std::numeric_limits<double>::infinity();
    for (size_t c = 0; c < f.size(); ++c) {
      w.rc.emplace_back(f[c].error + lambda * static_cast<double>(f[c].bytes), static_cast<int>(c));
      m = std::min(m, w.rc.back().first);
    }
    for (size_t k = w.rc_off[i]; k < w.rc.size(); ++k) w.rc[k].first = std::max(0.0, w.rc[k].first - m);
    std::sort(w.rc.begin() + w.rc_off[i], w.rc.end());
    w.min_rc[i] = m;
  }
  w.rc_off[n] = w.rc.size();
  w.suf_minrc.assign(n + 1, 0.0);
  for (int p = n - 1; p >= 0; --p) w.suf_minrc[p] = w.suf_minrc[p + 1] + w.min_rc[order_[p]];

  // LP bound (lb) and LP-rounded feasible value (ub) of the items order_[p..] at residual budget y.
  auto lp_rest = [&](int p, int64_t y, double& lb, double& ub) {
    const int64_t zz = y - suf_minb_[p];
    if (zz < 0) return false;
    const auto first = suf_cum_bytes_.begin() + suf_off_[p], last = suf_cum_bytes_.begin() + suf_off_[p + 1];
    const size_t k = std::upper_bound(first, last, zz) - suf_cum_bytes_.begin() - 1;
    ub = suf_base_[p] - suf_cum_gain_[k];
    lb = suf_next_[k] < 0 ? ub : ub - static_cast<double>(zz - suf_cum_bytes_[k]) * segments_[suf_next_[k]].slope;
    return true;
  };

  // Incumbent: the LP-rounded solution (each item at the hull vertex its segments among the first `split`
  // reach), then greedily moved up: the item whose largest option that still fits gains most, until none fits.
  double lb0 = 0, ub = 0;
  lp_rest(0, cap, lb0, ub);
  {
    w.cur.assign(n, 0);
    w.taken.assign(n, 0);
    for (size_t k = 0; k < split; ++k) ++w.taken[segments_[k].item];
    int64_t used = 0;
    for (int i = 0; i < n; ++i) {
      w.cur[i] = items_[i].hull[w.taken[i]];
      used += items_[i].front[w.cur[i]].bytes;
    }
    for (;;) {
      int best_item = -1, best_option = 0;
      double best_gain = 0;
      for (int i = 0; i < n; ++i) {
        const auto& f = items_[i].front;
        const int64_t fits = f[w.cur[i]].bytes + (cap - used);
        const int c = static_cast<int>(std::upper_bound(f.begin() + w.cur[i], f.end(), fits,
                                                        [](int64_t b, const FrontPoint& q) { return b < q.bytes; }) -
                                       f.begin()) -
                      1;
        if (c > w.cur[i] && f[w.cur[i]].error - f[c].error > best_gain) {
          best_gain = f[w.cur[i]].error - f[c].error;
          best_item = i;
          best_option = c;
        }
      }
      if (best_item < 0) break;
      used += items_[best_item].front[best_option].bytes - items_[best_item].front[w.cur[best_item]].bytes;
      w.cur[best_item] = best_option;
    }
    double e = 0;
    for (int i = 0; i < n; ++i) e += items_[i].front[w.cur[i]].error;
    ub = std::min(ub, e);
  }
  // Pruning tolerance: far above the rounding error of any bound (sums of <= n terms of these magnitudes).
  const double tol = 1e-10 * (error_scale_ + lambda * static_cast<double>(max_bytes_)) + 1e-300;
  const double lambda_cap = lambda * static_cast<double>(cap);

  // Rounds: prune against limit = min(incumbent, lb0 + delta) with delta growing 8x per round. A round that
  // keeps any final state has found the optimum: pruning never cuts a state whose bound is <= limit, every
  // final state's error is <= limit + tol, and so the optimal path (error >= those) survived too. Rounds that
  // keep none prove OPT > limit; the last has limit = incumbent and always succeeds. A tight first limit keeps
  // the early stages small, where the incumbent is still weak.
  //
  // Within a stage, candidates are generated by state and filed by option: states are visited in byte order, so
  // each option's run is a staircase too (bytes up, error down) and the new states are their Pareto merge: a
  // k-way merge with a running best error, where a run whose head is dominated skips ahead by galloping.
  if (w.runs.size() < max_front) w.runs.resize(max_front);
  w.at.resize(std::max(w.at.size(), max_front));
  auto later = [](const SolveScratch::Head& a, const SolveScratch::Head& b) {
    if (a.bytes != b.bytes) return a.bytes > b.bytes;
    if (a.error != b.error) return a.error > b.error;
    return a.run > b.run;
  };
  for (double delta = (ub - lb0) / 256;; delta *= 8) {
    const double guess = lb0 + delta;
    w.sb.assign(1, 0);
    w.se.assign(1, 0.0);
    w.stage_off.assign(1, 0);
    w.back_parent.clear();
    w.back_option.clear();
    for (int p = 0; p < n && !w.sb.empty(); ++p) {
      const int it = order_[p];
      const auto& f = items_[it].front;
      const int64_t room = cap - suf_minb_[p + 1];
      const double limit = std::min(ub, guess) + tol;
      for (size_t c = 0; c < f.size(); ++c) w.runs[c].clear();
      for (size_t s = 0; s < w.sb.size(); ++s) {
        const double slack = limit - (w.se[s] + lambda * static_cast<double>(w.sb[s]) + w.suf_minrc[p] - lambda_cap);
        if (slack < 0) continue;
        double lb, u;
        if (p > 0 && (!lp_rest(p, cap - w.sb[s], lb, u) || w.se[s] + lb > limit)) continue;
        for (size_t k = w.rc_off[it]; k < w.rc_off[it + 1]; ++k) {
          const auto [d, c] = w.rc[k];
          if (d > slack) break;
          const int64_t nb = w.sb[s] + f[c].bytes;
          if (nb > room) continue;
          const double ne = w.se[s] + f[c].error;
          if (!lp_rest(p + 1, cap - nb, lb, u) || ne + lb > limit) continue;
          w.runs[c].push_back({nb, ne, static_cast<int>(s)});
        }
      }
      w.heap.clear();
      for (size_t c = 0; c < f.size(); ++c) {
        w.at[c] = 0;
        if (!w.runs[c].empty()) w.heap.push_back({w.runs[c][0].bytes, w.runs[c][0].error, static_cast<int>(c)});
      }
      std::make_heap(w.heap.begin(), w.heap.end(), later);
      w.sb.clear();
      w.se.clear();
      double best = std::numeric_limits<double>::infinity();
      while (!w.heap.empty()) {
        std::pop_heap(w.heap.begin(), w.heap.end(), later);
        const SolveScratch::Head h = w.heap.back();
        w.heap.pop_back();
        const auto& run = w.runs[h.run];
        size_t i = w.at[h.run];
        if (h.error < best) {
          best = h.error;
          w.sb.push_back(h.bytes);
          w.se.push_back(h.error);
          w.back_parent.push_back(run[i].parent);
          w.back_option.push_back(h.run);
          double lb, u;
          if (lp_rest(p + 1, cap - h.bytes, lb, u)) ub = std::min(ub, h.error + u);
          ++i;
        } else {
          size_t lo = i, step = 1, hi = i + 1;  // first index with error < best: gallop, then bisect
          while (hi < run.size() && !(run[hi].error < best)) {
            lo = hi;
            step *= 2;
            hi = i + step;
          }
          hi = std::min(hi, run.size());
          while (hi - lo > 1) {
            const size_t mid = lo + (hi - lo) / 2;
            (run[mid].error < best ? hi : lo) = mid;
          }
          i = hi;
        }
        w.at[h.run] = i;
        if (i < run.size()) {
          w.heap.push_back({run[i].bytes, run[i].error, h.run});
          std::push_heap(w.heap.begin(), w.heap.end(), later);
        }
      }
      w.stage_off.push_back(w.back_parent.size());
    }
    if (!w.sb.empty()) break;
    if (guess >= ub) throw Error(kWho + "internal error: every state was pruned");  // cannot happen
  }
  // The final states are Pareto sorted and all fit: the last one has the least error.
  int s = static_cast<int>(w.sb.size()) - 1;
  for (int p = n - 1; p >= 0; --p) {
    const size_t k = w.stage_off[p] + s;
    pick[order_[p]] = w.back_option[k];
    s = w.back_parent[k];
  }
  return make_result(std::move(pick));
}

const std::vector<CurvePoint>& BudgetAllocator::cached_curve() const {
  std::call_once(curve_cache_->once, [this] {
    // Items in order of increasing byte range: the frontier stays small for longer.
    std::vector<int> order(items_.size());
    std::iota(order.begin(), order.end(), 0);
    auto range = [&](int i) { return items_[i].front.back().bytes - items_[i].front.front().bytes; };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return range(a) < range(b); });
    std::vector<CurvePoint> curve = {{fixed_bytes_, fixed_error_}};
    std::vector<CurvePoint> g;
    for (int i : order) {
      g.clear();
      for (const FrontPoint& p : items_[i].front) g.push_back({p.bytes, p.error});
      curve = pareto_merge(curve, g);
    }
    curve_cache_->curve = std::move(curve);
  });
  return curve_cache_->curve;
}

std::vector<CurvePoint> BudgetAllocator::tradeoff_curve() const { return cached_curve(); }

double BudgetAllocator::optimal_error(int64_t budget_bytes) const {
  if (budget_bytes < min_bytes_) throw_below_min(budget_bytes);
  const auto& curve = cached_curve();
  const auto it = std::upper_bound(curve.begin(), curve.end(), budget_bytes,
                                   [](int64_t b, const CurvePoint& p) { return b < p.bytes; });
  return std::prev(it)->error;
}

int64_t budget_bytes_for_avg_bits(double avg_bits, int64_t total_params) {
  const std::string what = "average bit-width " + num(avg_bits) + " over " + std::to_string(total_params) + " weights";
  if (!std::isfinite(avg_bits) || avg_bits < 0) throw Error(kWho + what + ": the bit-width must be finite and >= 0");
  if (total_params < 0) throw Error(kWho + what + ": negative weight count");
  return floor_bytes(static_cast<long double>(avg_bits) * static_cast<long double>(total_params) / 8.0L, what);
}

int64_t budget_bytes_for_ratio(double ratio, int64_t total_params) {
  const std::string what = "compression ratio " + num(ratio) + " over " + std::to_string(total_params) + " weights";
  if (!std::isfinite(ratio) || !(ratio > 0)) throw Error(kWho + what + ": the ratio must be finite and > 0");
  if (total_params < 0) throw Error(kWho + what + ": negative weight count");
  return floor_bytes(4.0L * static_cast<long double>(total_params) / static_cast<long double>(ratio), what);
}

}  // namespace lorq
