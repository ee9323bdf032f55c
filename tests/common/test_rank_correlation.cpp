// Spearman's rank correlation (common/rank_correlation.h) on cases worked by hand: ties share their mean rank.
#include <gtest/gtest.h>

#include <cmath>

#include "lorq/common/rank_correlation.h"

using namespace lorq;

TEST(RankCorrelation, RanksShareTies) {
  const std::vector<double> r = ranks({5, 6, 7, 8, 7});
  const std::vector<double> expected{0, 1, 2.5, 4, 2.5};
  EXPECT_EQ(r, expected);
}

TEST(RankCorrelation, WorkedByHand) {
  // rx = 0..4, ry = {0, 1, 2.5, 4, 2.5}: Σdx·dy = 8, Σdx² = 10, Σdy² = 9.5.
  EXPECT_NEAR(spearman({1, 2, 3, 4, 5}, {5, 6, 7, 8, 7}), 8 / std::sqrt(95.0), 1e-12);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3}, {10, 20, 1000}), 1.0);  // any increasing map
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3}, {3, 2, 1}), -1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3}, {4, 4, 4}), 0.0);  // a constant has no order
}
