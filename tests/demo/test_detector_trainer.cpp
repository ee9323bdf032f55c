#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/demo/detector_trainer.h"
#include "lorq/demo/shapes_dataset.h"
#include "lorq/models/model.h"

namespace {

namespace fs = std::filesystem;

// A very small configuration, so a few steps take a second.
lorq::DetectorTrainOptions tiny_options(const fs::path& dir) {
  lorq::DetectorTrainOptions o;
  o.out_dir = dir.string();
  o.image_size = 64;
  o.patch_size = 16;
  o.hidden_size = 32;
  o.heads = 2;
  o.depth = 1;
  o.detection_tokens = 6;
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

TEST(DetectorTrainer, InitialModelLoadsAsHuggingFaceYolos) {
  const fs::path dir = fresh_dir("lorq_demo_yolos_initial");
  lorq::DetectorTrainOptions o = tiny_options(dir);
  lorq::write_initial_demo_detector(dir.string(), o);
  const nlohmann::json config = nlohmann::json::parse(lorq::read_text_file((dir / "config.json").string()));
  EXPECT_EQ(config["model_type"], "yolos");
  EXPECT_TRUE(fs::exists(dir / "preprocessor_config.json"));

  const std::unique_ptr<lorq::Model> model = lorq::load_model(dir.string());
  EXPECT_EQ(model->task(), lorq::TaskKind::Detection);
  EXPECT_EQ(model->label_names(), lorq::shape_class_names());
  EXPECT_TRUE(model->tensor("vit.embeddings.detection_tokens").defined());
  EXPECT_TRUE(model->tensor("class_labels_classifier.layers.2.weight").defined());
  const lorq::ModelOutputs out = model->forward(at::zeros({2, 3, 64, 64}));
  EXPECT_EQ(out.at("logits").sizes(), (at::IntArrayRef{2, 6, 7}));
  EXPECT_EQ(out.at("boxes").sizes(), (at::IntArrayRef{2, 6, 4}));
  fs::remove_all(dir);
}

TEST(DetectorTrainer, EveryTensorGetsAGradient) {
  // The trainer updates the tensors the model hands out by name: each must take part in the forward pass.
  const fs::path dir = fresh_dir("lorq_demo_yolos_grad");
  lorq::DetectorTrainOptions o = tiny_options(dir);
  o.depth = 2;
  lorq::write_initial_demo_detector(dir.string(), o);
  const std::unique_ptr<lorq::Model> model = lorq::load_model(dir.string());
  for (const auto& [key, t] : model->named_tensors()) t.requires_grad_(true);
  at::manual_seed(3);
  const lorq::ModelOutputs out = model->forward(at::randn({2, 3, 64, 64}));
  (out.at("logits").square().sum() + out.at("boxes").sum()).backward();
  for (const auto& [key, t] : model->named_tensors()) {
    ASSERT_TRUE(t.grad().defined()) << key;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0) << key;
  }
  fs::remove_all(dir);
}

TEST(DetectorTrainer, TrainsWritesAndLearns) {
  const fs::path dir = fresh_dir("lorq_demo_yolos_train");
  lorq::DetectorTrainOptions o = tiny_options(dir);
  o.steps = 60;
  o.lr = 1e-3;
  const lorq::DetectorTrainResult r = lorq::train_demo_detector(o);
  EXPECT_EQ(r.steps, 60);
  EXPECT_EQ(r.resumed_from, 0);
  // The set loss of an untrained model is ~7.5 (CE ~1.9, L1 ~0.6, GIoU ~0.95); 60 steps take it well down.
  EXPECT_LT(r.final_loss, r.first_loss - 0.5) << r.first_loss << " -> " << r.final_loss;
  EXPECT_GE(r.heldout_map50, 0.0);
  EXPECT_LE(r.heldout_map50, 1.0);
  EXPECT_FALSE(fs::exists(dir / "checkpoint"));  // removed once the run finished
  const std::unique_ptr<lorq::Model> model = lorq::load_model(dir.string());
  EXPECT_EQ(model->task(), lorq::TaskKind::Detection);
  fs::remove_all(dir);
}

TEST(DetectorTrainer, ResumedRunEqualsUninterruptedRun) {
  const fs::path straight = fresh_dir("lorq_demo_yolos_straight"), interrupted = fresh_dir("lorq_demo_yolos_resumed");
  lorq::train_demo_detector(tiny_options(straight));

  // Cancel after step 6: the checkpoint of step 4 stays, the model files are not written.
  std::atomic<bool> cancel{false};
  lorq::JobControl job;
  job.cancel = &cancel;
  job.progress = [&](const lorq::Progress& p) {
    if (p.done == 6) cancel = true;
  };
  EXPECT_THROW(lorq::train_demo_detector(tiny_options(interrupted), job), lorq::Cancelled);
  EXPECT_FALSE(fs::exists(interrupted / "model.safetensors"));
  ASSERT_TRUE(fs::exists(interrupted / "checkpoint" / "state.json"));

  // A checkpoint made with other options is not resumed silently.
  lorq::DetectorTrainOptions other = tiny_options(interrupted);
  other.resume = true;
  other.batch = 8;
  EXPECT_THROW(lorq::train_demo_detector(other), lorq::Error);

  lorq::DetectorTrainOptions o = tiny_options(interrupted);
  o.resume = true;
  const lorq::DetectorTrainResult r = lorq::train_demo_detector(o);
  EXPECT_EQ(r.resumed_from, 4);

  const std::unique_ptr<lorq::Model> a = lorq::load_model(straight.string());
  const std::unique_ptr<lorq::Model> b = lorq::load_model(interrupted.string());
  for (const auto& [key, t] : a->named_tensors()) {
    EXPECT_TRUE(at::allclose(t, b->tensor(key), 1e-5, 1e-6)) << key;
  }

  fs::remove_all(straight);
  fs::remove_all(interrupted);
}

TEST(DetectorTrainer, BackboneInitialisesTheEncoder) {
  const std::string vit_dir = std::string(LORQ_SOURCE_DIR) + "/datasets/demo-vit";
  const fs::path dir = fresh_dir("lorq_demo_yolos_backbone");
  lorq::DetectorTrainOptions o = tiny_options(dir);
  o.backbone = vit_dir;
  lorq::write_initial_demo_detector(dir.string(), o);
  const std::unique_ptr<lorq::Model> vit = lorq::load_model(vit_dir);
  const std::unique_ptr<lorq::Model> yolos = lorq::load_model(dir.string());
  EXPECT_EQ(yolos->dimensions().at("embed_dim"), 96);  // the backbone's width, not the requested 32
  const at::Tensor qkv = vit->tensor("blocks.2.attn.qkv.weight");
  EXPECT_TRUE(at::equal(yolos->tensor("vit.encoder.layer.2.attention.attention.key.weight"), qkv.narrow(0, 96, 96)));
  EXPECT_TRUE(at::equal(yolos->tensor("vit.encoder.layer.5.output.dense.bias"), vit->tensor("blocks.5.mlp.fc2.bias")));
  EXPECT_TRUE(at::equal(yolos->tensor("vit.layernorm.weight"), vit->tensor("norm.weight")));
  // Position embeddings: the class token's copied, the 4x4 patch grid resized to the 4x4 grid of a 64 px input
  // (unchanged: bicubic at scale 1 is the identity).
  const at::Tensor pos = yolos->tensor("vit.embeddings.position_embeddings");
  EXPECT_EQ(pos.size(1), 1 + 16 + o.detection_tokens);
  EXPECT_TRUE(at::allclose(pos.narrow(1, 0, 17), vit->tensor("pos_embed"), 1e-6, 1e-6));
  fs::remove_all(dir);
}

// The share of the first layer's attention (averaged over heads and images) that a token gives to the patches in
// `near` (indices into the patch grid), next to the share a uniform spread over the patches would give them.
struct AttentionShare {
  double near = 0, uniform = 0;
};
AttentionShare first_layer_share(lorq::Model& m, const at::Tensor& images, int64_t token,
                                 const std::vector<int64_t>& near, int64_t patches, int64_t heads) {
  c10::NoGradGuard no_grad;
  const at::Tensor x = m.embed(images).at(0);  // [B, T, D]
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), hd = D / heads;
  const std::string p = "vit.encoder.layer.0.";
  const at::Tensor h = at::layer_norm(x, {D}, m.tensor(p + "layernorm_before.weight"),
                                      m.tensor(p + "layernorm_before.bias"), 1e-12);
  auto project = [&](const char* name) {
    const std::string l = p + "attention.attention." + name;
    return at::linear(h, m.tensor(l + ".weight"), m.tensor(l + ".bias")).view({B, T, heads, hd}).transpose(1, 2);
  };
  const at::Tensor a = (project("query").matmul(project("key").transpose(-1, -2)) / std::sqrt(double(hd))).softmax(-1);
  const at::Tensor row = a.select(2, token).narrow(-1, 1, patches).mean(at::IntArrayRef{0, 1}).to(at::kDouble);  // [patches]
  AttentionShare s;
  for (int64_t i : near) s.near += row[i].item<double>();
  s.uniform = row.sum().item<double>() * double(near.size()) / double(patches);
  return s;
}

TEST(DetectorTrainer, FromScratchAttentionStartsLocal) {
  // Without a backbone the position embeddings and query/key start so that a token looks around its own place:
  // a patch at its 3x3 neighbourhood, a detection token at the 2x2 patches of its anchor cell (see the trainer).
  // (With random position embeddings both shares are about the uniform ones.)
  const fs::path dir = fresh_dir("lorq_demo_yolos_local");
  lorq::DetectorTrainOptions o = tiny_options(dir);
  o.image_size = 128;  // an 8x8 patch grid, 16 detection tokens on a 4x4 grid of cells
  o.detection_tokens = 16;
  o.hidden_size = 64;  // heads of 32 channels, as the demo detector's
  o.heads = 2;
  lorq::write_initial_demo_detector(dir.string(), o);
  const std::unique_ptr<lorq::Model> m = lorq::load_model(dir.string());
  at::manual_seed(11);
  const at::Tensor images = at::randn({4, 3, 128, 128});
  const int64_t grid = 8, patches = grid * grid;
  // The patch at (row 3, column 5) and its neighbours.
  std::vector<int64_t> around;
  for (int64_t dy = -1; dy <= 1; ++dy)
    for (int64_t dx = -1; dx <= 1; ++dx) around.push_back((3 + dy) * grid + 5 + dx);
  const AttentionShare patch = first_layer_share(*m, images, 1 + 3 * grid + 5, around, patches, o.heads);
  EXPECT_GT(patch.near, 2 * patch.uniform) << patch.near << " vs uniform " << patch.uniform;
  // Detection token 6: cell (row 1, column 2) of the 4x4 grid, i.e. patches rows 2-3, columns 4-5.
  const at::Tensor anchors = lorq::query_anchors(16);
  EXPECT_FLOAT_EQ(anchors[6][0].item<float>(), 5.0f / 8);
  EXPECT_FLOAT_EQ(anchors[6][1].item<float>(), 3.0f / 8);
  const AttentionShare det =
      first_layer_share(*m, images, 1 + patches + 6, {2 * grid + 4, 2 * grid + 5, 3 * grid + 4, 3 * grid + 5},
                        patches, o.heads);
  EXPECT_GT(det.near, 3 * det.uniform) << det.near << " vs uniform " << det.uniform;
  std::printf("first-layer attention on the own neighbourhood: patch %.3f (uniform %.3f), detection token %.3f (uniform %.3f)\n",
              patch.near, patch.uniform, det.near, det.uniform);
  fs::remove_all(dir);
}

TEST(DetectorTrainer, ContinuesFromATrainedDetector) {
  const fs::path first = fresh_dir("lorq_demo_yolos_first"), second = fresh_dir("lorq_demo_yolos_second");
  const lorq::DetectorTrainResult a = lorq::train_demo_detector(tiny_options(first));
  lorq::DetectorTrainOptions o = tiny_options(second);
  o.init = first.string();
  o.hidden_size = 48;  // the detector continued from decides the architecture
  o.heads = 3;
  o.steps = 1;
  o.lr = 1e-9;  // one step that changes (almost) nothing: the result is the starting point
  const lorq::DetectorTrainResult b = lorq::train_demo_detector(o);
  EXPECT_LT(b.first_loss, a.first_loss);  // it started trained, not from a new model
  const std::unique_ptr<lorq::Model> x = lorq::load_model(first.string());
  const std::unique_ptr<lorq::Model> y = lorq::load_model(second.string());
  EXPECT_EQ(y->dimensions().at("embed_dim"), 32);
  for (const auto& [key, t] : x->named_tensors()) EXPECT_TRUE(at::allclose(t, y->tensor(key), 1e-5, 1e-6)) << key;
  o.init = (first / "missing").string();
  EXPECT_THROW(lorq::train_demo_detector(o), lorq::Error);
  fs::remove_all(first);
  fs::remove_all(second);
}

TEST(DetectorTrainer, RejectsBadOptions) {
  lorq::DetectorTrainOptions o = tiny_options(fresh_dir("lorq_demo_yolos_bad"));
  o.patch_size = 24;
  EXPECT_THROW(lorq::train_demo_detector(o), lorq::Error);
  o = tiny_options(fresh_dir("lorq_demo_yolos_bad"));
  o.out_dir.clear();
  EXPECT_THROW(lorq::train_demo_detector(o), lorq::Error);
  o = tiny_options(fresh_dir("lorq_demo_yolos_bad"));
  o.detection_tokens = 3;
  EXPECT_THROW(lorq::train_demo_detector(o), lorq::Error);
  o = tiny_options(fresh_dir("lorq_demo_yolos_bad"));
  o.anchor_cost = -1;
  EXPECT_THROW(lorq::train_demo_detector(o), lorq::Error);
  o = tiny_options(fresh_dir("lorq_demo_yolos_bad"));
  o.backbone = "/nonexistent/vit";
  EXPECT_THROW(lorq::train_demo_detector(o), lorq::Error);
}

}  // namespace
