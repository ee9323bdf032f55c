#include "lorq/common/hungarian.h"

#include <cmath>
#include <limits>
#include <string>

#include "lorq/common/error.h"

namespace lorq {

std::vector<int64_t> min_cost_assignment(const std::vector<double>& cost, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0 || static_cast<int64_t>(cost.size()) != rows * cols) {
    throw Error("assignment: the cost matrix has " + std::to_string(cost.size()) + " entries, expected " +
                std::to_string(rows) + " x " + std::to_string(cols));
  }
  for (double c : cost) {
    if (!std::isfinite(c)) throw Error("assignment: the cost matrix holds a non-finite value");
  }
  std::vector<int64_t> result(static_cast<size_t>(rows), -1);
  if (rows == 0 || cols == 0) return result;

  // The algorithm assigns every one of its n "workers" to one of m >= n "jobs": workers are the smaller side.
  const bool transposed = rows > cols;
  const int64_t n = transposed ? cols : rows, m = transposed ? rows : cols;
  auto a = [&](int64_t worker, int64_t job) {  // 1-based
    return transposed ? cost[static_cast<size_t>((job - 1) * cols + (worker - 1))]
                      : cost[static_cast<size_t>((worker - 1) * cols + (job - 1))];
  };

  // u, v: dual potentials (reduced cost a(i, j) - u[i] - v[j] >= 0, 0 on the matching); p[j]: the worker on job j
  // (0 = none; job 0 is the virtual start of each augmenting path); way[j]: the previous job on the shortest path.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(static_cast<size_t>(n + 1), 0.0), v(static_cast<size_t>(m + 1), 0.0);
  std::vector<int64_t> p(static_cast<size_t>(m + 1), 0), way(static_cast<size_t>(m + 1), 0);
  for (int64_t i = 1; i <= n; ++i) {
    // Dijkstra on reduced costs from worker i until a free job is reached, then flip the path.
    p[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv(static_cast<size_t>(m + 1), inf);
    std::vector<char> used(static_cast<size_t>(m + 1), 0);
    do {
      used[j0] = 1;
      const int64_t i0 = p[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double cur = a(i0, j) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }

  for (int64_t j = 1; j <= m; ++j) {
    if (p[j] == 0) continue;
    if (transposed) {
      result[static_cast<size_t>(j - 1)] = p[j] - 1;  // row j-1 (a job) takes column p[j]-1 (a worker)
    } else {
      result[static_cast<size_t>(p[j] - 1)] = j - 1;
    }
  }
  return result;
}

}  // namespace lorq
