#include "lorq/tasks/detection.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lorq/tasks/box_map.h"
#include "lorq/tasks/detection_post.h"

namespace lorq {

std::vector<Detection> detections_of(const ModelOutputs& outputs, int64_t row, int64_t input_h, int64_t input_w,
                                     const ImageGeometry& g, double threshold, const Model* model) {
  // Boxes are relative to the (padded) input; the image fills geometry.input_h x input_w of it. Unpadded, the target
  // size is the image's (Hugging Face's target_sizes, bit for bit); padded, boxes are scaled to input pixels first,
  // then by image / resized size per axis.
  const bool padded = input_h != g.input_h || input_w != g.input_w;
  const double sy = padded ? double(g.image_h) / std::max<int64_t>(1, g.input_h) : 1.0;
  const double sx = padded ? double(g.image_w) / std::max<int64_t>(1, g.input_w) : 1.0;
  std::vector<Detection> out;
  for (const DetectedBox& d : post_process_object_detection(outputs.at("logits")[row], outputs.at("boxes")[row],
                                                            padded ? input_h : g.image_h,
                                                            padded ? input_w : g.image_w, threshold)) {
    Detection x;
    x.class_index = d.class_index;
    x.score = static_cast<float>(d.score);
    x.label = model ? model->label(d.class_index) : "class " + std::to_string(d.class_index);
    x.x0 = static_cast<float>(d.x0 * sx);
    x.y0 = static_cast<float>(d.y0 * sy);
    x.x1 = static_cast<float>(d.x1 * sx);
    x.y1 = static_cast<float>(d.y1 * sy);
    out.push_back(std::move(x));
  }
  return out;
}

namespace {

class BoxMapMetric : public MetricAccumulator {
 public:
  void add(const ModelOutputs& outputs, const ImageSet& set, const ImageBatch& batch) override {
    for (size_t i = 0; i < batch.indices.size(); ++i) {
      const ImageItem& item = set.items[batch.indices[i]];
      if (!item.has_boxes) continue;
      const ImageGeometry& g = batch.geometry[i];
      std::vector<DetectedBox> dets;
      for (const Detection& d : detections_of(outputs, static_cast<int64_t>(i), batch.images.size(2),
                                              batch.images.size(3), g, 0.0))
        dets.push_back({d.class_index, d.score, d.x0, d.y0, d.x1, d.y1});
      std::vector<TruthBox> truth;
      for (const BoxTarget& t : item.boxes) {
        const BoxTarget p = t.pixels(g.image_w, g.image_h);
        truth.push_back({p.class_index, p.x0, p.y0, p.x1, p.y1});
      }
      map_.add_image(dets, truth);
      ++labeled_;
    }
  }
  int64_t labeled() const override { return labeled_; }
  std::vector<MetricValue> values() const override {
    if (!labeled_) return {};
    const BoxMapValues m = map_.values();
    if (m.map < 0) return {};  // no ground-truth object anywhere: COCO has no value
    return {{"mAP", 100.0 * m.map, true}, {"mAP@.5", 100.0 * m.map50, true}};
  }

 private:
  BoxMapAccumulator map_;
  int64_t labeled_ = 0;
};

}  // namespace

std::unique_ptr<MetricAccumulator> DetectionTask::new_metric() const { return std::make_unique<BoxMapMetric>(); }

OutputChange DetectionTask::output_change(const ModelOutputs& f, const ModelOutputs& q) const {
  // Relative coordinates (a unit image): the change does not depend on the image size.
  const ImageGeometry unit{1, 1, 1, 1};
  const std::vector<Detection> a = detections_of(f, 0, 1, 1, unit, kDefaultThreshold);
  const std::vector<Detection> b = detections_of(q, 0, 1, 1, unit, kDefaultThreshold);
  const std::vector<int> match = match_detections(a, b);
  OutputChange c;
  double iou_loss = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (match[i] < 0) {
      ++c.lost;
    } else {
      ++c.matched;
      iou_loss += 1.0 - box_iou(a[i], b[match[i]]);
    }
  }
  c.added = static_cast<int>(b.size()) - c.matched;
  c.score = c.lost + c.added + iou_loss;
  return c;
}

}  // namespace lorq
