// Detection post-processing against a hand-computed case and the post-processing goldens of the random-weight
// YOLOS models (HF's post_process_object_detection run on the golden logits and boxes).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "lorq/common/error.h"
#include "lorq/io/safetensors.h"
#include "lorq/io/tensor_io.h"
#include "lorq/tasks/detection_post.h"
#include "shared_data.h"

using namespace lorq;

TEST(DetectionPost, HandComputed) {
  // Token 0: logits (0, ln 3, 0) -> probabilities (1/5, 3/5, 1/5); "no object" dropped -> class 1, score 3/5.
  //          box (0.5, 0.5, 0.2, 0.4) in a 100x200 (h x w) image -> (80, 30, 120, 70).
  // Token 1: "no object" dominates: probabilities (e^0, e^0, e^5)/Σ -> score 1/(2 + e^5) ~ 0.0066, class 0 (the
  //          first of two equal maxima).
  const at::Tensor logits = at::tensor({0.0f, std::log(3.0f), 0.0f, 0.0f, 0.0f, 5.0f}).reshape({2, 3});
  const at::Tensor boxes = at::tensor({0.5f, 0.5f, 0.2f, 0.4f, 0.1f, 0.9f, 0.2f, 0.2f}).reshape({2, 4});
  const std::vector<DetectedBox> all = post_process_object_detection(logits, boxes, 100, 200, 0.0);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].class_index, 1);
  EXPECT_NEAR(all[0].score, 0.6, 1e-6);
  EXPECT_NEAR(all[0].x0, 80, 1e-4);
  EXPECT_NEAR(all[0].y0, 30, 1e-4);
  EXPECT_NEAR(all[0].x1, 120, 1e-4);
  EXPECT_NEAR(all[0].y1, 70, 1e-4);
  EXPECT_EQ(all[1].class_index, 0);
  EXPECT_NEAR(all[1].score, 1 / (2 + std::exp(5.0)), 1e-7);
  // Boxes are reported as computed, even outside the image: (0.1 ± 0.1)·200, (0.9 ± 0.1)·100.
  EXPECT_NEAR(all[1].x0, 0, 1e-4);
  EXPECT_NEAR(all[1].y1, 100, 1e-4);
  // The default threshold 0.5 keeps only token 0; 0.6 keeps none (strictly above).
  EXPECT_EQ(post_process_object_detection(logits, boxes, 100, 200).size(), 1u);
  EXPECT_EQ(post_process_object_detection(logits, boxes, 100, 200, 0.61).size(), 0u);
}

TEST(DetectionPost, RejectsBadShapes) {
  EXPECT_THROW(post_process_object_detection(at::zeros({3, 5}), at::zeros({2, 4}), 10, 10), Error);
  EXPECT_THROW(post_process_object_detection(at::zeros({3, 5}), at::zeros({3, 3}), 10, 10), Error);
  EXPECT_THROW(post_process_object_detection(at::zeros({3, 1}), at::zeros({3, 4}), 10, 10), Error);
  EXPECT_THROW(post_process_object_detection(at::zeros({3, 5}), at::zeros({3, 4}), 0, 10), Error);
}

namespace {

void check_golden(const std::string& model) {
  const std::string path = testdata::shared_path("models/" + model + "/golden.safetensors");
  LORQ_REQUIRE_SHARED_FILE(path);
  const SafetensorsFile golden = SafetensorsFile::open(path);
  const auto get = [&](const char* name) { return read_tensor(golden, golden.at(name)); };
  const at::Tensor logits = get("logits").to(at::kFloat), boxes = get("pred_boxes").to(at::kFloat);
  const at::Tensor sizes = get("post_target_sizes").to(at::kLong), scores = get("post_scores").to(at::kFloat);
  const at::Tensor labels = get("post_labels").to(at::kLong), post_boxes = get("post_boxes").to(at::kFloat);
  const at::Tensor margin = get("post_label_margin").to(at::kFloat);
  const int64_t images = logits.size(0), tokens = logits.size(1);
  double score_err = 0, box_err = 0;
  int flips = 0;
  for (int64_t i = 0; i < images; ++i) {
    const std::vector<DetectedBox> got = post_process_object_detection(logits[i], boxes[i], sizes[i][0].item<int64_t>(),
                                                                       sizes[i][1].item<int64_t>(), 0.0);
    ASSERT_EQ(static_cast<int64_t>(got.size()), tokens) << "threshold 0 keeps every token";
    for (int64_t q = 0; q < tokens; ++q) {
      score_err = std::max(score_err, std::abs(got[q].score - scores[i][q].item<double>()));
      const double want[4] = {post_boxes[i][q][0].item<double>(), post_boxes[i][q][1].item<double>(),
                              post_boxes[i][q][2].item<double>(), post_boxes[i][q][3].item<double>()};
      const double have[4] = {got[q].x0, got[q].y0, got[q].x1, got[q].y1};
      for (int k = 0; k < 4; ++k) box_err = std::max(box_err, std::abs(have[k] - want[k]));
      if (got[q].class_index != labels[i][q].item<int64_t>()) {
        ++flips;
        EXPECT_LT(margin[i][q].item<double>(), 1e-6) << model << " image " << i << " token " << q << ": class "
                                                     << got[q].class_index << " vs " << labels[i][q].item<int64_t>();
      }
    }
  }
  std::printf("%s: max |score - golden| %.3g, max |box - golden| %.3g px, label flips %d (margin < 1e-6)\n",
              model.c_str(), score_err, box_err, flips);
  // The softmax is ATen's (a libtorch of another version may round its last bit differently); the boxes are the
  // same float32 operations in the same order as the Python, so they must come out identical.
  EXPECT_LT(score_err, 1e-7);
  EXPECT_EQ(box_err, 0.0);
}

}  // namespace

TEST(DetectionPost, MatchesTheYolosMicroGolden) { check_golden("yolos_micro_random"); }
TEST(DetectionPost, MatchesTheYolosTinyGolden) { check_golden("yolos_tiny_random"); }
