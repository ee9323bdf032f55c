#include "lorq/tasks/detection_match.h"

#include <algorithm>
#include <numeric>

#include "lorq/tasks/box_map.h"

namespace lorq {

double box_iou(const Detection& a, const Detection& b) {
  return box_iou(a.x0, a.y0, a.x1, a.y1, b.x0, b.y0, b.x1, b.y1);
}

std::vector<int> match_detections(const std::vector<Detection>& a, const std::vector<Detection>& b, double min_iou) {
  std::vector<size_t> order(a.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return a[i].score > a[j].score; });
  std::vector<int> match(a.size(), -1);
  std::vector<char> taken(b.size(), 0);
  for (size_t i : order) {
    double best = min_iou;
    int best_j = -1;
    for (size_t j = 0; j < b.size(); ++j) {
      if (taken[j] || b[j].class_index != a[i].class_index) continue;
      const double iou = box_iou(a[i], b[j]);
      if (iou >= best) {
        best = iou;
        best_j = static_cast<int>(j);
      }
    }
    if (best_j >= 0) {
      taken[best_j] = 1;
      match[i] = best_j;
    }
  }
  return match;
}

}  // namespace lorq
