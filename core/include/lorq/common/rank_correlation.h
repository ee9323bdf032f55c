#pragma once
// Spearman's rank correlation, for judging how well an estimate orders options against their measurement (the
// gptq first allocation's test and bench).
#include <vector>

namespace lorq {

// The ranks 0..n-1 of v in ascending order; tied values share their mean rank.
std::vector<double> ranks(const std::vector<double>& v);

// Pearson's correlation of the ranks of x and y (equal lengths); 0 when either is constant.
double spearman(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace lorq
