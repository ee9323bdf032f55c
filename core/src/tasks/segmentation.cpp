#include "lorq/tasks/segmentation.h"

#include <ATen/ATen.h>

#include <cmath>

#include "lorq/common/error.h"
#include "lorq/io/annotations.h"
#include "lorq/tasks/seg_metrics.h"
#include "lorq/tasks/segmentation_post.h"

namespace lorq {

LabelMap label_map_of(const ModelOutputs& outputs, int64_t row, int64_t input_h, int64_t input_w,
                      const ImageGeometry& g) {
  at::Tensor logits = outputs.logits()[row].to(at::kFloat);  // [K, h, w]
  // The resized image covers the top-left input_h x input_w of a padded input: keep the logits over it.
  const int64_t h = logits.size(1), w = logits.size(2);
  const int64_t keep_h = std::min<int64_t>(h, (h * g.input_h + input_h - 1) / std::max<int64_t>(1, input_h));
  const int64_t keep_w = std::min<int64_t>(w, (w * g.input_w + input_w - 1) / std::max<int64_t>(1, input_w));
  logits = logits.slice(1, 0, keep_h).slice(2, 0, keep_w);
  const at::Tensor classes = segmentation_label_map(logits, g.image_h, g.image_w).to(at::kByte).contiguous();
  LabelMap m;
  m.height = static_cast<int>(g.image_h);
  m.width = static_cast<int>(g.image_w);
  m.classes.assign(classes.data_ptr<uint8_t>(), classes.data_ptr<uint8_t>() + classes.numel());
  return m;
}

namespace {

class MiouMetric : public MetricAccumulator {
 public:
  void add(const ModelOutputs& outputs, const ImageSet& set, const ImageBatch& batch) override {
    const int classes = static_cast<int>(outputs.logits().size(1));
    if (!confusion_) confusion_ = std::make_unique<ConfusionMatrix>(classes, SegmentationTask::kIgnoreIndex);
    for (size_t i = 0; i < batch.indices.size(); ++i) {
      const ImageItem& item = set.items[batch.indices[i]];
      if (item.label_map.empty()) continue;
      const ImageGeometry& g = batch.geometry[i];
      const LabelMap pred = label_map_of(outputs, static_cast<int64_t>(i), batch.images.size(2),
                                         batch.images.size(3), g);
      const at::Tensor truth = read_label_map(item.label_map);  // uint8 [H, W]
      if (truth.size(0) != pred.height || truth.size(1) != pred.width)
        throw Error(item.label_map, "the label map is " + std::to_string(truth.size(1)) + "x" +
                                        std::to_string(truth.size(0)) + ", its image " + std::to_string(pred.width) +
                                        "x" + std::to_string(pred.height));
      const at::Tensor predicted =
          at::from_blob(const_cast<uint8_t*>(pred.classes.data()), {pred.height, pred.width}, at::kByte);
      try {
        confusion_->add(predicted, truth);
      } catch (const Error& e) {
        throw Error(item.label_map, e.what());
      }
      ++labeled_;
    }
  }
  int64_t labeled() const override { return labeled_; }
  std::vector<MetricValue> values() const override {
    if (!labeled_) return {};
    const double miou = confusion_->mean_iou();
    if (std::isnan(miou)) return {};
    return {{"mIoU", 100.0 * miou, true}, {"pixel accuracy", 100.0 * confusion_->pixel_accuracy(), true}};
  }

 private:
  std::unique_ptr<ConfusionMatrix> confusion_;
  int64_t labeled_ = 0;
};

}  // namespace

std::unique_ptr<MetricAccumulator> SegmentationTask::new_metric() const { return std::make_unique<MiouMetric>(); }

OutputChange SegmentationTask::output_change(const ModelOutputs& f, const ModelOutputs& q) const {
  const at::Tensor a = f.logits()[0].argmax(0), b = q.logits()[0].argmax(0);
  OutputChange c;
  c.score = a.ne(b).to(at::kDouble).mean().item<double>();
  return c;
}

}  // namespace lorq
