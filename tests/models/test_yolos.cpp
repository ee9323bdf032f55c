// Hugging Face YolosForObjectDetection: the HF goldens of ../shared/models/yolos_micro*_random (outputs and every
// intermediate), a slow float64 reference written from the HF code's formulas on other (odd, non-square) input
// sizes, staged execution, the interpolation cache, clone, hooks, the config and its errors.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/registry.h"
#include "lorq/models/yolos.h"
#include "lorq/quant/activation_quant.h"
#include "shared_data.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

const std::string kMicro = "models/yolos_micro_random";
const std::string kMidPe = "models/yolos_micro_midpe_random";
// HF_GOLDENS.md: ~1e-5 on the micro models catches every porting mistake it lists (the smallest, a GELU tanh
// approximation, moves the logits by 4e-4) while float32 noise stays near 1e-6.
constexpr double kMicroTolerance = 1e-5;

std::unique_ptr<YolosForObjectDetection> load_yolos(const std::string& dir) {
  std::unique_ptr<Model> m = load_model(dir);
  auto* y = dynamic_cast<YolosForObjectDetection*>(m.get());
  if (!y) throw Error(dir, "did not load as YolosForObjectDetection");
  m.release();
  return std::unique_ptr<YolosForObjectDetection>(y);
}

std::map<std::string, at::Tensor> goldens(const std::string& dir) {
  return read_all_tensors(SafetensorsFile::open(dir + "/golden.safetensors"), /*to_float=*/false);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return INFINITY;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Hidden states reach |x| ~ 16 here, where one float32 step is 2e-6, and the patch embedding runs as a GEMM on
// flattened patches instead of HF's convolution (so that a compressed export reloads bit-exactly): they get a
// tolerance of a few float32 steps of their largest value. The outputs keep the absolute kMicroTolerance.
double hidden_tolerance(const at::Tensor& golden) {
  return 4e-6 * std::max(1.0, golden.abs().max().item<double>());
}

// Runs the goldens with LibTorch on one thread (as they were made), restoring the thread count after.
class OneThread {
 public:
  OneThread() : n_(at::get_num_threads()) { at::set_num_threads(1); }
  ~OneThread() { at::set_num_threads(n_); }

 private:
  int n_;
};

// PyTorch's bicubic resize (A = -0.75, align_corners false, borders clamped) of [N, C, h, w], from its formula.
at::Tensor reference_bicubic(const at::Tensor& x, int64_t out_h, int64_t out_w) {
  auto weights = [](int64_t in, int64_t out) {
    at::Tensor m = at::zeros({out, in}, at::kDouble);
    const double A = -0.75, scale = double(in) / double(out);
    auto cubic = [A](double d) {
      d = std::abs(d);
      if (d <= 1) return ((A + 2) * d - (A + 3)) * d * d + 1;
      if (d < 2) return ((A * d - 5 * A) * d + 8 * A) * d - 4 * A;
      return 0.0;
    };
    for (int64_t o = 0; o < out; ++o) {
      const double src = (o + 0.5) * scale - 0.5;
      const int64_t i0 = static_cast<int64_t>(std::floor(src));
      for (int64_t k = -1; k <= 2; ++k) {
        const int64_t i = std::min(std::max<int64_t>(i0 + k, 0), in - 1);
        m[o][i] += cubic(src - double(i0 + k));
      }
    }
    return m;
  };
  const at::Tensor wh = weights(x.size(2), out_h), ww = weights(x.size(3), out_w);
  return at::matmul(at::matmul(wh, x.to(at::kDouble)), ww.t());
}

struct Reference {
  at::Tensor logits, boxes, embeddings;
};

// A slow float64 forward pass written from modeling_yolos.py, independently of yolos.cpp: conv2d patch embedding,
// bicubic from its formula, per-head attention loops, LayerNorm and GELU from their formulas.
Reference reference_forward(const YolosForObjectDetection& m, const at::Tensor& images) {
  const YolosConfig& c = m.config();
  auto T = [&](const std::string& k) { return m.tensor(k).to(at::kDouble); };
  auto ln = [&](const at::Tensor& x, const std::string& k) {
    at::Tensor mu = x.mean(-1, true), var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / at::sqrt(var + c.layer_norm_eps) * T(k + ".weight") + T(k + ".bias");
  };
  auto lin = [&](const at::Tensor& x, const std::string& k) {
    return at::matmul(x, T(k + ".weight").t()) + T(k + ".bias");
  };
  auto gelu = [](const at::Tensor& x) { return 0.5 * x * (1 + at::erf(x / std::sqrt(2.0))); };
  const int64_t P = c.patch_size, Q = c.num_detection_tokens, D = c.hidden_size;
  const int64_t gh = c.image_height / P, gw = c.image_width / P;
  const int64_t rows = images.size(2) / P, cols = images.size(3) / P;
  // Position embeddings [..., 1 + gh*gw + Q, D] -> [..., 1 + rows*cols + Q, D].
  auto interpolate = [&](const at::Tensor& pe) {
    const int64_t n = pe.size(-2);
    at::Tensor flat = pe.reshape({-1, n, D});
    at::Tensor grid = flat.slice(1, 1, n - Q).transpose(1, 2).reshape({flat.size(0), D, gh, gw});
    at::Tensor patches = reference_bicubic(grid, rows, cols).flatten(2).transpose(1, 2);
    at::Tensor out = at::cat({flat.slice(1, 0, 1), patches, flat.slice(1, n - Q)}, 1);
    std::vector<int64_t> shape = pe.sizes().vec();
    shape[shape.size() - 2] = out.size(1);
    return out.reshape(shape);
  };
  at::Tensor x = at::conv2d(images.to(at::kDouble), T("vit.embeddings.patch_embeddings.projection.weight"),
                            T("vit.embeddings.patch_embeddings.projection.bias"), P);
  x = x.flatten(2).transpose(1, 2);
  const int64_t B = x.size(0);
  x = at::cat({T("vit.embeddings.cls_token").expand({B, 1, D}), x,
               T("vit.embeddings.detection_tokens").expand({B, Q, D})},
              1);
  x = x + interpolate(T("vit.embeddings.position_embeddings"));
  Reference r;
  r.embeddings = x;
  at::Tensor mid;
  if (c.use_mid_position_embeddings) mid = interpolate(T("vit.encoder.mid_position_embeddings"));
  const int64_t N = x.size(1), H = c.num_attention_heads, hd = D / H;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
    const at::Tensor h = ln(x, p + "layernorm_before");
    const at::Tensor q = lin(h, p + "attention.attention.query"), k = lin(h, p + "attention.attention.key"),
                     v = lin(h, p + "attention.attention.value");
    at::Tensor ctx = at::zeros({B, N, D}, at::kDouble);
    for (int64_t head = 0; head < H; ++head) {
      const at::Tensor qh = q.slice(2, head * hd, (head + 1) * hd), kh = k.slice(2, head * hd, (head + 1) * hd),
                       vh = v.slice(2, head * hd, (head + 1) * hd);
      at::Tensor s = at::matmul(qh, kh.transpose(1, 2)) / std::sqrt(double(hd));
      s = at::exp(s - std::get<0>(s.max(-1, true)));
      ctx.slice(2, head * hd, (head + 1) * hd).copy_(at::matmul(s / s.sum(-1, true), vh));
    }
    x = x + lin(ctx, p + "attention.output.dense");
    x = x + lin(gelu(lin(ln(x, p + "layernorm_after"), p + "intermediate.dense")), p + "output.dense");
    if (mid.defined() && i < c.num_hidden_layers - 1) x = x + mid[i];
  }
  const at::Tensor det = ln(x, "vit.layernorm").slice(1, N - Q);
  auto mlp = [&](const std::string& name) {
    at::Tensor y = at::relu(lin(det, name + ".layers.0"));
    y = at::relu(lin(y, name + ".layers.1"));
    return lin(y, name + ".layers.2");
  };
  r.logits = mlp("class_labels_classifier");
  r.boxes = at::sigmoid(mlp("bbox_predictor"));
  return r;
}

// The model's outputs through the stages, one by one.
ModelOutputs staged(Model& m, const at::Tensor& x) {
  StageState s = m.embed(x);
  for (int i = 0; i < m.num_stages(); ++i) s = m.run_stage(i, s);
  return m.finish(s);
}

void expect_same_outputs(const ModelOutputs& a, const ModelOutputs& b) {
  ASSERT_EQ(a.names, b.names);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a.tensors[i], b.tensors[i])) << a.names[i];
}

std::string temp_folder(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lorq_yolos_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A copy of a shared model folder whose config.json / preprocessor_config.json can be edited.
std::string copy_model(const std::string& from, const std::string& name) {
  const std::string d = temp_folder(name);
  for (const char* f : {"config.json", "preprocessor_config.json", "model.safetensors"})
    fs::copy_file(from + "/" + f, d + "/" + f);
  return d;
}

std::string load_error(const std::string& path) {
  try {
    load_model(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void replace_in_file(const std::string& path, const std::string& from, const std::string& to) {
  std::string text = read_text_file(path);
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from << " not in " << path;
  text.replace(at, from.size(), to);
  fs::remove(path);
  std::ofstream(path) << text;
}

}  // namespace

TEST(Yolos, MicroReproducesTheHuggingFaceGoldens) {
  const std::string dir = testdata::shared_path(kMicro);
  LORQ_REQUIRE_SHARED_FILE(dir + "/golden.safetensors");
  c10::NoGradGuard no_grad;
  OneThread one_thread;
  auto m = load_yolos(dir);
  const auto g = goldens(dir);
  const at::Tensor x = g.at("pixel_values");  // [2, 3, 64, 96]: grid 4x6 from the config's 4x4
  const double pe_diff = max_diff(m->interpolated_position_embeddings(4, 6), g.at("interpolated_position_embeddings"));
  EXPECT_LE(pe_diff, kMicroTolerance);
  StageState s = m->embed(x);
  const double embed_diff = max_diff(s.at(0), g.at("embeddings"));
  EXPECT_LE(embed_diff, hidden_tolerance(g.at("embeddings")));
  double layer_diff = 0;
  for (int i = 0; i < m->num_stages(); ++i) {
    s = m->run_stage(i, s);
    const at::Tensor& expected = g.at("encoder_layer_" + std::to_string(i));
    const double d = max_diff(s.at(0), expected);
    EXPECT_LE(d, hidden_tolerance(expected)) << "encoder layer " << i;
    layer_diff = std::max(layer_diff, d);
  }
  EXPECT_LE(max_diff(m->last_hidden_state(s), g.at("last_hidden_state")), hidden_tolerance(g.at("last_hidden_state")));
  const ModelOutputs out = m->finish(s);
  ASSERT_EQ(out.names, (std::vector<std::string>{"logits", "boxes"}));
  const double logit_diff = max_diff(out.at("logits"), g.at("logits"));
  const double box_diff = max_diff(out.at("boxes"), g.at("pred_boxes"));
  EXPECT_LE(logit_diff, kMicroTolerance);
  EXPECT_LE(box_diff, kMicroTolerance);
  std::printf("yolos_micro_random max |diff|: interpolated PE %.3g, embeddings %.3g, encoder layers %.3g, logits %.3g, "
              "boxes %.3g\n",
              pe_diff, embed_diff, layer_diff, logit_diff, box_diff);
}

TEST(Yolos, MidPositionEmbeddingsReproduceTheHuggingFaceGoldens) {
  const std::string dir = testdata::shared_path(kMidPe);
  LORQ_REQUIRE_SHARED_FILE(dir + "/golden.safetensors");
  c10::NoGradGuard no_grad;
  OneThread one_thread;
  auto m = load_yolos(dir);
  ASSERT_TRUE(m->config().use_mid_position_embeddings);
  const auto g = goldens(dir);
  const at::Tensor mid = g.at("interpolated_mid_position_embeddings");  // [3, 1, 35, 96]
  const double mid_diff = max_diff(m->interpolated_mid_position_embeddings(4, 6), mid);
  EXPECT_LE(mid_diff, kMicroTolerance);
  EXPECT_LE(max_diff(m->interpolated_position_embeddings(4, 6), g.at("interpolated_position_embeddings")),
            kMicroTolerance);
  StageState s = m->embed(g.at("pixel_values"));
  EXPECT_LE(max_diff(s.at(0), g.at("embeddings")), hidden_tolerance(g.at("embeddings")));
  double layer_diff = 0;
  for (int i = 0; i < m->num_stages(); ++i) {
    s = m->run_stage(i, s);
    // The golden is the layer's output before the mid-layer embedding is added; a stage adds it (not after the last).
    at::Tensor expected = g.at("encoder_layer_" + std::to_string(i));
    if (i < m->num_stages() - 1) expected = expected + mid[i];
    const double d = max_diff(s.at(0), expected);
    EXPECT_LE(d, hidden_tolerance(expected)) << "encoder layer " << i;
    layer_diff = std::max(layer_diff, d);
  }
  EXPECT_LE(max_diff(m->last_hidden_state(s), g.at("last_hidden_state")), hidden_tolerance(g.at("last_hidden_state")));
  const ModelOutputs out = m->finish(s);
  const double logit_diff = max_diff(out.at("logits"), g.at("logits"));
  const double box_diff = max_diff(out.at("boxes"), g.at("pred_boxes"));
  EXPECT_LE(logit_diff, kMicroTolerance);
  EXPECT_LE(box_diff, kMicroTolerance);
  std::printf("yolos_micro_midpe_random max |diff|: interpolated mid PE %.3g, encoder layers %.3g, logits %.3g, "
              "boxes %.3g\n",
              mid_diff, layer_diff, logit_diff, box_diff);
}

TEST(Yolos, MatchesAFloat64ReferenceAtOddAndNonSquareSizes) {
  for (const std::string& rel : {kMicro, kMidPe}) {
    const std::string dir = testdata::shared_path(rel);
    LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
    c10::NoGradGuard no_grad;
    auto m = load_yolos(dir);
    at::manual_seed(5);
    // Grids 3x7 (fewer rows, more columns than the config's 4x4, with pixels the conv drops), 1x1, 6x5 and the
    // native 4x4.
    for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{53, 117}, {16, 31}, {96, 80}, {64, 64}}) {
      const at::Tensor x = at::randn({2, 3, h, w});
      const Reference r = reference_forward(*m, x);
      const ModelOutputs out = m->forward(x);
      EXPECT_LE(max_diff(m->embed(x).at(0), r.embeddings), 1e-5) << rel << " " << h << "x" << w;
      EXPECT_LE(max_diff(out.at("logits"), r.logits), 5e-5) << rel << " " << h << "x" << w;
      EXPECT_LE(max_diff(out.at("boxes"), r.boxes), 5e-5) << rel << " " << h << "x" << w;
    }
  }
}

TEST(Yolos, ConfigLabelsPreprocessingAndLayers) {
  const std::string dir = testdata::shared_path(kMicro);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  auto m = load_yolos(dir);
  EXPECT_EQ(m->task(), TaskKind::Detection);
  EXPECT_EQ(m->family(), "Hugging Face YOLOS");
  EXPECT_EQ(m->architecture(), "YolosForObjectDetection");
  EXPECT_EQ(m->num_labels(), 6);
  EXPECT_EQ(m->label(5), "LABEL_5");
  EXPECT_EQ(m->config_json(), read_text_file(dir + "/config.json"));
  EXPECT_EQ(m->preprocessor_config_path(), dir + "/preprocessor_config.json");
  const YolosConfig& c = m->config();
  EXPECT_EQ(c.hidden_size, 96);
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.num_attention_heads, 3);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_EQ(c.num_detection_tokens, 10);
  EXPECT_EQ(c.image_height, 64);
  EXPECT_EQ(c.image_width, 64);
  EXPECT_DOUBLE_EQ(c.layer_norm_eps, 1e-12);
  EXPECT_FALSE(c.use_mid_position_embeddings);
  const Preprocessing& pp = m->preprocessing();
  EXPECT_EQ(pp.image_processor, "YolosImageProcessor");
  EXPECT_EQ(pp.shortest_edge, 800);
  EXPECT_EQ(pp.longest_edge, 1333);
  EXPECT_EQ(pp.interpolation, "bilinear");
  EXPECT_FLOAT_EQ(pp.mean[1], 0.456f);
  EXPECT_FLOAT_EQ(pp.std[2], 0.225f);
  EXPECT_EQ(m->dimensions().at("depth"), 4);
  EXPECT_EQ(m->dimensions().at("detection_tokens"), 10);

  // 1 patch embedding + 6 per encoder layer + 2 heads of 3.
  ASSERT_EQ(m->linear_layers().size(), 1u + 6 * 4 + 6);
  const LinearLayerInfo& patch = m->layer("vit.embeddings.patch_embeddings.projection");
  EXPECT_EQ(patch.role, LayerRole::PatchEmbedding);
  EXPECT_EQ(patch.stage, -1);
  EXPECT_FALSE(patch.low_rank_allowed);
  EXPECT_EQ(patch.in_features, 3 * 16 * 16);
  for (const char* l : {"attention.attention.query", "attention.attention.key", "attention.attention.value",
                        "attention.output.dense", "intermediate.dense", "output.dense"}) {
    const LinearLayerInfo& info = m->layer(std::string("vit.encoder.layer.2.") + l);
    EXPECT_EQ(info.role, LayerRole::Hidden) << l;
    EXPECT_EQ(info.stage, 2) << l;
  }
  for (const char* h : {"class_labels_classifier", "bbox_predictor"})
    for (int k = 0; k < 3; ++k) {
      const LinearLayerInfo& info = m->layer(std::string(h) + ".layers." + std::to_string(k));
      EXPECT_EQ(info.role, LayerRole::Head);
      EXPECT_EQ(info.stage, m->num_stages() - 1);  // run_from(stage) re-runs finish(), where the heads are
    }
  EXPECT_EQ(m->layer("class_labels_classifier.layers.2").out_features, 7);
  EXPECT_EQ(m->layer("bbox_predictor.layers.2").out_features, 4);

  // Activation points: 8 per layer, the head input, and the inputs of each head's second and third layers.
  ASSERT_EQ(m->activation_points().size(), 8u * 4 + 1 + 4);
  const ActivationPoint& after = m->activation_point("vit.encoder.layer.1.layernorm_after.out");
  EXPECT_EQ(after.kind, ActivationKind::LayerNormOutput);
  EXPECT_EQ(after.consumer, "vit.encoder.layer.1.intermediate.dense");
  EXPECT_EQ(after.norm, "vit.encoder.layer.1.layernorm_after");
  EXPECT_EQ(m->activation_point("vit.encoder.layer.1.layernorm_before.out").kind, ActivationKind::PerTensor);
  EXPECT_EQ(m->activation_point("vit.encoder.layer.1.attention.attention.softmax").kind, ActivationKind::Softmax);
  EXPECT_EQ(m->activation_point("vit.encoder.layer.1.output.dense.in").consumer, "vit.encoder.layer.1.output.dense");
  EXPECT_EQ(m->activation_point("bbox_predictor.layers.2.in").consumer, "bbox_predictor.layers.2");
  EXPECT_EQ(m->activation_point("vit.layernorm.out").stage, m->num_stages() - 1);
}

TEST(Yolos, EveryLayerAndActivationPointRunsInTheStageItDeclares) {
  const std::string dir = testdata::shared_path(kMidPe);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  c10::NoGradGuard no_grad;
  auto m = load_yolos(dir);
  const at::Tensor x = at::randn({1, 3, 48, 80});
  int current = -1;
  std::map<std::string, int> layer_segment, point_segment;
  std::vector<std::string> names;
  for (const auto& l : m->linear_layers()) names.push_back(l.name);
  m->set_observer(names, [&](const std::string& l, const at::Tensor&, const at::Tensor&) { layer_segment[l] = current; });
  for (const auto& p : m->activation_points()) {
    const std::string name = p.name;
    m->set_activation_hook(name, [&, name](const at::Tensor& t) {
      point_segment[name] = current;
      return t;
    });
  }
  StageState s = m->embed(x);
  for (current = 0; current < m->num_stages(); ++current) s = m->run_stage(current, s);
  m->finish(s);  // current == num_stages: finish
  for (const auto& l : m->linear_layers()) {
    ASSERT_TRUE(layer_segment.count(l.name)) << l.name;
    // A head layer runs in finish(), which run_from(its stage) includes.
    const int expected = l.role == LayerRole::Head ? m->num_stages() : l.stage;
    EXPECT_EQ(layer_segment[l.name], expected) << l.name;
  }
  for (const auto& p : m->activation_points()) {
    ASSERT_TRUE(point_segment.count(p.name)) << p.name;
    EXPECT_LE(p.stage, point_segment[p.name]) << p.name;
    EXPECT_GE(p.stage, point_segment[p.name] - 1) << p.name;
  }
}

TEST(Yolos, StagedEqualsForwardAndOverridesChangeTheOutputs) {
  const std::string dir = testdata::shared_path(kMidPe);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  c10::NoGradGuard no_grad;
  auto m = load_yolos(dir);
  const at::Tensor x = at::randn({3, 3, 80, 48});  // non-square: grid 5x3
  const ModelOutputs base = m->forward(x);
  EXPECT_EQ(base.at("logits").sizes(), (std::vector<int64_t>{3, 10, 7}));
  EXPECT_EQ(base.at("boxes").sizes(), (std::vector<int64_t>{3, 10, 4}));
  EXPECT_TRUE((base.at("boxes") > 0).all().item<bool>() && (base.at("boxes") < 1).all().item<bool>());
  expect_same_outputs(staged(*m, x), base);
  // A batch row's outputs do not depend on the other rows (up to the GEMMs' blocking).
  EXPECT_LE(max_diff(m->forward(x.slice(0, 1, 2)).at("logits"), base.at("logits").slice(0, 1, 2)), 1e-5);

  // An override of an encoder layer changes both outputs, and run_from(its stage) sees it.
  const std::string fc = "vit.encoder.layer.2.intermediate.dense";
  StageState s = m->embed(x);
  for (int i = 0; i < m->layer(fc).stage; ++i) s = m->run_stage(i, s);
  m->set_linear_override(fc, [](const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) {
    return at::linear(in, w * 0.5, b);
  });
  const ModelOutputs changed = m->forward(x);
  EXPECT_FALSE(at::allclose(changed.at("logits"), base.at("logits")));
  EXPECT_FALSE(at::allclose(changed.at("boxes"), base.at("boxes")));
  expect_same_outputs(m->run_from(m->layer(fc).stage, s), changed);
  m->clear_linear_overrides();

  // A box-head override changes the boxes only, also when re-run from the head's declared stage.
  const std::string box = "bbox_predictor.layers.2";
  s = m->embed(x);
  for (int i = 0; i < m->layer(box).stage; ++i) s = m->run_stage(i, s);
  m->set_linear_override(box, [](const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) {
    return at::linear(in, w, b + 1.0);
  });
  const ModelOutputs head = m->run_from(m->layer(box).stage, s);
  EXPECT_TRUE(at::equal(head.at("logits"), base.at("logits")));
  EXPECT_FALSE(at::allclose(head.at("boxes"), base.at("boxes")));
  expect_same_outputs(m->forward(x), head);
  m->clear_linear_overrides();

  // The patch embedding (stage -1) goes through the override too.
  m->set_linear_override("vit.embeddings.patch_embeddings.projection",
                         [](const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) {
                           return at::linear(in, w * 0.9, b);
                         });
  EXPECT_FALSE(at::allclose(m->forward(x).at("logits"), base.at("logits")));
  m->clear_linear_overrides();
  expect_same_outputs(m->forward(x), base);
}

TEST(Yolos, InterpolatedEmbeddingsFollowTheInputSizeAndTheParameters) {
  const std::string dir = testdata::shared_path(kMidPe);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  c10::NoGradGuard no_grad;
  auto m = load_yolos(dir);
  auto fresh = load_yolos(dir);
  const at::Tensor a = at::randn({1, 3, 64, 96}), b = at::randn({1, 3, 112, 48});
  const ModelOutputs a0 = m->forward(a), b0 = m->forward(b);
  expect_same_outputs(m->forward(a), a0);  // from the cache: identical
  expect_same_outputs(fresh->forward(b), b0);

  // Replacing a position embedding (set_tensor) must not leave the old interpolation in use, for either kind.
  for (const std::string key : {"vit.embeddings.position_embeddings", "vit.encoder.mid_position_embeddings"}) {
    const at::Tensor original = m->tensor(key).clone();
    m->set_tensor(key, original * 1.5);
    fresh->set_tensor(key, original * 1.5);
    const ModelOutputs changed = m->forward(a);
    EXPECT_FALSE(at::allclose(changed.at("logits"), a0.at("logits"))) << key;
    expect_same_outputs(changed, fresh->forward(a));
    m->set_tensor(key, original);
    fresh->set_tensor(key, original);
    expect_same_outputs(m->forward(a), a0);
  }
  // An in-place edit of the tensor a caller got from tensor() too.
  m->tensor("vit.embeddings.position_embeddings").mul_(2);
  EXPECT_FALSE(at::allclose(m->forward(b).at("logits"), b0.at("logits")));
  m->tensor("vit.embeddings.position_embeddings").div_(2);
  expect_same_outputs(m->forward(b), b0);

  // Many sizes in a row (more than the cache keeps) still give each size its own embeddings.
  for (int64_t w = 16; w <= 16 * 20; w += 16) {
    const at::Tensor pe = m->interpolated_position_embeddings(2, w / 16);
    EXPECT_EQ(pe.size(1), 1 + 2 * (w / 16) + 10);
  }
  expect_same_outputs(m->forward(a), a0);
}

TEST(Yolos, CloneIsIndependent) {
  const std::string dir = testdata::shared_path(kMidPe);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  c10::NoGradGuard no_grad;
  auto m = load_yolos(dir);
  const at::Tensor x = at::randn({2, 3, 64, 80});
  const ModelOutputs base = m->forward(x);  // fills m's cache before cloning
  std::unique_ptr<Model> c = m->clone();
  expect_same_outputs(c->forward(x), base);
  EXPECT_EQ(c->task(), TaskKind::Detection);
  EXPECT_EQ(c->config_json(), m->config_json());
  EXPECT_EQ(c->preprocessor_config_path(), m->preprocessor_config_path());
  c->set_tensor("vit.embeddings.position_embeddings", c->tensor("vit.embeddings.position_embeddings") * 0);
  c->set_weight("class_labels_classifier.layers.2", c->weight("class_labels_classifier.layers.2") * 0);
  const ModelOutputs cloned = c->forward(x);
  EXPECT_FALSE(at::allclose(cloned.at("logits"), base.at("logits")));
  expect_same_outputs(m->forward(x), base);  // the original is untouched
  EXPECT_FALSE(m->tensor("vit.embeddings.position_embeddings").is_same(c->tensor("vit.embeddings.position_embeddings")));
}

TEST(Yolos, RegistryRecognisesTheCheckpoint) {
  const std::string dir = testdata::shared_path(kMicro);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  bool listed = false;
  for (const Architecture& a : architectures())
    if (std::find(a.model_types.begin(), a.model_types.end(), "yolos") != a.model_types.end()) listed = true;
  EXPECT_TRUE(listed);
  EXPECT_NE(supported_architectures().find("YOLOS"), std::string::npos);
  // A config that names another model_type but YOLOS tensors: the shapes decide... only without a model_type.
  const std::string bare = temp_folder("bare");
  fs::copy_file(dir + "/model.safetensors", bare + "/model.safetensors");
  const std::string e = load_error(bare);
  EXPECT_NE(e.find(bare + "/model.safetensors: a YOLOS checkpoint needs its config.json"), std::string::npos) << e;
}

TEST(Yolos, BadFilesAreErrorsNamingTheFile) {
  const std::string dir = testdata::shared_path(kMicro);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  {  // The config's grid disagrees with the position embeddings.
    const std::string d = copy_model(dir, "grid");
    replace_in_file(d + "/config.json", "\"image_size\": [\n    64,\n    64\n  ]", "\"image_size\": [64, 96]");
    const std::string e = load_error(d);
    EXPECT_NE(e.find(d + "/model.safetensors: tensor 'vit.embeddings.position_embeddings' has shape [1, 27, 96], "
                         "expected [1, 35, 96]"),
              std::string::npos)
        << e;
  }
  {  // More labels than the classifier has outputs.
    const std::string d = copy_model(dir, "labels");
    replace_in_file(d + "/config.json", "\"5\": \"LABEL_5\"", "\"5\": \"LABEL_5\", \"6\": \"extra\"");
    replace_in_file(d + "/config.json", "\"LABEL_5\": 5", "\"LABEL_5\": 5, \"extra\": 6");
    const std::string e = load_error(d);
    EXPECT_NE(e.find("class_labels_classifier.layers.2.weight' has shape [7, 96], expected [8, 96]"),
              std::string::npos)
        << e;
  }
  {  // Mid-layer position embeddings the config says are not used.
    const std::string d = copy_model(testdata::shared_path(kMidPe), "midpe");
    replace_in_file(d + "/config.json", "\"use_mid_position_embeddings\": true", "\"use_mid_position_embeddings\": false");
    EXPECT_NE(load_error(d).find("use_mid_position_embeddings false"), std::string::npos);
  }
  {  // Malformed config.json, bad field types, an unsupported activation.
    const std::string d = copy_model(dir, "json");
    replace_in_file(d + "/config.json", "\"hidden_size\": 96,", "\"hidden_size\": 96,,");
    EXPECT_NE(load_error(d).find(d + "/config.json: invalid JSON"), std::string::npos);
    const std::string t = copy_model(dir, "type");
    replace_in_file(t + "/config.json", "\"num_hidden_layers\": 4", "\"num_hidden_layers\": \"four\"");
    EXPECT_NE(load_error(t).find(t + "/config.json: field 'num_hidden_layers' has the wrong type"), std::string::npos);
    const std::string a = copy_model(dir, "act");
    replace_in_file(a + "/config.json", "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"swish\"");
    EXPECT_NE(load_error(a).find(a + "/config.json: unsupported hidden_act 'swish'"), std::string::npos);
  }
  {  // preprocessor_config.json problems name that file.
    const std::string d = copy_model(dir, "pre");
    replace_in_file(d + "/preprocessor_config.json", "0.229,", "0.229, 0.5,");
    EXPECT_NE(load_error(d).find(d + "/preprocessor_config.json: image_std must have 3 values"), std::string::npos);
    const std::string s = copy_model(dir, "size");
    replace_in_file(s + "/preprocessor_config.json", "\"shortest_edge\": 800", "\"shortest_edge\": 0");
    EXPECT_NE(load_error(s).find(s + "/preprocessor_config.json: 'size' needs"), std::string::npos);
  }
  {  // A missing tensor.
    const std::string d = copy_model(dir, "missing");
    auto tensors = read_all_tensors(SafetensorsFile::open(d + "/model.safetensors"), false);
    tensors.erase("vit.encoder.layer.3.output.dense.bias");
    std::vector<std::pair<std::string, at::Tensor>> list(tensors.begin(), tensors.end());
    write_tensors(d + "/model.safetensors", list);
    EXPECT_NE(load_error(d).find(d + "/model.safetensors: missing tensor 'vit.encoder.layer.3.output.dense.bias'"),
              std::string::npos);
  }
  // A wrongly shaped input.
  auto m = load_yolos(dir);
  EXPECT_THROW(m->forward(at::randn({1, 3, 8, 64})), Error);
  EXPECT_THROW(m->forward(at::randn({1, 1, 64, 64})), Error);
}

// The activation points' metadata drives LayerNorm folding (§8.5) and ridge regression (§8.6): folding
// layernorm_after into intermediate.dense must keep the float function, layernorm_before (three consumers) and the
// final LayerNorm (two heads) must not be folded, and every named consumer gets ridge-corrected.
TEST(Yolos, ActivationQuantizationFoldsOnlySingleConsumerNorms) {
  const std::string dir = testdata::shared_path(kMicro);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  c10::NoGradGuard no_grad;
  auto m = load_yolos(dir);
  at::manual_seed(11);
  const at::Tensor images = at::randn({4, 3, 64, 96});
  const ModelOutputs float_out = m->forward(images);
  ActQuantSettings s;
  s.bits = 6;
  s.num_images = 4;
  s.ridge_regression = false;
  const ActivationQuantization aq = quantize_activations(*m, images, s);
  std::vector<std::string> expected_folds;
  for (int i = 0; i < 4; ++i) expected_folds.push_back("vit.encoder.layer." + std::to_string(i) + ".layernorm_after");
  EXPECT_EQ(aq.folded_norms, expected_folds);
  EXPECT_EQ(aq.quantizers.size(), m->activation_points().size());
  const ModelOutputs quantized = m->forward(images);
  EXPECT_FALSE(at::allclose(quantized.at("logits"), float_out.at("logits")));
  EXPECT_LE(max_diff(quantized.at("boxes"), float_out.at("boxes")), 0.2);
  disable_activation_quantization(*m);
  const ModelOutputs folded = m->forward(images);  // reparameterized LayerNorms + compensating weights: same function
  EXPECT_LE(max_diff(folded.at("logits"), float_out.at("logits")), 1e-4);
  EXPECT_LE(max_diff(folded.at("boxes"), float_out.at("boxes")), 1e-4);

  auto r = load_yolos(dir);
  s.ridge_regression = true;
  const ActivationQuantization ridge = quantize_activations(*r, images, s);
  const std::set<std::string> corrected(ridge.corrected_layers.begin(), ridge.corrected_layers.end());
  for (const auto& p : r->activation_points()) {
    if (!p.consumer.empty()) EXPECT_TRUE(corrected.count(p.consumer)) << p.consumer;
  }
  EXPECT_TRUE(corrected.count("bbox_predictor.layers.2"));
  EXPECT_FALSE(corrected.count("vit.encoder.layer.0.attention.attention.query"));
}
