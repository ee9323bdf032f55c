#include "lorq/tasks/classification.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace lorq {

namespace {

class TopKAccuracy : public MetricAccumulator {
 public:
  void add(const ModelOutputs& outputs, const ImageSet&, const ImageBatch& batch) override {
    const std::vector<int>& labels = batch.labels;
    const at::Tensor& out = outputs.logits();
    const int64_t k = std::min<int64_t>(5, out.size(1));
    const at::Tensor top = std::get<1>(out.topk(k, 1)).contiguous();
    auto acc = top.accessor<int64_t, 2>();
    for (int64_t i = 0; i < out.size(0); ++i) {
      const int label = labels.at(static_cast<size_t>(i));
      if (label < 0) continue;
      ++labeled_;
      if (acc[i][0] == label) ++top1_;
      for (int64_t j = 0; j < k; ++j)
        if (acc[i][j] == label) {
          ++top5_;
          break;
        }
    }
  }
  int64_t labeled() const override { return labeled_; }
  std::vector<MetricValue> values() const override {
    if (!labeled_) return {};
    return {{"top-1", 100.0 * top1_ / labeled_, true}, {"top-5", 100.0 * top5_ / labeled_, true}};
  }

 private:
  int64_t labeled_ = 0, top1_ = 0, top5_ = 0;
};

}  // namespace

std::unique_ptr<MetricAccumulator> ClassificationTask::new_metric() const { return std::make_unique<TopKAccuracy>(); }

OutputChange ClassificationTask::output_change(const ModelOutputs& f, const ModelOutputs& q) const {
  const at::Tensor a = at::softmax(f.logits().reshape({-1}).to(at::kDouble), 0);
  const at::Tensor b = at::softmax(q.logits().reshape({-1}).to(at::kDouble), 0);
  OutputChange c;
  c.score = (a * (at::log(a.clamp_min(1e-30)) - at::log(b.clamp_min(1e-30)))).sum().item<double>();
  c.max_prob_change = (a - b).abs().max().item<double>();
  return c;
}

std::vector<Prediction> top_k(const at::Tensor& logits_row, int k, const Model& model) {
  at::Tensor probs = at::softmax(logits_row.reshape({-1}).to(at::kFloat), 0);
  k = std::min<int>(k, static_cast<int>(probs.size(0)));
  auto [values, idx] = probs.topk(k);
  std::vector<Prediction> out;
  for (int i = 0; i < k; ++i) {
    const int c = static_cast<int>(idx[i].item<int64_t>());
    out.push_back({c, values[i].item<float>(), model.label(c)});
  }
  return out;
}

}  // namespace lorq
