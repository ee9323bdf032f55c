// LRA-QViT's building blocks inside MLoRQ (pipeline/lraqvit_blocks.h) on the demo: WADS keeps the function with
// quantization off and rescales the LFH consistently, per-token quantizers compute what a scalar reference computes,
// recovery lowers its loss and changes only float biases/norms, and an export with every block reloads bit-exact.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/io/export.h"
#include "lorq/io/images.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/final_model.h"
#include "lorq/pipeline/lraqvit_blocks.h"
#include "lorq/session/api.h"
#include "lorq/session/lraqvit_blocks_row.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {

at::Tensor logits(Model& m, const at::Tensor& x) {
  c10::NoGradGuard no_grad;
  return m.forward(x).logits();
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

// Symmetric per-row fake quantization written out element by element (token_quant.h's numerics).
at::Tensor scalar_per_token(const at::Tensor& x2d, int bits) {
  const at::Tensor x = x2d.contiguous();
  at::Tensor out = at::empty_like(x);
  const float qmax = float((1 << (bits - 1)) - 1);
  const int64_t R = x.size(0), C = x.size(1);
  const float* in = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < R; ++r) {
    float m = 0;
    for (int64_t c = 0; c < C; ++c) m = std::max(m, std::fabs(in[r * C + c]));
    const float d = m > 0 ? m / qmax : 1.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float q = std::min(qmax, std::max(-qmax, std::nearbyint(in[r * C + c] / d)));
      o[r * C + c] = d * q;
    }
  }
  return out;
}

}  // namespace

class BlocksDemo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    init_threads();
    demo_ = new api::DemoPaths(api::find_demo());
    ASSERT_FALSE(demo_->model_dir.empty());
    model_ = load_model(demo_->model_dir).release();
    set_ = new ImageSet(open_labels_csv(demo_->labels_csv));
    CompressSettings s;
    s.calibration.images = 16;
    s.lfh_images = 4;
    s.lfh.projections = 16;
    s.global_error.anchors = 3;
    analysis_ = new CompressionAnalysis(analyze_model(*model_, *set_, s));
    // 3 average bits: a mix of quantized and low-rank layers.
    alloc_ = new Allocation(allocate(*analysis_, uniform_allocation(*analysis_, 3).bytes));
    std::vector<at::Tensor> xs;
    for (int i = 0; i < 16; ++i) xs.push_back(load_image(set_->items.at(i).path, model_->preprocessing()));
    calib_ = new at::Tensor(at::stack(xs));
    xs.clear();
    for (int i = 200; i < 208; ++i) xs.push_back(load_image(set_->items.at(i).path, model_->preprocessing()));
    held_out_ = new at::Tensor(at::stack(xs));
  }
  static void TearDownTestSuite() {
    delete held_out_;
    delete calib_;
    delete alloc_;
    delete analysis_;
    delete set_;
    delete model_;
    delete demo_;
  }
  static FinalModel build(const LraQvitBlockSettings& blocks) {
    FinalModelSettings fs;
    fs.blocks = blocks;
    return build_final_model(*model_, *analysis_, *alloc_, *calib_, fs);
  }
  static api::DemoPaths* demo_;
  static Model* model_;
  static ImageSet* set_;
  static CompressionAnalysis* analysis_;
  static Allocation* alloc_;
  static at::Tensor *calib_, *held_out_;
};
api::DemoPaths* BlocksDemo::demo_ = nullptr;
Model* BlocksDemo::model_ = nullptr;
ImageSet* BlocksDemo::set_ = nullptr;
CompressionAnalysis* BlocksDemo::analysis_ = nullptr;
Allocation* BlocksDemo::alloc_ = nullptr;
at::Tensor* BlocksDemo::calib_ = nullptr;
at::Tensor* BlocksDemo::held_out_ = nullptr;

TEST_F(BlocksDemo, AllocationMixesQuantAndLowRank) {
  int low_rank = 0, quant = 0;
  for (size_t i = 0; i < alloc_->choice.size(); ++i) {
    if (alloc_->choice[i] == kKeepFloat) continue;
    (analysis_->layers[i].options[alloc_->choice[i]].kind == OptionKind::LowRank ? low_rank : quant)++;
  }
  EXPECT_GT(low_rank, 0);
  EXPECT_GT(quant, 0);
}

TEST_F(BlocksDemo, WadsKeepsTheFunctionAndRescalesTheLfh) {
  auto m = model_->clone();
  const at::Tensor y0 = logits(*m, *held_out_);
  std::map<std::string, at::Tensor> lfh = analysis_->lfh;
  std::map<std::string, at::Tensor> w0;
  for (const auto& l : m->linear_layers()) w0[l.name] = m->weight(l.name).clone();
  LraQvitBlockSettings s;
  s.wads = true;
  s.wads_steps = 10;
  s.wads_weight_bits = 3;
  s.wads_act_bits = 8;
  const auto points = apply_wads_before_final_layers(*m, *calib_, s, &lfh);
  // Every block's norm1, norm2 and proj input: 6 x 3 (the head reads the class token, not a LayerNorm output it could
  // fold into).
  EXPECT_EQ(points.size(), 18u);
  double improved = 0;
  for (const auto& p : points) {
    EXPECT_LE(p.final_error, p.identity_error + 1e-12) << p.point.name;
    improved += p.identity_error - p.final_error;
  }
  EXPECT_GT(improved, 0) << "no point's scale helped";
  // Float noise only: the scales are exactly folded.
  EXPECT_LT(max_rel_diff(logits(*m, *held_out_), y0), 1e-4);
  int changed = 0;
  for (const auto& [name, h] : lfh) {
    const at::Tensor w1 = m->weight(name).reshape(h.sizes()), w = w0[name].reshape(h.sizes());
    if (!at::equal(w1, w)) ++changed;
    // The sensitivity of a weight times its square is what the scaling keeps.
    const at::Tensor before = analysis_->lfh.at(name) * w * w, after = h * w1 * w1;
    EXPECT_LT(max_rel_diff(after, before), 1e-4) << name;
  }
  EXPECT_GT(changed, 12) << "WADS changed almost no weight";
}

TEST_F(BlocksDemo, PerTokenQuantizersMatchAScalarReference) {
  LraQvitBlockSettings s;
  s.per_token_bits = 4;
  FinalModel f = build(s);
  FinalModel weights_only = build({});
  EXPECT_FALSE(f.activations_quantized);
  EXPECT_GT(max_rel_diff(logits(*f.model, *held_out_), logits(*weights_only.model, *held_out_)), 1e-4);
  // One low-rank and one quantized layer, on the activations they see: Ã·Q(B̃·Q(x)) + b and W̃·Q(x) + b.
  const CompressedLayer *low_rank = nullptr, *quant = nullptr;
  for (const CompressedLayer& c : f.layers) {
    if (f.model->layer(c.layer).role == LayerRole::PatchEmbedding) continue;
    if (c.form == LayerForm::LowRank && !low_rank) low_rank = &c;
    if (c.form == LayerForm::Quant && !quant) quant = &c;
  }
  ASSERT_TRUE(low_rank && quant);
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> seen;
  f.model->set_observer({low_rank->layer, quant->layer},
                        [&](const std::string& l, const at::Tensor& x, const at::Tensor& y) {
                          seen[l] = {x.clone(), y.clone()};
                        });
  logits(*f.model, held_out_->slice(0, 0, 2));
  f.model->clear_observer();
  for (const CompressedLayer* c : {low_rank, quant}) {
    ASSERT_TRUE(f.model->has_linear_override(c->layer)) << c->layer;
    const at::Tensor x = seen.at(c->layer).first.reshape({-1, f.model->layer(c->layer).in_features});
    at::Tensor ref;
    if (c->form == LayerForm::LowRank) {
      const at::Tensor z = at::matmul(scalar_per_token(x, 4), c->b.dequantized().t());
      ref = at::matmul(scalar_per_token(z, 4), c->a.dequantized().t());
    } else {
      ref = at::matmul(scalar_per_token(x, 4), c->dequantized_weight().t());
    }
    const at::Tensor b = f.model->bias(c->layer);
    if (b.defined()) ref = ref + b;
    EXPECT_LT(max_rel_diff(seen.at(c->layer).second.reshape(ref.sizes()), ref), 1e-5) << c->layer;
  }
}

TEST_F(BlocksDemo, PerTokenAndStaticActivationsAreExclusive) {
  FinalModelSettings fs;
  fs.activations.enabled = true;
  fs.blocks.per_token_bits = 8;
  EXPECT_THROW(build_final_model(*model_, *analysis_, *alloc_, *calib_, fs), Error);
}

TEST_F(BlocksDemo, RecoveryLowersItsLossAndKeepsTheCodes) {
  LraQvitBlockSettings s;
  s.recovery_steps = 12;
  s.recovery_batch = 4;
  s.recovery_lr = 1e-3;
  FinalModel f = build(s);
  FinalModel plain = build({});
  EXPECT_EQ(f.blocks_report.recovery.steps_run, 12);
  EXPECT_LT(f.blocks_report.recovery_loss_after, 0.95 * f.blocks_report.recovery_loss_before);
  ASSERT_EQ(f.layers.size(), plain.layers.size());
  for (size_t i = 0; i < f.layers.size(); ++i) {
    const at::Tensor w = f.layers[i].dequantized_weight(), w0 = plain.layers[i].dequantized_weight();
    EXPECT_EQ(w.defined(), w0.defined());
    if (w.defined()) {
      EXPECT_TRUE(at::equal(w, w0)) << f.layers[i].layer;
    }
  }
  int biases_changed = 0;
  for (const auto& [key, t] : f.model->named_tensors()) {
    const at::Tensor t0 = plain.model->tensor(key);
    if (at::equal(t, t0)) continue;
    const bool bias_or_norm = key.find(".bias") != std::string::npos || key.find("norm") != std::string::npos;
    EXPECT_TRUE(bias_or_norm) << key << " changed";
    biases_changed += bias_or_norm;
  }
  EXPECT_GT(biases_changed, 10);
}

TEST_F(BlocksDemo, ExportWithEveryBlockReloadsBitExact) {
  LraQvitBlockSettings s;
  s.per_token_bits = 8;
  s.wads = true;
  s.wads_steps = 5;
  s.wads_weight_bits = 3;
  s.recovery_steps = 4;
  s.recovery_batch = 4;
  FinalModel f = build(s);
  const std::string out = ::testing::TempDir() + "/lorq_blocks_export_" + std::to_string(::getpid());
  std::filesystem::remove_all(out);
  export_compressed(out, *f.model, demo_->model_dir, *analysis_, *alloc_, f.layers, nullptr, {},
                    lraqvit_blocks_metadata(f.blocks));
  auto loaded = load_model(out);
  EXPECT_TRUE(at::equal(logits(*loaded, *held_out_), logits(*f.model, *held_out_)));
  for (const auto& [key, t] : f.model->named_tensors()) EXPECT_TRUE(at::equal(loaded->tensor(key), t)) << key;
  for (const auto& l : loaded->linear_layers())
    EXPECT_EQ(loaded->has_linear_override(l.name), l.role != LayerRole::PatchEmbedding) << l.name;
  std::filesystem::remove_all(out);
}

// The session's options, its errors for bad combinations, and the comparison's "MLoRQ + LRA-QViT blocks" call.
TEST(BlocksSession, OptionsAndTheComparisonRow) {
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.model_dir.empty());
  auto session = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", api::AnalysisSettings::fast(), "");
  session->analyze({});
  const api::Allocation a = session->make_allocator(api::ConstraintMap{})->solve(session->budget_for_avg_bits(4));
  api::FinalSettings bad;
  bad.per_token_activations = true;
  EXPECT_THROW(session->finalize(a, bad, {}), Error);  // no activation bits
  bad = {};
  bad.wads = true;
  EXPECT_THROW(session->finalize(a, bad, {}), Error);

  api::FinalSettings fs;
  fs.activation_bits = 8;
  fs.wads_steps = 5;
  fs.recovery_steps = 3;
  fs.recovery_images = 40;  // more than the analysis' 16: the others come from the calibration set
  const api::FinalSettings row = api::with_lraqvit_blocks(fs);
  EXPECT_TRUE(row.per_token_activations && row.wads);
  EXPECT_EQ(row.recovery_steps, 3);
  EXPECT_EQ(api::with_lraqvit_blocks(api::FinalSettings{}).recovery_steps, api::kLraQvitBlocksRecoverySteps);
  const api::FinalSummary sum = api::finalize_with_lraqvit_blocks(*session, a, fs, {});
  EXPECT_EQ(sum.wads_points, 18);
  EXPECT_LE(sum.wads_error_after, sum.wads_error_before);
  EXPECT_GT(sum.recovery_loss_before, 0);
  EXPECT_EQ(session->seen_images().size(), 40u);  // the recovery's images are left out of evaluations
  const api::EvalSummary e = session->evaluate_compressed(a, demo.images_dir, demo.labels_csv, 64, {});
  EXPECT_GT(e.top1_pct, 50);
}
