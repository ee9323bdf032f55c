// The task objects: the classification metric and output change against hand-computed cases, the global error's
// per-output weighting, and the label-free Hessian estimate's normalisation by an output's values per image.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "lorq/pipeline/calibration.h"
#include "lorq/tasks/classification.h"
#include "lorq/tasks/task.h"

using namespace lorq;

namespace {

ModelOutputs logits(const at::Tensor& t) {
  ModelOutputs o;
  o.add("logits", t);
  return o;
}

// A task with two outputs, as a detector has: the global error must weigh each output's own NSR.
class TwoOutputTask : public ClassificationTask {
 public:
  std::vector<std::pair<std::string, double>> error_outputs() const override {
    return {{"logits", 1.0}, {"boxes", 0.5}};
  }
};

}  // namespace

TEST(ClassificationTask, TopOneAndTopFiveByHand) {
  // Four images, three classes... top-5 of 3 classes is every class: labeled images always count as top-5 hits.
  const at::Tensor y = at::tensor({3.0f, 1.0f, 2.0f,   // argmax 0
                                   0.0f, 5.0f, 1.0f,   // argmax 1
                                   0.0f, 1.0f, 9.0f,   // argmax 2
                                   4.0f, 4.5f, 0.0f})  // argmax 1
                           .reshape({4, 3});
  auto metric = task_of(TaskKind::Classification).new_metric();
  ImageSet set;
  ImageBatch batch;
  batch.labels = {0, 2, 2, -1};  // right, wrong, right, unlabeled
  for (int label : batch.labels) {
    batch.indices.push_back(set.items.size());
    set.items.push_back({"x.png", label});
  }
  metric->add(logits(y), set, batch);
  EXPECT_EQ(metric->labeled(), 3);
  const auto v = metric->values();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].name, "top-1");
  EXPECT_NEAR(v[0].value, 200.0 / 3, 1e-9);
  EXPECT_NEAR(v[1].value, 100.0, 1e-9);
  EXPECT_TRUE(task_of(TaskKind::Classification).new_metric()->values().empty());  // nothing labeled: no figure
}

TEST(ClassificationTask, OutputChangeIsTheKlOfTheSoftmaxes) {
  const at::Tensor a = at::tensor({1.0f, 2.0f, 0.5f}).reshape({1, 3});
  const at::Tensor b = at::tensor({1.5f, 1.0f, 0.5f}).reshape({1, 3});
  const OutputChange c = task_of(TaskKind::Classification).output_change(logits(a), logits(b));
  const at::Tensor p = at::softmax(a[0].to(at::kDouble), 0), q = at::softmax(b[0].to(at::kDouble), 0);
  double kl = 0, maxd = 0;
  for (int i = 0; i < 3; ++i) {
    kl += p[i].item<double>() * std::log(p[i].item<double>() / q[i].item<double>());
    maxd = std::max(maxd, std::abs(p[i].item<double>() - q[i].item<double>()));
  }
  EXPECT_NEAR(c.score, kl, 1e-12);
  EXPECT_NEAR(c.max_prob_change, maxd, 1e-12);
  EXPECT_EQ(task_of(TaskKind::Classification).output_change(logits(a), logits(a)).score, 0.0);
}

TEST(OutputError, WeighsEachOutputsOwnNoiseToSignalRatio) {
  at::manual_seed(1);
  const TwoOutputTask task;
  ModelOutputs ref, y;
  ref.add("logits", at::randn({6, 5}) * 10);  // class scores and boxes at very different scales
  ref.add("boxes", at::rand({6, 7, 4}));
  y.add("logits", ref.at("logits") + at::randn({6, 5}));
  y.add("boxes", ref.at("boxes") + at::randn({6, 7, 4}) * 0.01);
  OutputError e(task);
  e.add(y.slice(0, 3), ref.slice(0, 3), 1.0);
  e.add(y.slice(3, 6), ref.slice(3, 6), 1.0);
  auto nsr = [&](const char* name) {
    const at::Tensor a = y.at(name).to(at::kDouble), r = ref.at(name).to(at::kDouble);
    const double noise = (a.slice(0, 0, 3) - r.slice(0, 0, 3)).pow(2).mean().item<double>() +
                         (a.slice(0, 3, 6) - r.slice(0, 3, 6)).pow(2).mean().item<double>();
    const double signal = r.slice(0, 0, 3).pow(2).mean().item<double>() + r.slice(0, 3, 6).pow(2).mean().item<double>();
    return noise / signal;
  };
  // The accumulator takes float32 means (as the global error always has); the reference is float64.
  EXPECT_NEAR(e.value(), nsr("logits") + 0.5 * nsr("boxes"), 1e-6 * e.value());
  // An unweighted sum would be off by far more than that: the weights are really applied.
  EXPECT_GT(std::abs(e.value() - (nsr("logits") + nsr("boxes"))), 1e-3 * e.value());
}

TEST(EstimatedNsr, DividesByTheValuesPerImageNotBySizeOne) {
  // Reference outputs [N, 3, 4]: 12 values per image. The old code divided by size(1) = 3.
  at::manual_seed(2);
  Calibration calib;
  calib.reference = logits(at::randn({5, 3, 4}));
  const at::Tensor W = at::randn({6, 7}), Wt = W + at::randn({6, 7}) * 0.1, H = at::rand({6, 7});
  const double got = estimated_nsr(W, Wt, H, calib, task_of(TaskKind::Classification));
  const double noise = (H.to(at::kDouble) * (W - Wt).to(at::kDouble).pow(2)).sum().item<double>();
  const double signal = calib.reference.logits().to(at::kDouble).pow(2).mean().item<double>();
  EXPECT_NEAR(got, noise / (12.0 * signal), 1e-12 * got);
  // For [N, classes] logits the values per image are the classes: the classifier's estimate is unchanged.
  calib.reference = logits(at::randn({5, 9}));
  const double signal2 = calib.reference.logits().to(at::kDouble).pow(2).mean().item<double>();
  EXPECT_NEAR(estimated_nsr(W, Wt, H, calib, task_of(TaskKind::Classification)), noise / (9.0 * signal2),
              1e-12 * noise);
}
