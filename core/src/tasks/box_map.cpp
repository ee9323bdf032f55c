// See box_map.h. The loops follow pycocotools' COCOeval.evaluateImg and .accumulate step by step, so that the
// figures agree with it to rounding.
#include "lorq/tasks/box_map.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "lorq/common/error.h"

namespace lorq {

namespace {

// numpy.linspace(start, stop, num): i · ((stop - start) / (num - 1)) + start, the last point set to stop.
std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> y(num);
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) y[i] = static_cast<double>(i) * step + start;
  y[num - 1] = stop;
  return y;
}

bool finite_box(double a, double b, double c, double d) {
  return std::isfinite(a) && std::isfinite(b) && std::isfinite(c) && std::isfinite(d);
}

}  // namespace

double box_iou(double ax0, double ay0, double ax1, double ay1, double bx0, double by0, double bx1, double by1) {
  const double w = std::min(ax1, bx1) - std::max(ax0, bx0);
  if (w <= 0) return 0;
  const double h = std::min(ay1, by1) - std::max(ay0, by0);
  if (h <= 0) return 0;
  const double inter = w * h;
  const double area_a = (ax1 - ax0) * (ay1 - ay0), area_b = (bx1 - bx0) * (by1 - by0);
  return inter / (area_a + area_b - inter);
}

const std::vector<double>& BoxMapAccumulator::iou_thresholds() {
  static const std::vector<double> t = linspace(0.5, 0.95, 10);
  return t;
}

const std::vector<double>& BoxMapAccumulator::recall_points() {
  static const std::vector<double> r = linspace(0.0, 1.0, 101);
  return r;
}

BoxMapAccumulator::BoxMapAccumulator(int max_detections_per_image) : max_detections_(max_detections_per_image) {
  if (max_detections_ < 1) throw Error("mAP: the detections kept per image must be at least 1");
}

// Classes index a dense table; a label file with a class in the millions is a mistake, not a dataset.
constexpr int kMaxClassIndex = 1 << 20;

BoxMapAccumulator::ClassData& BoxMapAccumulator::class_data(int class_index) {
  if (static_cast<size_t>(class_index) >= classes_.size()) classes_.resize(static_cast<size_t>(class_index) + 1);
  return classes_[static_cast<size_t>(class_index)];
}

int64_t BoxMapAccumulator::truth_boxes() const {
  int64_t n = 0;
  for (const ClassData& c : classes_) n += c.truth;
  return n;
}

void BoxMapAccumulator::add_image(const std::vector<DetectedBox>& detections, const std::vector<TruthBox>& truth) {
  const std::string where = "mAP, image " + std::to_string(images_ + 1);
  int max_class = -1;
  for (const DetectedBox& d : detections) {
    if (d.class_index < 0 || d.class_index > kMaxClassIndex)
      throw Error(where, "a detection has the class index " + std::to_string(d.class_index));
    if (!std::isfinite(d.score) || !finite_box(d.x0, d.y0, d.x1, d.y1))
      throw Error(where, "a detection has a non-finite score or coordinate");
    max_class = std::max(max_class, d.class_index);
  }
  for (const TruthBox& g : truth) {
    if (g.class_index < 0 || g.class_index > kMaxClassIndex)
      throw Error(where, "a ground-truth box has the class index " + std::to_string(g.class_index));
    if (!finite_box(g.x0, g.y0, g.x1, g.y1)) throw Error(where, "a ground-truth box has a non-finite coordinate");
    max_class = std::max(max_class, g.class_index);
  }
  ++images_;
  const std::vector<double>& thresholds = iou_thresholds();
  for (int c = 0; c <= max_class; ++c) {
    std::vector<const TruthBox*> gts;
    for (const TruthBox& g : truth)
      if (g.class_index == c) gts.push_back(&g);
    std::vector<const DetectedBox*> dts;
    for (const DetectedBox& d : detections)
      if (d.class_index == c) dts.push_back(&d);
    if (gts.empty() && dts.empty()) continue;
    std::stable_sort(dts.begin(), dts.end(),
                     [](const DetectedBox* a, const DetectedBox* b) { return a->score > b->score; });
    if (dts.size() > static_cast<size_t>(max_detections_)) dts.resize(static_cast<size_t>(max_detections_));

    std::vector<double> iou(dts.size() * gts.size());
    for (size_t d = 0; d < dts.size(); ++d)
      for (size_t g = 0; g < gts.size(); ++g)
        iou[d * gts.size() + g] =
            box_iou(dts[d]->x0, dts[d]->y0, dts[d]->x1, dts[d]->y1, gts[g]->x0, gts[g]->y0, gts[g]->x1, gts[g]->y1);

    std::vector<uint16_t> matched_bits(dts.size(), 0);
    for (size_t k = 0; k < thresholds.size(); ++k) {
      std::vector<bool> gt_taken(gts.size(), false);
      for (size_t d = 0; d < dts.size(); ++d) {
        double best = std::min(thresholds[k], 1 - 1e-10);
        long m = -1;
        for (size_t g = 0; g < gts.size(); ++g) {
          if (gt_taken[g]) continue;
          if (iou[d * gts.size() + g] < best) continue;
          best = iou[d * gts.size() + g];  // >= keeps searching: a later box with the same IoU wins, as in COCOeval
          m = static_cast<long>(g);
        }
        if (m < 0) continue;
        gt_taken[static_cast<size_t>(m)] = true;
        matched_bits[d] = static_cast<uint16_t>(matched_bits[d] | (1u << k));
      }
    }
    ClassData& data = class_data(c);
    data.truth += static_cast<int64_t>(gts.size());
    for (size_t d = 0; d < dts.size(); ++d) data.records.push_back({dts[d]->score, matched_bits[d]});
  }
}

BoxMapValues BoxMapAccumulator::values() const {
  BoxMapValues v;
  const std::vector<double>& thresholds = iou_thresholds();
  const std::vector<double>& recalls = recall_points();
  const double eps = std::numeric_limits<double>::epsilon();  // np.spacing(1)
  size_t k75 = 0;
  for (size_t k = 0; k < thresholds.size(); ++k)
    if (std::abs(thresholds[k] - 0.75) < 1e-9) k75 = k;
  double sum = 0, sum50 = 0, sum75 = 0;
  for (size_t c = 0; c < classes_.size(); ++c) {
    const ClassData& data = classes_[c];
    if (data.truth == 0) continue;  // no ground truth: left out, its detections ignored
    std::vector<Record> recs = data.records;
    std::stable_sort(recs.begin(), recs.end(), [](const Record& a, const Record& b) { return a.score > b.score; });
    const size_t nd = recs.size();
    std::vector<double> ap(thresholds.size(), 0.0);
    std::vector<double> rc(nd), pr(nd);
    for (size_t k = 0; k < thresholds.size(); ++k) {
      double tp = 0, fp = 0;
      for (size_t i = 0; i < nd; ++i) {
        if (recs[i].matched & (1u << k)) {
          tp += 1;
        } else {
          fp += 1;
        }
        rc[i] = tp / static_cast<double>(data.truth);
        pr[i] = tp / (fp + tp + eps);
      }
      // The precision envelope: at each rank, the best precision at this or any larger recall.
      for (size_t i = nd; i-- > 1;)
        if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
      double q = 0;
      for (double r : recalls) {
        const size_t idx = static_cast<size_t>(std::lower_bound(rc.begin(), rc.end(), r) - rc.begin());
        if (idx < nd) q += pr[idx];
      }
      ap[k] = q / static_cast<double>(recalls.size());
    }
    const double mean_ap = std::accumulate(ap.begin(), ap.end(), 0.0) / static_cast<double>(ap.size());
    v.classes.push_back(static_cast<int>(c));
    v.class_ap.push_back(mean_ap);
    v.class_ap50.push_back(ap[0]);
    sum += mean_ap;
    sum50 += ap[0];
    sum75 += ap[k75];
  }
  if (!v.classes.empty()) {
    const double n = static_cast<double>(v.classes.size());
    v.map = sum / n;
    v.map50 = sum50 / n;
    v.map75 = sum75 / n;
  }
  return v;
}

}  // namespace lorq
