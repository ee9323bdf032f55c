// Trains the embedded demo segmenter: a tiny Hugging Face-layout SegFormer on an endless stream of generated scenes,
// pixel cross-entropy on the logits upsampled to the label map (as HF's SegformerForSemanticSegmentation computes
// its loss), AdamW with warm-up and cosine decay, gradient clipping.
#include "lorq/demo/segmenter_trainer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/demo/scenes.h"
#include "lorq/demo/shapes_dataset.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/model.h"
#include "lorq/models/segformer.h"
#include "lorq/tasks/seg_metrics.h"
#include "lorq/tasks/segmentation_post.h"
#include "trainer_common.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lorq {

namespace {

using namespace demo_training;  // NOLINT: the shared trainer pieces

constexpr double kBatchNormEps = 1e-5;  // nn.BatchNorm2d's default, as the SegFormer loader folds with

void check_options(const SegmenterTrainOptions& o) {
  if (o.out_dir.empty()) throw Error("demo-train: no output folder given");
  if (o.image_size < 32 || o.image_size % 32 != 0)
    throw Error("demo-train: the image size must be a multiple of 32, at least 32");
  if (o.hidden_sizes.size() != 4 || o.depths.size() != 4 || o.heads.size() != 4)
    throw Error("demo-train: the segmenter needs 4 encoder stages");
  for (size_t i = 0; i < 4; ++i) {
    if (o.hidden_sizes[i] < 1 || o.depths[i] < 1 || o.heads[i] < 1 || o.hidden_sizes[i] % o.heads[i] != 0)
      throw Error("demo-train: stage " + std::to_string(i) + "'s width must be a positive multiple of its heads");
  }
  if (o.batch < 1 || o.steps < 1 || o.decoder_hidden_size < 1)
    throw Error("demo-train: batch, steps and decoder width must be >= 1");
}

SegformerConfig model_config(const SegmenterTrainOptions& o) {
  SegformerConfig c;
  c.hidden_sizes = o.hidden_sizes;
  c.depths = o.depths;
  c.num_attention_heads = o.heads;
  c.decoder_hidden_size = o.decoder_hidden_size;
  c.label_names = segmenter_class_names();
  c.num_labels = static_cast<int>(c.label_names.size());
  c.preprocessing.input_height = c.preprocessing.input_width = o.image_size;
  return c;
}

std::string preprocessor_json(const SegmenterTrainOptions& o) {
  const json p = {
      {"image_processor_type", "SegformerImageProcessor"},
      {"do_resize", true},
      {"size", {{"height", o.image_size}, {"width", o.image_size}}},
      {"resample", 2},
      {"do_rescale", true},
      {"rescale_factor", 1.0 / 255.0},
      {"do_normalize", true},
      {"image_mean", {0.485, 0.456, 0.406}},
      {"image_std", {0.229, 0.224, 0.225}},
      {"do_reduce_labels", false},
  };
  return p.dump(2) + "\n";
}

// The engine holds the decode head's BatchNorm folded into linear_fuse (weight + bias). A Hugging Face checkpoint
// has linear_fuse without a bias and a BatchNorm: write the fold back as an identity BatchNorm whose bias is the
// fused bias (running_var = 1 - eps, so that var + eps = 1 exactly as the loader folds it again).
std::vector<std::pair<std::string, at::Tensor>> hf_tensors(const std::vector<std::pair<std::string, at::Tensor>>& in) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [key, t] : in) {
    if (key != "decode_head.linear_fuse.bias") {
      out.emplace_back(key, t.detach());
      continue;
    }
    const at::Tensor b = t.detach();
    out.emplace_back("decode_head.batch_norm.weight", at::ones_like(b));
    out.emplace_back("decode_head.batch_norm.bias", b);
    out.emplace_back("decode_head.batch_norm.running_mean", at::zeros_like(b));
    out.emplace_back("decode_head.batch_norm.running_var", at::full_like(b, 1.0 - kBatchNormEps));
    out.emplace_back("decode_head.batch_norm.num_batches_tracked", at::zeros({}, at::kLong));
  }
  return out;
}

void write_model_files(const std::string& dir, const SegmenterTrainOptions& o,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir, "cannot create the folder (" + ec.message() + ")");
  write_tensors(dir + "/model.safetensors", hf_tensors(tensors), metadata);
  write_text_atomically(dir + "/config.json", segformer_config_to_json(model_config(o)) + "\n");
  write_text_atomically(dir + "/preprocessor_config.json", preprocessor_json(o));
}

struct Batch {
  at::Tensor images;  // [B, 3, h, w]
  at::Tensor labels;  // int64 [B, H, W]
};

Batch make_batch(uint64_t seed, int64_t first, int n, int size, const Preprocessing& pp) {
  std::vector<at::Tensor> xs, ys;
  for (int i = 0; i < n; ++i) {
    const Scene s = generate_scene(seed, first + i, size);
    xs.push_back(scene_input(s.image, pp));
    ys.push_back(at::from_blob(s.label_map.data, {size, size}, at::kByte).to(at::kLong));
  }
  return {at::stack(xs), at::stack(ys)};
}

at::Tensor pixel_loss(const at::Tensor& logits, const at::Tensor& labels) {
  const at::Tensor up = at::upsample_bilinear2d(logits, {labels.size(1), labels.size(2)}, /*align_corners=*/false);
  return at::cross_entropy_loss(up, labels, {}, at::Reduction::Mean, /*ignore_index=*/255);
}

json run_identity(const SegmenterTrainOptions& o) {
  return {{"image_size", o.image_size},
          {"hidden_sizes", o.hidden_sizes},
          {"depths", o.depths},
          {"heads", o.heads},
          {"decoder", o.decoder_hidden_size},
          {"batch", o.batch},
          {"steps", o.steps},
          {"lr", o.lr},
          {"weight_decay", o.weight_decay},
          {"seed", o.seed}};
}

}  // namespace

std::vector<std::string> segmenter_class_names() {
  std::vector<std::string> names = {"background"};
  for (const std::string& n : shape_class_names()) names.push_back(n);
  return names;
}

void write_initial_demo_segmenter(const std::string& dir, const SegmenterTrainOptions& o) {
  check_options(o);
  const std::unique_ptr<Segformer> model = Segformer::create_random(model_config(o), o.seed);
  write_model_files(dir, o, model->named_tensors(), {{"format", "pt"}, {"trained_by", "lorq demo-train (initial)"}});
}

SegmentationEvalFigures evaluate_segmenter_on_scenes(Model& model, uint64_t seed, int64_t count, int size) {
  c10::NoGradGuard no_grad;
  ConfusionMatrix cm(model.num_labels());
  for (int64_t first = 0; first < count; first += 50) {
    const int n = static_cast<int>(std::min<int64_t>(50, count - first));
    const Batch b = make_batch(seed, first, n, size, model.preprocessing());
    cm.add(segmentation_label_map(model.forward(b.images).logits(), size, size), b.labels);
  }
  SegmentationEvalFigures f;
  f.miou = cm.mean_iou();
  f.pixel_accuracy = cm.pixel_accuracy();
  f.images = count;
  return f;
}

SegmenterTrainResult train_demo_segmenter(const SegmenterTrainOptions& o, const JobControl& job) {
  check_options(o);
  const uint64_t train_seed = o.seed * 1000003ULL + 31;  // never the held-out seed
  const uint64_t validation_seed = train_seed + 1;
  if (train_seed == o.heldout_seed || validation_seed == o.heldout_seed)
    throw Error("demo-train: the training and held-out seeds collide");

  // As the detector: the model always goes through the loader, from the checkpoint folder.
  const std::string ckpt = o.out_dir + "/checkpoint";
  SegmenterTrainResult r;
  const bool resuming = o.resume && fs::exists(ckpt + "/state.json");
  json history = json::array();
  if (resuming) {
    const json state = json::parse(read_text_file(ckpt + "/state.json"));
    if (state.value("run", json()) != run_identity(o))
      throw Error(ckpt + "/state.json", "the checkpoint was made with other options: " + state["run"].dump());
    r.resumed_from = state.at("step").get<int64_t>();
    history = state.value("history", json::array());
  } else {
    write_initial_demo_segmenter(ckpt, o);
    fs::remove(ckpt + "/optimizer.pt");
  }
  std::unique_ptr<Model> model = load_model(ckpt);
  if (model->task() != TaskKind::Segmentation) throw Error(ckpt, "the demo segmenter did not load as a segmenter");

  Optimizer optimizer = make_adamw(model->named_tensors(), o.lr, o.weight_decay,
                                   [](const std::string& key) { return key.find("dwconv") != std::string::npos; });
  torch::optim::AdamW& opt = *optimizer.adamw;
  const std::vector<at::Tensor>& params = optimizer.params;
  if (resuming && fs::exists(ckpt + "/optimizer.pt")) load_optimizer(opt, ckpt + "/optimizer.pt");

  auto save_checkpoint = [&](int64_t step) {
    write_model_files(ckpt, o, model->named_tensors(),
                      {{"format", "pt"}, {"trained_by", "lorq demo-train (checkpoint)"}});
    save_optimizer(opt, ckpt + "/optimizer.pt");
    const SegmentationEvalFigures v = evaluate_segmenter_on_scenes(*model, validation_seed, 32, o.image_size);
    history.push_back({{"step", step}, {"loss", r.final_loss}, {"validation_miou", v.miou}});
    write_text_atomically(ckpt + "/state.json",
                          json({{"step", step}, {"run", run_identity(o)}, {"history", history}}).dump(2) + "\n");
  };

  const Preprocessing pp = model->preprocessing();
  BlasThreadsScope blas_threads;
  const auto start = std::chrono::steady_clock::now();
  auto batch_at = [&](int64_t step) {
    return std::async(std::launch::async, make_batch, train_seed, step * o.batch, o.batch, o.image_size, pp);
  };
  std::future<Batch> next = batch_at(r.resumed_from);
  std::vector<double> recent;
  for (int64_t step = r.resumed_from; step < o.steps; ++step) {
    job.check();
    Batch b = next.get();
    if (step + 1 < o.steps) next = batch_at(step + 1);
    set_lr(opt, warmup_cosine_lr(step, o.steps, o.lr));
    opt.zero_grad();
    const at::Tensor loss = pixel_loss(model->forward(b.images).logits(), b.labels);
    loss.backward();
    if (o.clip_grad_norm > 0) clip_grad_norm(params, o.clip_grad_norm);
    opt.step();

    recent.push_back(loss.item<double>());
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
    p.detail = "loss " + std::to_string(r.final_loss).substr(0, 6);
    job.report(p);
    if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0 && step + 1 < o.steps) save_checkpoint(step + 1);
  }
  r.steps = o.steps;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.steps_per_second = double(o.steps - r.resumed_from) / std::max(1e-9, r.seconds);
  for (const auto& t : params) t.requires_grad_(false);

  const SegmentationEvalFigures f = evaluate_segmenter_on_scenes(*model, o.heldout_seed, o.heldout_count, o.image_size);
  r.heldout_miou = f.miou;
  r.heldout_pixel_accuracy = f.pixel_accuracy;
  char miou[32], acc[32];
  std::snprintf(miou, sizeof miou, "%.4f", r.heldout_miou);
  std::snprintf(acc, sizeof acc, "%.4f", r.heldout_pixel_accuracy);
  write_model_files(
      o.out_dir, o, model->named_tensors(),
      {{"format", "pt"},
       {"trained_by", "lorq demo-train --task segment"},
       {"heldout_miou", miou},
       {"heldout_pixel_accuracy", acc},
       {"heldout_scenes", std::to_string(o.heldout_count) + " (seed " + std::to_string(o.heldout_seed) + ")"},
       {"steps", std::to_string(r.steps)}});
  std::error_code ec;
  fs::remove_all(ckpt, ec);  // finished: nothing left to resume
  return r;
}

}  // namespace lorq
