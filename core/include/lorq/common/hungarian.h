#pragma once
// Minimum-cost assignment (the linear sum assignment problem) for a rectangular cost matrix: the Hungarian method
// with potentials and shortest augmenting paths (Kuhn-Munkres in the Jonker-Volgenant form), O(n^2 m) for n <= m.
// DETR-style training matches its object queries (rows) to the ground-truth objects (columns) with it.
#include <cstdint>
#include <vector>

namespace lorq {

// cost: rows x cols, row-major, finite. Assigns min(rows, cols) pairs, each row and each column at most once, with
// the smallest total cost (any one optimum when several tie). Returns, per row, its column or -1 when the row is
// left unassigned (only when rows > cols). Throws lorq::Error on a size mismatch or a non-finite cost.
std::vector<int64_t> min_cost_assignment(const std::vector<double>& cost, int64_t rows, int64_t cols);

}  // namespace lorq
