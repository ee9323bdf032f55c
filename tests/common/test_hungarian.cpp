#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/common/hungarian.h"

namespace {

// The smallest total over every way of pairing min(rows, cols) rows with distinct columns: all permutations of the
// larger side, its first min(rows, cols) entries paired with the smaller side in order.
double brute_force_min(const std::vector<double>& cost, int rows, int cols) {
  const int big = std::max(rows, cols), small = std::min(rows, cols);
  std::vector<int> perm(static_cast<size_t>(big));
  std::iota(perm.begin(), perm.end(), 0);
  double best = std::numeric_limits<double>::infinity();
  do {
    double total = 0;
    for (int k = 0; k < small; ++k) {
      const int r = rows >= cols ? perm[k] : k, c = rows >= cols ? k : perm[k];
      total += cost[static_cast<size_t>(r * cols + c)];
    }
    best = std::min(best, total);
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

// Checks the assignment is valid (each column at most once, min(rows, cols) pairs) and returns its total.
double assignment_total(const std::vector<double>& cost, int rows, int cols, const std::vector<int64_t>& a) {
  EXPECT_EQ(a.size(), static_cast<size_t>(rows));
  std::set<int64_t> used;
  double total = 0;
  for (int r = 0; r < rows; ++r) {
    if (a[r] < 0) continue;
    EXPECT_LT(a[r], cols);
    EXPECT_TRUE(used.insert(a[r]).second) << "column " << a[r] << " used twice";
    total += cost[static_cast<size_t>(r * cols + a[r])];
  }
  EXPECT_EQ(used.size(), static_cast<size_t>(std::min(rows, cols)));
  return total;
}

TEST(Hungarian, MatchesBruteForceOnRandomMatrices) {
  std::mt19937 gen(12345);
  int cases = 0;
  for (int rows = 1; rows <= 7; ++rows) {
    for (int cols = 1; cols <= 7; ++cols) {
      for (int trial = 0; trial < 12; ++trial) {
        std::vector<double> cost(static_cast<size_t>(rows * cols));
        const bool ties = trial % 3 == 0;  // few distinct values: many optimal assignments
        std::uniform_real_distribution<double> real(-5.0, 5.0);
        std::uniform_int_distribution<int> small(0, 2);
        for (double& c : cost) c = ties ? small(gen) : real(gen);
        const std::vector<int64_t> a = lorq::min_cost_assignment(cost, rows, cols);
        const double got = assignment_total(cost, rows, cols, a);
        const double want = brute_force_min(cost, rows, cols);
        EXPECT_NEAR(got, want, 1e-9) << rows << "x" << cols << " trial " << trial;
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 7 * 7 * 12);
}

TEST(Hungarian, KnownCase) {
  // Rows are predictions, columns targets: the greedy choice (row 0 -> col 0, cost 1) is not optimal.
  const std::vector<double> cost = {1, 2,   //
                                    2, 10,  //
                                    9, 9};
  const std::vector<int64_t> a = lorq::min_cost_assignment(cost, 3, 2);
  EXPECT_EQ(a, (std::vector<int64_t>{1, 0, -1}));
}

TEST(Hungarian, EmptyAndBadInput) {
  EXPECT_EQ(lorq::min_cost_assignment({}, 3, 0), (std::vector<int64_t>{-1, -1, -1}));
  EXPECT_TRUE(lorq::min_cost_assignment({}, 0, 4).empty());
  EXPECT_THROW(lorq::min_cost_assignment({1, 2, 3}, 2, 2), lorq::Error);
  EXPECT_THROW(lorq::min_cost_assignment({1, std::nan(""), 3, 4}, 2, 2), lorq::Error);
  EXPECT_THROW(lorq::min_cost_assignment({1, std::numeric_limits<double>::infinity(), 3, 4}, 2, 2), lorq::Error);
}

TEST(Hungarian, LargeRectangleIsOptimalAgainstRowMinimaBound) {
  // 100 queries x 4 targets with a planted optimum: the planted pairs cost 0, everything else >= 1.
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> real(1.0, 3.0);
  const int rows = 100, cols = 4;
  std::vector<double> cost(rows * cols);
  for (double& c : cost) c = real(gen);
  const std::vector<int> planted = {57, 3, 88, 12};
  for (int c = 0; c < cols; ++c) cost[planted[c] * cols + c] = 0;
  const std::vector<int64_t> a = lorq::min_cost_assignment(cost, rows, cols);
  for (int c = 0; c < cols; ++c) EXPECT_EQ(a[planted[c]], c);
  EXPECT_EQ(assignment_total(cost, rows, cols, a), 0.0);
}

}  // namespace
