#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/demo/segmenter_trainer.h"
#include "lorq/io/safetensors.h"
#include "lorq/models/model.h"

namespace {

namespace fs = std::filesystem;

lorq::SegmenterTrainOptions tiny_options(const fs::path& dir) {
  lorq::SegmenterTrainOptions o;
  o.out_dir = dir.string();
  o.image_size = 64;
  o.hidden_sizes = {8, 8, 16, 16};
  o.heads = {1, 1, 1, 2};
  o.decoder_hidden_size = 16;
  o.batch = 4;
  o.steps = 10;
  o.heldout_count = 6;
  o.checkpoint_every = 4;
  return o;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / name;
  fs::remove_all(dir);
  return dir;
}

TEST(SegmenterTrainer, InitialModelIsAHuggingFaceSegformer) {
  const fs::path dir = fresh_dir("lorq_demo_segformer_initial");
  lorq::write_initial_demo_segmenter(dir.string(), tiny_options(dir));
  const nlohmann::json config = nlohmann::json::parse(lorq::read_text_file((dir / "config.json").string()));
  EXPECT_EQ(config["model_type"], "segformer");
  EXPECT_TRUE(fs::exists(dir / "preprocessor_config.json"));
  // The HF layout: linear_fuse without a bias, then the decode head's BatchNorm.
  const lorq::SafetensorsFile file = lorq::SafetensorsFile::open((dir / "model.safetensors").string());
  EXPECT_NE(file.find("decode_head.batch_norm.running_var"), nullptr);
  EXPECT_EQ(file.find("decode_head.linear_fuse.bias"), nullptr);

  const std::unique_ptr<lorq::Model> model = lorq::load_model(dir.string());
  EXPECT_EQ(model->task(), lorq::TaskKind::Segmentation);
  EXPECT_EQ(model->label_names(), lorq::segmenter_class_names());
  EXPECT_EQ(model->label_names().front(), "background");
  const at::Tensor logits = model->forward(at::zeros({2, 3, 64, 64})).logits();
  EXPECT_EQ(logits.sizes(), (at::IntArrayRef{2, 7, 16, 16}));
  fs::remove_all(dir);
}

TEST(SegmenterTrainer, TrainsAndTheWrittenModelReloadsExactly) {
  const fs::path dir = fresh_dir("lorq_demo_segformer_train");
  lorq::SegmenterTrainOptions o = tiny_options(dir);
  o.steps = 60;
  o.lr = 5e-3;
  const lorq::SegmenterTrainResult r = lorq::train_demo_segmenter(o);
  EXPECT_EQ(r.steps, 60);
  // Pixel cross-entropy over 7 classes starts near ln 7 = 1.95; 60 steps learn at least the background (the
  // reported loss is the mean over all 60 steps).
  EXPECT_LT(r.final_loss, r.first_loss - 0.3) << r.first_loss << " -> " << r.final_loss;
  EXPECT_GT(r.heldout_pixel_accuracy, 0.5);
  EXPECT_FALSE(fs::exists(dir / "checkpoint"));
  // The HF-form BatchNorm folds back into the weights that were trained: evaluating the reloaded file gives the
  // figures the trainer reported.
  const std::unique_ptr<lorq::Model> model = lorq::load_model(dir.string());
  const lorq::SegmentationEvalFigures f = lorq::evaluate_segmenter_on_scenes(*model, o.heldout_seed, 6, 64);
  EXPECT_NEAR(f.miou, r.heldout_miou, 1e-6);
  EXPECT_NEAR(f.pixel_accuracy, r.heldout_pixel_accuracy, 1e-6);
  fs::remove_all(dir);
}

TEST(SegmenterTrainer, ResumedRunEqualsUninterruptedRun) {
  const fs::path straight = fresh_dir("lorq_demo_segformer_straight");
  const fs::path interrupted = fresh_dir("lorq_demo_segformer_resumed");
  lorq::train_demo_segmenter(tiny_options(straight));
  std::atomic<bool> cancel{false};
  lorq::JobControl job;
  job.cancel = &cancel;
  job.progress = [&](const lorq::Progress& p) {
    if (p.done == 6) cancel = true;
  };
  EXPECT_THROW(lorq::train_demo_segmenter(tiny_options(interrupted), job), lorq::Cancelled);
  EXPECT_FALSE(fs::exists(interrupted / "model.safetensors"));
  lorq::SegmenterTrainOptions o = tiny_options(interrupted);
  o.resume = true;
  EXPECT_EQ(lorq::train_demo_segmenter(o).resumed_from, 4);
  const std::unique_ptr<lorq::Model> a = lorq::load_model(straight.string());
  const std::unique_ptr<lorq::Model> b = lorq::load_model(interrupted.string());
  for (const auto& [key, t] : a->named_tensors()) EXPECT_TRUE(at::allclose(t, b->tensor(key), 1e-5, 1e-6)) << key;
  fs::remove_all(straight);
  fs::remove_all(interrupted);
}

TEST(SegmenterTrainer, RejectsBadOptions) {
  lorq::SegmenterTrainOptions o = tiny_options(fresh_dir("lorq_demo_segformer_bad"));
  o.image_size = 48;
  EXPECT_THROW(lorq::train_demo_segmenter(o), lorq::Error);
  o = tiny_options(fresh_dir("lorq_demo_segformer_bad"));
  o.heads = {1, 1, 3, 2};
  EXPECT_THROW(lorq::train_demo_segmenter(o), lorq::Error);
}

}  // namespace
