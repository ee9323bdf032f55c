// Trains the embedded demo detector: a tiny Hugging Face-layout YOLOS on an endless stream of generated scenes
// (every step sees fresh scenes, so there is nothing to overfit), the DETR set loss, AdamW with warm-up and cosine
// decay, gradient clipping (set-prediction training is unstable without it).
#include "lorq/demo/detector_trainer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/demo/detection_loss.h"
#include "lorq/demo/scenes.h"
#include "lorq/demo/shapes_dataset.h"
#include "lorq/io/safetensors.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/model.h"
#include "lorq/tasks/box_map.h"
#include "trainer_common.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lorq {

namespace {

using namespace demo_training;  // NOLINT: the shared trainer pieces

void check_options(const DetectorTrainOptions& o) {
  if (o.out_dir.empty()) throw Error("demo-train: no output folder given");
  if (o.image_size < 32 || o.image_size % 16 != 0)
    throw Error("demo-train: the image size must be a multiple of 16, at least 32");
  if (o.patch_size < 2 || o.image_size % o.patch_size != 0)
    throw Error("demo-train: the patch size must divide the image size " + std::to_string(o.image_size));
  if (o.heads < 1 || o.hidden_size % o.heads != 0)
    throw Error("demo-train: the width " + std::to_string(o.hidden_size) + " is not a multiple of the head count");
  if (o.detection_tokens < 4) throw Error("demo-train: at least 4 detection tokens (a scene has up to 4 objects)");
  if (o.anchor_cost < 0) throw Error("demo-train: the anchor cost must be >= 0");
  if (o.patch_class_loss < 0) throw Error("demo-train: the patch class loss weight must be >= 0");
  if (o.batch < 1 || o.steps < 1 || o.depth < 1) throw Error("demo-train: batch, steps and depth must be >= 1");
}

std::string config_json(const DetectorTrainOptions& o) {
  json id2label = json::object(), label2id = json::object();
  const auto& names = shape_class_names();
  for (size_t i = 0; i < names.size(); ++i) {
    id2label[std::to_string(i)] = names[i];
    label2id[names[i]] = static_cast<int>(i);
  }
  const json c = {
      {"_name_or_path", "lorq/demo-yolos-shapes"},
      {"architectures", {"YolosForObjectDetection"}},
      {"model_type", "yolos"},
      {"hidden_size", o.hidden_size},
      {"num_hidden_layers", o.depth},
      {"num_attention_heads", o.heads},
      {"intermediate_size", 4 * o.hidden_size},
      {"hidden_act", "gelu"},
      {"hidden_dropout_prob", 0.0},
      {"attention_probs_dropout_prob", 0.0},
      {"initializer_range", 0.02},
      {"layer_norm_eps", o.layer_norm_eps},
      {"image_size", {o.image_size, o.image_size}},
      {"patch_size", o.patch_size},
      {"num_channels", 3},
      {"qkv_bias", true},
      {"num_detection_tokens", o.detection_tokens},
      {"use_mid_position_embeddings", false},
      {"auxiliary_loss", false},
      {"class_cost", 1},
      {"bbox_cost", 5},
      {"giou_cost", 2},
      {"bbox_loss_coefficient", 5},
      {"giou_loss_coefficient", 2},
      {"eos_coefficient", 0.1},
      {"id2label", id2label},
      {"label2id", label2id},
      {"torch_dtype", "float32"},
  };
  return c.dump(2) + "\n";
}

std::string preprocessor_json(const DetectorTrainOptions& o) {
  // The scenes are generated at the model's size, so the resize keeps them as they are.
  const json p = {
      {"image_processor_type", "YolosImageProcessor"},
      {"format", "coco_detection"},
      {"do_resize", true},
      {"size", {{"shortest_edge", o.image_size}, {"longest_edge", o.image_size}}},
      {"resample", 2},
      {"do_rescale", true},
      {"rescale_factor", 1.0 / 255.0},
      {"do_normalize", true},
      {"image_mean", o.image_mean},
      {"image_std", o.image_std},
      {"do_pad", true},
  };
  return p.dump(2) + "\n";
}

// HF YOLOS tensor names; encoder linear and conv weights trunc-normal(0.02) as YolosPreTrainedModel initialises them,
// biases 0, LayerNorms 1/0. The CLS and detection tokens and the position embeddings get trunc-normal(0.02) too
// (as the original YOLOS code does): HF's zeros would make every detection token identical at the start.
// The options with the backbone's architecture in place of the requested one (unchanged without a backbone).
DetectorTrainOptions with_backbone_architecture(const DetectorTrainOptions& requested, const Model* backbone) {
  DetectorTrainOptions o = requested;
  if (!backbone) return o;
  const std::map<std::string, int64_t> d = backbone->dimensions();
  o.hidden_size = static_cast<int>(d.at("embed_dim"));
  o.depth = static_cast<int>(d.at("depth"));
  o.heads = static_cast<int>(d.at("num_heads"));
  o.patch_size = static_cast<int>(d.at("patch_size"));
  o.layer_norm_eps = 1e-6;  // timm's ViT LayerNorms
  o.image_mean = backbone->preprocessing().mean;
  o.image_std = backbone->preprocessing().std;
  return o;
}

std::unique_ptr<Model> load_backbone(const std::string& path) {
  if (path.empty()) return nullptr;
  std::unique_ptr<Model> m = load_model(path);
  const auto d = m->dimensions();
  if (m->task() != TaskKind::Classification || !d.count("embed_dim") || !d.count("patch_size") ||
      !m->tensor("cls_token").defined())
    throw Error(path, "the backbone must be a timm VisionTransformer with a class token");
  return m;
}

// The backbone's tensors under their YOLOS names: qkv split into query/key/value, the position embeddings'
// patch grid resized bicubically to the detector's grid (as YOLOS itself interpolates them), the detection
// tokens' position embeddings drawn fresh.
void copy_backbone(std::vector<std::pair<std::string, at::Tensor>>& t, const DetectorTrainOptions& o, const Model& b) {
  auto set = [&](const std::string& key, const at::Tensor& value) {
    for (auto& [k, v] : t) {
      if (k != key) continue;
      if (v.sizes() != value.sizes()) throw Error("demo-train: backbone tensor for " + key + " has another shape");
      v = value.clone();
      return;
    }
    throw Error("demo-train: no tensor " + key);
  };
  const std::string e = "vit.embeddings.";
  set(e + "patch_embeddings.projection.weight", b.tensor("patch_embed.proj.weight"));
  set(e + "patch_embeddings.projection.bias", b.tensor("patch_embed.proj.bias"));
  set(e + "cls_token", b.tensor("cls_token"));
  const at::Tensor pos = b.tensor("pos_embed");  // [1, 1 + g*g, D]
  const int64_t D = pos.size(2), g = static_cast<int64_t>(std::llround(std::sqrt(double(pos.size(1) - 1))));
  if (g * g + 1 != pos.size(1)) throw Error("demo-train: the backbone's position embeddings are not a square grid");
  const int64_t grid = o.image_size / o.patch_size;
  const at::Tensor patch = pos.narrow(1, 1, g * g).reshape({1, g, g, D}).permute({0, 3, 1, 2});
  const at::Tensor resized =
      at::upsample_bicubic2d(patch, {grid, grid}, /*align_corners=*/false).permute({0, 2, 3, 1}).reshape({1, -1, D});
  // The detection tokens start as copies of the class token (plus their small random part), so they read the
  // image the way the classifier learned to, and each gets the position embedding of a patch on an even grid of
  // anchors over the image (plus its random part), so that it attends around its own place from the first step
  // (the backbone's attention prefers nearby positions). Without the anchors the queries stay content-blind, or
  // global, for thousands of steps: the slow start of set-prediction training.
  const at::Tensor grid_pos = resized.reshape({grid, grid, D});
  const at::Tensor centres = query_anchors(o.detection_tokens);
  std::vector<at::Tensor> anchors;
  for (int64_t q = 0; q < o.detection_tokens; ++q) {  // the patch under the cell's centre
    const auto patch = [&](int axis) {
      return std::min<int64_t>(grid - 1, static_cast<int64_t>(centres[q][axis].item<double>() * double(grid)));
    };
    anchors.push_back(grid_pos[patch(1)][patch(0)]);
  }
  const at::Tensor anchor_pos = at::stack(anchors).unsqueeze(0);  // [1, Q, D]
  for (auto& [k, v] : t) {
    if (k == e + "position_embeddings")
      v = at::cat({pos.narrow(1, 0, 1), resized, anchor_pos + v.narrow(1, 1 + grid * grid, o.detection_tokens)}, 1);
    if (k == e + "detection_tokens") v = b.tensor("cls_token") + v;
  }
  for (int i = 0; i < o.depth; ++i) {
    const std::string y = "vit.encoder.layer." + std::to_string(i) + ".", v = "blocks." + std::to_string(i) + ".";
    const at::Tensor qkv_w = b.tensor(v + "attn.qkv.weight"), qkv_b = b.tensor(v + "attn.qkv.bias");
    const char* parts[] = {"query", "key", "value"};
    for (int k = 0; k < 3; ++k) {
      set(y + "attention.attention." + parts[k] + ".weight", qkv_w.narrow(0, k * D, D));
      set(y + "attention.attention." + parts[k] + ".bias", qkv_b.narrow(0, k * D, D));
    }
    const std::pair<const char*, const char*> same[] = {{"attention.output.dense", "attn.proj"},
                                                        {"intermediate.dense", "mlp.fc1"},
                                                        {"output.dense", "mlp.fc2"},
                                                        {"layernorm_before", "norm1"},
                                                        {"layernorm_after", "norm2"}};
    for (const auto& [yolos, timm] : same) {
      set(y + yolos + ".weight", b.tensor(v + timm + ".weight"));
      set(y + yolos + ".bias", b.tensor(v + timm + ".bias"));
    }
  }
  set("vit.layernorm.weight", b.tensor("norm.weight"));
  set("vit.layernorm.bias", b.tensor("norm.bias"));
}

// From scratch, attention has no notion of place, and a detection token must learn to look at the part of the image
// its objects are in before it can learn what they are: with random position embeddings the demo detector sat at
// mAP@.5 ~0.01 for thousands of steps, its detection tokens attending evenly over the image or to one another. So
// attention starts local (the idea of "mimetic" initialisation, Trockman & Kolter 2023, made positional):
// - each head's channels are split in a query half A and a key half B; a patch's position embedding holds 2-D
//   sinusoids of its place on the patch grid in both halves, a detection token's (the centre of its anchor cell)
//   in A only; each head has its own band of frequencies (head 0 the sharpest, a patch wide, each next head twice
//   as broad);
// - query starts near gain * (A -> A) and key near gain * (B -> A), so q_i.k_j ~ sum_f cos(w_f dx) + cos(w_f dy)
//   over the two tokens' places: a softmax of it is a separable bump around the querying token's place. A detection
//   token has no key half, so it looks at the patches of its cell, not at itself or the other detection tokens
//   (which is where training took the attention when query and key both started at the identity).
// Everything stays trainable; the class token gets a random embedding and looks everywhere.
constexpr double kLocalAttentionGain = 1.4;

at::Tensor local_position_embeddings(const DetectorTrainOptions& o, int64_t grid) {
  const int64_t D = o.hidden_size, heads = o.heads, hd = D / heads, half = hd / 2, freqs = half / 4;
  const int64_t Q = o.detection_tokens, T = 1 + grid * grid + Q;
  at::Tensor pe = at::randn({1, T, D}).clamp(-2, 2) * 0.02;
  const at::Tensor anchors = query_anchors(o.detection_tokens) * double(grid) - 0.5;  // in patch-centre units
  auto place = [&](int64_t token, double u, double v, bool key_half) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t f = 0; f < freqs; ++f) {
        const double w = M_PI * double(f + 1) / double(freqs) / std::pow(2.0, double(h));
        const double values[4] = {std::sin(w * u), std::cos(w * u), std::sin(w * v), std::cos(w * v)};
        for (int64_t k = 0; k < 4; ++k) {
          pe[0][token][h * hd + 4 * f + k] = values[k];
          if (key_half) pe[0][token][h * hd + half + 4 * f + k] = values[k];
        }
      }
    }
  };
  for (int64_t y = 0; y < grid; ++y)
    for (int64_t x = 0; x < grid; ++x) place(1 + y * grid + x, double(x), double(y), true);
  for (int64_t q = 0; q < Q; ++q)
    place(1 + grid * grid + q, anchors[q][0].item<double>(), anchors[q][1].item<double>(), false);
  return pe;
}

// Adds gain * (the head's channel half `from` -> its first half) to a query or key weight [D, D].
void add_local_attention(at::Tensor& weight, const DetectorTrainOptions& o, bool key) {
  const int64_t hd = o.hidden_size / o.heads, half = hd / 2, used = 4 * (half / 4);
  for (int64_t h = 0; h < o.heads; ++h)
    for (int64_t j = 0; j < used; ++j) weight[h * hd + j][h * hd + (key ? half : 0) + j] += kLocalAttentionGain;
}

std::vector<std::pair<std::string, at::Tensor>> initial_tensors(const DetectorTrainOptions& o) {
  at::manual_seed(o.seed);
  const int64_t D = o.hidden_size, P = o.patch_size, grid = o.image_size / o.patch_size;
  const int64_t classes = static_cast<int64_t>(shape_class_names().size());
  std::vector<std::pair<std::string, at::Tensor>> t;
  auto tn = [](std::vector<int64_t> s) { return at::randn(s).clamp(-2, 2) * 0.02; };
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    t.emplace_back(name + ".weight", tn({out, in}));
    t.emplace_back(name + ".bias", at::zeros({out}));
  };
  auto norm = [&](const std::string& name) {
    t.emplace_back(name + ".weight", at::ones({D}));
    t.emplace_back(name + ".bias", at::zeros({D}));
  };
  t.emplace_back("vit.embeddings.cls_token", tn({1, 1, D}));
  t.emplace_back("vit.embeddings.detection_tokens", tn({1, o.detection_tokens, D}));
  t.emplace_back("vit.embeddings.position_embeddings", local_position_embeddings(o, grid));
  t.emplace_back("vit.embeddings.patch_embeddings.projection.weight", tn({D, 3, P, P}));
  t.emplace_back("vit.embeddings.patch_embeddings.projection.bias", at::zeros({D}));
  for (int i = 0; i < o.depth; ++i) {
    const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
    // Query and key start so that attention follows the tokens' places (see local_position_embeddings).
    for (const char* qk : {"query", "key"}) {
      linear(p + "attention.attention." + qk, D, D);
      add_local_attention(t[t.size() - 2].second, o, std::string(qk) == "key");
    }
    linear(p + "attention.attention.value", D, D);
    linear(p + "attention.output.dense", D, D);
    linear(p + "intermediate.dense", 4 * D, D);
    linear(p + "output.dense", D, 4 * D);
    norm(p + "layernorm_before");
    norm(p + "layernorm_after");
  }
  norm("vit.layernorm");
  // The heads as the original DETR/YOLOS code leaves them: PyTorch's default Linear init, uniform(+-1/sqrt(in)).
  // With HF's normal(0.02) three stacked layers pass back ~1% of the loss gradient to the encoder, and training
  // sits on the constant-prediction plateau for a long time.
  auto head = [&](const std::string& name, int64_t out, int64_t in) {
    const double bound = 1.0 / std::sqrt(double(in));
    t.emplace_back(name + ".weight", (at::rand({out, in}) * 2 - 1) * bound);
    t.emplace_back(name + ".bias", (at::rand({out}) * 2 - 1) * bound);
  };
  for (int k = 0; k < 3; ++k) head("class_labels_classifier.layers." + std::to_string(k), k == 2 ? classes + 1 : D, D);
  for (int k = 0; k < 3; ++k) head("bbox_predictor.layers." + std::to_string(k), k == 2 ? 4 : D, D);
  return t;
}

void write_model_files(const std::string& dir, const DetectorTrainOptions& o,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir, "cannot create the folder (" + ec.message() + ")");
  write_tensors(dir + "/model.safetensors", tensors, metadata);
  write_text_atomically(dir + "/config.json", config_json(o));
  write_text_atomically(dir + "/preprocessor_config.json", preprocessor_json(o));
}

DetectionTarget scene_target(const Scene& s) {
  const auto n = static_cast<int64_t>(s.objects.size());
  DetectionTarget t;
  t.labels = at::empty({n}, at::kLong);
  t.boxes = at::empty({n, 4}, at::kFloat);
  const double W = s.image.cols, H = s.image.rows;
  for (int64_t k = 0; k < n; ++k) {
    const cv::Rect& b = s.objects[static_cast<size_t>(k)].box;
    t.labels[k] = s.objects[static_cast<size_t>(k)].class_index;
    t.boxes[k][0] = (b.x + b.width / 2.0) / W;
    t.boxes[k][1] = (b.y + b.height / 2.0) / H;
    t.boxes[k][2] = b.width / W;
    t.boxes[k][3] = b.height / H;
  }
  return t;
}

struct Batch {
  at::Tensor images;
  at::Tensor patch_shares;  // [n, patches, 1 + classes] when the patch classifier trains
  std::vector<DetectionTarget> targets;
  std::vector<Scene> scenes;  // kept for evaluation only
};

// What share of each patch's pixels each scene class (background first) covers: [patches, 1 + classes], row-major
// over the patch grid, as the encoder's patch tokens are ordered.
at::Tensor patch_class_shares(const cv::Mat& label_map, int patch) {
  const int64_t classes = 1 + static_cast<int64_t>(shape_class_names().size());
  const at::Tensor map = at::from_blob(label_map.data, {label_map.rows, label_map.cols}, at::kByte).to(at::kLong);
  const at::Tensor one_hot = at::one_hot(map, classes).permute({2, 0, 1}).to(at::kFloat).unsqueeze(0);
  return at::avg_pool2d(one_hot, {patch, patch}).reshape({classes, -1}).t().contiguous();
}

Batch make_batch(uint64_t seed, int64_t first, int n, int size, const Preprocessing& pp, bool keep_scenes,
                 int patch = 0) {
  Batch b;
  std::vector<at::Tensor> xs, shares;
  for (int i = 0; i < n; ++i) {
    Scene s = generate_scene(seed, first + i, size);
    xs.push_back(scene_input(s.image, pp));
    b.targets.push_back(scene_target(s));
    if (patch > 0) shares.push_back(patch_class_shares(s.label_map, patch));
    if (keep_scenes) b.scenes.push_back(std::move(s));
  }
  b.images = at::stack(xs);
  if (patch > 0) b.patch_shares = at::stack(shares);
  return b;
}

// The training-only patch classifier (see DetectorTrainOptions::patch_class_loss): a linear layer on the final
// LayerNorm of the patch tokens, kept beside the checkpoint so that a resumed run continues it, never exported.
struct PatchClassifier {
  at::Tensor weight, bias;
  std::vector<std::pair<std::string, at::Tensor>> named() const {
    return {{"patch_classifier.weight", weight}, {"patch_classifier.bias", bias}};
  }
};

PatchClassifier make_patch_classifier(int64_t dim) {
  const int64_t classes = 1 + static_cast<int64_t>(shape_class_names().size());
  const double bound = 1.0 / std::sqrt(double(dim));
  return {(at::rand({classes, dim}) * 2 - 1) * bound, at::zeros({classes})};
}

// Soft cross-entropy of every patch token's class prediction against its patch's class shares.
at::Tensor patch_class_loss(const Model& model, const StageState& state, const PatchClassifier& head,
                            const at::Tensor& shares, double eps) {
  const int64_t patches = shares.size(1);
  const at::Tensor tokens = state.at(0).narrow(1, 1, patches);  // [CLS, patches..., detection tokens]
  const at::Tensor h = at::layer_norm(tokens, {tokens.size(2)}, model.tensor("vit.layernorm.weight"),
                                      model.tensor("vit.layernorm.bias"), eps);
  return -(shares * at::linear(h, head.weight, head.bias).log_softmax(-1)).sum(-1).mean();
}

std::string checkpoint_dir(const DetectorTrainOptions& o) { return o.out_dir + "/checkpoint"; }

// What a checkpoint must agree on to be resumed (a different model or schedule cannot continue it).
json run_identity(const DetectorTrainOptions& o) {
  return {{"aux_loss", o.aux_loss},
          {"image_size", o.image_size},
          {"patch_size", o.patch_size},
          {"hidden_size", o.hidden_size},
          {"depth", o.depth},
          {"heads", o.heads},
          {"detection_tokens", o.detection_tokens},
          {"anchor_cost", o.anchor_cost},
          {"init", o.init},
          {"patch_class_loss", o.patch_class_loss},
          {"batch", o.batch},
          {"steps", o.steps},
          {"lr", o.lr},
          {"weight_decay", o.weight_decay},
          {"seed", o.seed}};
}

}  // namespace

at::Tensor query_anchors(int detection_tokens) {
  const int cols = static_cast<int>(std::ceil(std::sqrt(double(detection_tokens))));
  const int rows = (detection_tokens + cols - 1) / cols;
  at::Tensor a = at::empty({detection_tokens, 2}, at::kFloat);
  for (int q = 0; q < detection_tokens; ++q) {
    a[q][0] = (2.0 * (q % cols) + 1) / (2.0 * cols);
    a[q][1] = (2.0 * (q / cols) + 1) / (2.0 * rows);
  }
  return a;
}

void write_initial_demo_detector(const std::string& dir, const DetectorTrainOptions& requested) {
  const std::unique_ptr<Model> backbone = load_backbone(requested.backbone);
  const DetectorTrainOptions o = with_backbone_architecture(requested, backbone.get());
  check_options(o);
  std::vector<std::pair<std::string, at::Tensor>> tensors = initial_tensors(o);
  if (backbone) copy_backbone(tensors, o, *backbone);
  write_model_files(dir, o, tensors, {{"format", "pt"}, {"trained_by", "lorq demo-train (initial)"}});
}

DetectionEvalFigures evaluate_detector_on_scenes(Model& model, uint64_t seed, int64_t count, int size) {
  c10::NoGradGuard no_grad;
  BoxMapAccumulator acc;
  DetectionEvalFigures f;
  for (int64_t first = 0; first < count; first += 50) {
    const int n = static_cast<int>(std::min<int64_t>(50, count - first));
    const Batch b = make_batch(seed, first, n, size, model.preprocessing(), /*keep_scenes=*/true);
    const ModelOutputs out = model.forward(b.images);
    const at::Tensor prob = out.at("logits").softmax(-1);
    const at::Tensor boxes = out.at("boxes");
    const auto [scores, labels] = prob.narrow(-1, 0, prob.size(-1) - 1).max(-1);
    for (int i = 0; i < n; ++i) {
      const Scene& s = b.scenes[static_cast<size_t>(i)];
      const double W = s.image.cols, H = s.image.rows;
      std::vector<DetectedBox> det;
      for (int64_t q = 0; q < boxes.size(1); ++q) {
        const at::Tensor bx = boxes[i][q];
        const double cx = bx[0].item<double>() * W, cy = bx[1].item<double>() * H;
        const double w = bx[2].item<double>() * W, h = bx[3].item<double>() * H;
        det.push_back({static_cast<int>(labels[i][q].item<int64_t>()), scores[i][q].item<double>(), cx - w / 2,
                       cy - h / 2, cx + w / 2, cy + h / 2});
      }
      std::vector<TruthBox> truth;
      for (const SceneObject& o : s.objects) {
        truth.push_back({o.class_index, double(o.box.x), double(o.box.y), double(o.box.x + o.box.width),
                         double(o.box.y + o.box.height)});
      }
      f.objects += static_cast<int64_t>(truth.size());
      acc.add_image(det, truth);
    }
  }
  const BoxMapValues v = acc.values();
  f.map50 = std::max(0.0, v.map50);
  f.map = std::max(0.0, v.map);
  f.images = count;
  return f;
}

// The options with the architecture of the detector a run continues from (unchanged without one).
DetectorTrainOptions with_init_architecture(const DetectorTrainOptions& requested) {
  DetectorTrainOptions o = requested;
  if (o.init.empty()) return o;
  if (!o.backbone.empty()) throw Error("demo-train: a run continues from a detector or starts from a backbone, not both");
  const json c = json::parse(read_text_file(o.init + "/config.json"));
  o.hidden_size = c.value("hidden_size", o.hidden_size);
  o.depth = c.value("num_hidden_layers", o.depth);
  o.heads = c.value("num_attention_heads", o.heads);
  o.patch_size = c.value("patch_size", o.patch_size);
  o.detection_tokens = c.value("num_detection_tokens", o.detection_tokens);
  o.layer_norm_eps = c.value("layer_norm_eps", o.layer_norm_eps);
  return o;
}

DetectorTrainResult train_demo_detector(const DetectorTrainOptions& requested, const JobControl& job) {
  const DetectorTrainOptions o = with_backbone_architecture(with_init_architecture(requested),
                                                            load_backbone(requested.backbone).get());
  check_options(o);
  const uint64_t train_seed = o.seed * 1000003ULL + 29;  // never the held-out seed
  if (train_seed == o.heldout_seed || train_seed + 1 == o.heldout_seed)
    throw Error("demo-train: the training and held-out seeds collide");

  // The model always goes through the loader, as a user's checkpoint does: a fresh run writes the initial weights
  // into the checkpoint folder first.
  const std::string ckpt = checkpoint_dir(o);
  DetectorTrainResult r;
  const bool resuming = o.resume && fs::exists(ckpt + "/state.json");
  if (resuming) {
    const json state = json::parse(read_text_file(ckpt + "/state.json"));
    if (state.value("run", json()) != run_identity(o))
      throw Error(ckpt + "/state.json", "the checkpoint was made with other options: " + state["run"].dump());
    r.resumed_from = state.at("step").get<int64_t>();
  } else if (!o.init.empty()) {
    // Continue from a trained detector: its weights through the loader (a detector, or a clear error), saved
    // as this run's starting checkpoint.
    const std::unique_ptr<Model> start = load_model(o.init);
    if (start->task() != TaskKind::Detection) throw Error(o.init, "not a detector to continue training from");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [key, t] : start->named_tensors()) tensors.emplace_back(key, t.detach().clone());
    std::error_code ec;
    fs::create_directories(ckpt, ec);
    write_tensors(ckpt + "/model.safetensors", tensors, {{"format", "pt"}, {"trained_by", "lorq demo-train (start)"}});
    write_text_atomically(ckpt + "/config.json", read_text_file(o.init + "/config.json"));
    write_text_atomically(ckpt + "/preprocessor_config.json", read_text_file(o.init + "/preprocessor_config.json"));
    fs::remove(ckpt + "/optimizer.pt");
  } else {
    write_initial_demo_detector(ckpt, requested);
    fs::remove(ckpt + "/optimizer.pt");
  }
  std::unique_ptr<Model> model = load_model(ckpt);
  if (model->task() != TaskKind::Detection) throw Error(ckpt, "the demo detector did not load as a detector");

  PatchClassifier patch_head = make_patch_classifier(o.hidden_size);
  const std::string patch_head_file = ckpt + "/patch_classifier.safetensors";
  if (resuming && fs::exists(patch_head_file)) {
    const std::map<std::string, at::Tensor> saved =
        read_all_tensors(SafetensorsFile::open(patch_head_file), /*to_float=*/true);
    patch_head.weight = saved.at("patch_classifier.weight").clone();
    patch_head.bias = saved.at("patch_classifier.bias").clone();
  }
  std::vector<std::pair<std::string, at::Tensor>> trained = model->named_tensors();
  if (o.patch_class_loss > 0)
    for (const auto& kv : patch_head.named()) trained.push_back(kv);
  Optimizer optimizer = make_adamw(trained, o.lr, o.weight_decay, [](const std::string& key) {
    return key.find("embeddings.") != std::string::npos;  // tokens and position embeddings: no decay
  });
  torch::optim::AdamW& opt = *optimizer.adamw;
  const std::vector<at::Tensor>& params = optimizer.params;
  if (resuming && fs::exists(ckpt + "/optimizer.pt")) load_optimizer(opt, ckpt + "/optimizer.pt");

  const uint64_t validation_seed = train_seed + 1;
  json history =
      resuming ? json::parse(read_text_file(ckpt + "/state.json")).value("history", json::array()) : json::array();
  auto save_checkpoint = [&](int64_t step) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [key, t] : model->named_tensors()) tensors.emplace_back(key, t.detach());
    write_model_files(ckpt, o, tensors, {{"format", "pt"}, {"trained_by", "lorq demo-train (checkpoint)"}});
    save_optimizer(opt, ckpt + "/optimizer.pt");
    if (o.patch_class_loss > 0) {
      std::vector<std::pair<std::string, at::Tensor>> head;
      for (const auto& [key, t] : patch_head.named()) head.emplace_back(key, t.detach());
      write_tensors(patch_head_file, head, {{"format", "pt"}});
    }
    // A quick look at progress on validation scenes (their own seed: neither trained on nor held out).
    for (auto& t : params) t.requires_grad_(false);
    const DetectionEvalFigures v = evaluate_detector_on_scenes(*model, validation_seed, 64, o.image_size);
    for (auto& t : params) t.requires_grad_(true);
    history.push_back(
        {{"step", step}, {"loss", r.final_loss}, {"validation_map50", v.map50}, {"validation_map", v.map}});
    write_text_atomically(ckpt + "/state.json",
                          json({{"step", step}, {"run", run_identity(o)}, {"history", history}}).dump(2) + "\n");
  };

  const Preprocessing pp = model->preprocessing();
  BlasThreadsScope blas_threads;
  const auto start = std::chrono::steady_clock::now();
  auto batch_at = [&](int64_t step) {
    return std::async(std::launch::async, make_batch, train_seed, step * o.batch, o.batch, o.image_size, pp, false,
                      o.patch_class_loss > 0 ? o.patch_size : 0);
  };
  std::future<Batch> next = batch_at(r.resumed_from);
  DetectionLossWeights loss_weights;
  loss_weights.anchor_cost = o.anchor_cost;
  loss_weights.anchors = query_anchors(o.detection_tokens);
  std::vector<double> recent;
  for (int64_t step = r.resumed_from; step < o.steps; ++step) {
    job.check();
    Batch b = next.get();
    if (step + 1 < o.steps) next = batch_at(step + 1);
    set_lr(opt, warmup_cosine_lr(step, o.steps, o.lr));
    opt.zero_grad();
    // Staged forward (== model->forward): with auxiliary losses every encoder layer's tokens also go through the
    // final LayerNorm and the heads and get their own set loss (DETR's auxiliary decoding losses, HF's
    // auxiliary_loss), which speeds up the slow start of set-prediction training.
    StageState state = model->embed(b.images);
    at::Tensor aux_total;
    for (int i = 0; i < model->num_stages(); ++i) {
      state = model->run_stage(i, state);
      if (o.aux_loss && i + 1 < model->num_stages()) {
        const ModelOutputs aux = model->finish(state);
        const at::Tensor l = detection_loss(aux.at("logits"), aux.at("boxes"), b.targets, loss_weights).total;
        aux_total = aux_total.defined() ? aux_total + l : l;
      }
    }
    if (o.patch_class_loss > 0) {
      const at::Tensor l =
          o.patch_class_loss * patch_class_loss(*model, state, patch_head, b.patch_shares, o.layer_norm_eps);
      aux_total = aux_total.defined() ? aux_total + l : l;
    }
    const ModelOutputs out = model->finish(state);
    const DetectionLoss loss = detection_loss(out.at("logits"), out.at("boxes"), b.targets, loss_weights);
    (aux_total.defined() ? loss.total + aux_total : loss.total).backward();
    if (o.clip_grad_norm > 0) clip_grad_norm(params, o.clip_grad_norm);
    opt.step();

    recent.push_back(loss.total.item<double>());
    if (step == r.resumed_from) r.first_loss = recent.back();
    if (recent.size() > 100) recent.erase(recent.begin());
    double mean = 0;
    for (double v : recent) mean += v;
    r.final_loss = mean / static_cast<double>(recent.size());
    Progress p;
    p.stage = "demo-train";
    p.done = step + 1;
    p.total = o.steps;
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char detail[96];
    std::snprintf(detail, sizeof detail, "loss %.4f (ce %.3f l1 %.3f giou %.3f)", r.final_loss, loss.ce.item<double>(),
                  loss.l1.item<double>(), loss.giou.item<double>());
    p.detail = detail;
    job.report(p);
    if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0 && step + 1 < o.steps) save_checkpoint(step + 1);
  }
  r.steps = o.steps;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.steps_per_second = (o.steps - r.resumed_from) / std::max(1e-9, r.seconds);
  for (auto& t : params) t.requires_grad_(false);

  const DetectionEvalFigures f = evaluate_detector_on_scenes(*model, o.heldout_seed, o.heldout_count, o.image_size);
  r.heldout_map50 = f.map50;
  r.heldout_map = f.map;

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [key, t] : model->named_tensors()) tensors.emplace_back(key, t.detach());
  char map50[32], map[32];
  std::snprintf(map50, sizeof map50, "%.4f", r.heldout_map50);
  std::snprintf(map, sizeof map, "%.4f", r.heldout_map);
  write_model_files(
      o.out_dir, o, tensors,
      {{"format", "pt"},
       {"trained_by", "lorq demo-train --task detect"},
       {"heldout_map50", map50},
       {"heldout_map", map},
       {"heldout_scenes", std::to_string(o.heldout_count) + " (seed " + std::to_string(o.heldout_seed) + ")"},
       {"steps", std::to_string(r.steps)}});
  std::error_code ec;
  fs::remove_all(ckpt, ec);  // finished: nothing left to resume
  return r;
}

}  // namespace lorq
