// Real data: DeiT-Tiny on the 500 ImageNet sample images must match the PIL-based reference accuracy
// (79.0% top-1, 94.6% top-5) within 1.5 points.
#include <gtest/gtest.h>

#include "lorq/tasks/evaluate.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "shared_data.h"

using namespace lorq;

TEST(ImageNetEval, DeiTTinyMatchesReferenceAccuracy) {
  const std::string model_dir = testdata::shared_path("models/deit_tiny_patch16_224");
  const std::string data = testdata::shared_path("datasets/imagenet-sample-500");
  LORQ_REQUIRE_SHARED_FILE(model_dir + "/model.safetensors");
  LORQ_REQUIRE_SHARED_FILE(data + "/labels.csv");
  init_threads();
  auto model = load_model(model_dir);
  ImageSet set = open_image_set(data + "/images");  // finds ../labels.csv beside the folder
  ASSERT_EQ(set.size(), 500u);
  ASSERT_TRUE(set.labeled());
  EvalOptions o;
  o.batch = 50;
  EvalResult r = evaluate(*model, set, o);
  std::printf("DeiT-Tiny on imagenet-sample-500: top-1 %.2f%%, top-5 %.2f%% (%lld images, %.1f images/s)\n",
              r.top1_pct(), r.top5_pct(), (long long)r.images, r.images_per_s());
  EXPECT_EQ(r.images, 500);
  EXPECT_TRUE(r.failed.empty());
  EXPECT_NEAR(r.top1_pct(), 79.0, 1.5);
  EXPECT_NEAR(r.top5_pct(), 94.6, 1.5);
}
