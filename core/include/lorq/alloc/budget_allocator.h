#pragma once
// Exact inter-layer budget allocation (spec §2.4-2.5 and §7): a multiple-choice knapsack.
//
// L layers; layer l offers options c with an integer size bytes[l][c] >= 0 and an error err[l][c] >= 0. Choose
// exactly one option per layer so that the summed error is minimal and the summed size fits the budget. The
// solver is exact (the proven optimum, no time limit, no MIP tolerances) and needs only the C++17 standard
// library, so a front end can call it on every slider movement. See budget_allocator.cpp for the algorithms:
//   * solve():          dynamic programming over Pareto-pruned (bytes, error) states, cut by Lagrangian and LP
//                       (convex hull) bounds against an incumbent: a branch and bound that merges equivalent
//                       branches;
//   * tradeoff_curve(): the Pareto merge (min-plus convolution restricted to non-dominated pairs) of all layers'
//                       own Pareto fronts: the optimal error for every budget, as a step function.
#include <cstdint>
#include <memory>
#include <vector>

#include "lorq/types.h"

namespace lorq {

struct AllocOption {
  int64_t bytes = 0;
  double error = 0;
};

// Constraints the GUI needs; all indices refer to the layer's option list as given.
struct AllocConstraints {
  std::vector<int> pinned;                 // per layer: -1 = free, else the only allowed option (empty = none)
  std::vector<std::vector<char>> allowed;  // optional per layer mask (empty = all allowed); used for minimum bits /
                                           // maximum rank / excluded (the caller maps those to masks)
  std::vector<std::vector<int>> groups;    // each group: layers that must choose the same option index (their
                                           // option lists have equal length; the group's cost is the sum over its
                                           // members). Groups sharing a layer are merged (the relation is
                                           // transitive); a layer listed twice and an empty group are fine.
};

struct AllocResult {
  std::vector<int> choice;  // per layer: index into its option list
  int64_t bytes = 0;        // summed size of the choice
  double error = 0;         // summed error of the choice (added in layer order)
};

// Immutable after construction; every method is const and safe to call from several threads at once (copies share
// the curve cache). Rough costs for 50 layers x 250 options (bench/allocator.cpp): constructor 1-2 ms, solve()
// 0.05-0.3 ms typically and a few ms at worst, the first tradeoff_curve() 0.1-0.6 s. Among optimal solutions of
// equal total error the one returned is deterministic (the same input gives the same choice).
class BudgetAllocator {
 public:
  // Validates (non-negative bytes/errors, finite errors, at least one allowed option per layer, group lists
  // consistent) and preprocesses; throws lorq::Error naming the layer index and the problem.
  explicit BudgetAllocator(std::vector<std::vector<AllocOption>> layers, AllocConstraints constraints = {});

  int64_t min_bytes() const { return min_bytes_; }  // smallest achievable total under the constraints
  // The smallest budget at which the budget-unconstrained optimum (the minimum total error) is reachable.
  int64_t max_bytes() const { return max_bytes_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }

  // Exact optimum for the budget. Throws lorq::Error naming the budget and min_bytes() when budget < min_bytes().
  AllocResult solve(int64_t budget_bytes) const;

  // The whole trade-off curve: strictly increasing bytes, strictly decreasing error; first point at min_bytes(),
  // last point at max_bytes(). Computed on the first call and cached (thread-safe); later calls copy it.
  std::vector<CurvePoint> tradeoff_curve() const;
  // The optimal total error at a budget, looked up in the (cached) trade-off curve. Throws like solve().
  double optimal_error(int64_t budget_bytes) const;

 private:
  // One "item" after preprocessing: a free layer, or a group of layers tied to one option index.
  struct FrontPoint {
    int64_t bytes;  // summed over the item's layers
    double error;   // summed over the item's layers
    int option;     // index into the layers' option lists
  };
  struct Item {
    std::vector<int> layers;        // member layers, ascending
    std::vector<FrontPoint> front;  // the item's Pareto front: bytes strictly up, error strictly down; size >= 2
    // Lower convex hull of the front: its vertices (front indices, from 0 to front.size() - 1) and the segments
    // between them: byte increase, error decrease and their ratio (strictly decreasing along the hull).
    std::vector<int> hull;
    std::vector<int64_t> seg_bytes;
    std::vector<double> seg_gain;
    std::vector<double> seg_slope;
  };
  struct Segment {  // one hull segment of one item, for the global LP order
    double slope;
    int64_t bytes;
    double gain;
    int item;
  };
  class CurveCache;

  void throw_below_min(int64_t budget_bytes) const;
  const std::vector<CurvePoint>& cached_curve() const;
  AllocResult make_result(std::vector<int> item_choice) const;  // per item: index into its front

  std::vector<std::vector<AllocOption>> layers_;
  std::vector<Item> items_;        // only items with at least two Pareto options
  std::vector<int> fixed_choice_;  // per layer: the option when its item has a single Pareto option, else -1
  int64_t fixed_bytes_ = 0;        // summed over those layers
  double fixed_error_ = 0;
  int64_t min_bytes_ = 0;
  int64_t max_bytes_ = 0;
  double error_scale_ = 0;  // the largest possible total error (every item at its first front point)
  // All hull segments of all items, sorted by slope (descending; ties by item, which keeps each item's own order)
  // with prefix sums of bytes: the LP relaxation of the whole problem at any budget.
  std::vector<Segment> segments_;
  std::vector<int64_t> segment_cum_bytes_;  // size segments_.size() + 1

  // The DP's stages: items in a fixed order, and per suffix p (items order_[p..]) its LP relaxation as a table:
  // minimum bytes, error there, and its hull segments in slope order as prefix sums (bytes, error decrease) with
  // the global index of each next segment (-1 at the end). Rows p = 0..n are at suf_off_[p]..suf_off_[p+1].
  std::vector<int> order_;
  std::vector<int64_t> suf_minb_;
  std::vector<double> suf_base_;
  std::vector<size_t> suf_off_;
  std::vector<int64_t> suf_cum_bytes_;
  std::vector<double> suf_cum_gain_;
  std::vector<int> suf_next_;

  std::shared_ptr<CurveCache> curve_cache_;
};

// Budget helpers (spec §2.5): budget_bytes_for_avg_bits / budget_bytes_for_ratio are declared in lorq/types.h.
// Bytes for an average bit-width over weights of total_params: floor(bits*params/8); for a compression ratio
// versus fp32: floor(4*params/ratio) (same rounding rule); ratio = 32/avg_bits.

}  // namespace lorq
