// Trains the embedded demo model: a tiny timm-architecture ViT on an endless stream of procedurally generated
// shapes (every step sees fresh samples, so there is nothing to overfit), AdamW with warm-up and cosine decay.
#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>

#include "lorq/demo/demo.h"
#include "lorq/common/error.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/common/file_util.h"
#include "lorq/io/images.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/demo/shapes_dataset.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/vit.h"

namespace fs = std::filesystem;

namespace lorq {

VitConfig demo_model_config(const DemoTrainOptions& o) {
  VitConfig c;
  c.architecture = "vit_demo_shapes_patch" + std::to_string(o.patch_size) + "_" + std::to_string(o.image_size);
  c.img_size = o.image_size;
  c.patch_size = o.patch_size;
  c.embed_dim = o.embed_dim;
  c.depth = o.depth;
  c.num_heads = std::max(1, o.embed_dim / 32);  // 32-wide heads suit a tiny model
  c.mlp_ratio = 4.0;
  c.num_classes = static_cast<int>(shape_class_names().size());
  c.label_names = shape_class_names();
  c.preprocessing.input_height = c.preprocessing.input_width = o.image_size;
  c.preprocessing.crop_pct = 1.0;  // the images are generated at the model's resolution
  c.preprocessing.mean = {0.5f, 0.5f, 0.5f};
  c.preprocessing.std = {0.5f, 0.5f, 0.5f};
  return c;
}

namespace {

at::Tensor sample_tensor(const ShapeSample& s, const Preprocessing& pp) {
  const cv::Mat& bgr = s.image;
  at::Tensor rgb = at::empty({bgr.rows, bgr.cols, 3}, at::kByte);
  auto* dst = rgb.data_ptr<uint8_t>();
  for (int y = 0; y < bgr.rows; ++y)
    for (int x = 0; x < bgr.cols; ++x) {
      const cv::Vec3b& p = bgr.at<cv::Vec3b>(y, x);
      uint8_t* d = dst + (size_t(y) * bgr.cols + x) * 3;
      d[0] = p[2];
      d[1] = p[1];
      d[2] = p[0];
    }
  return eval_transform(rgb, pp);
}

struct Batch {
  at::Tensor images, labels;
};

Batch make_batch(uint64_t seed, int64_t first, int n, int size, const Preprocessing& pp) {
  std::vector<at::Tensor> xs;
  std::vector<int64_t> ys;
  for (int i = 0; i < n; ++i) {
    ShapeSample s = generate_shape_sample(seed, first + i, size);
    xs.push_back(sample_tensor(s, pp));
    ys.push_back(s.class_index);
  }
  return {at::stack(xs), at::tensor(ys)};
}

// Class order is index % 6 in the generator: shuffle within a batch is unnecessary, but consecutive batches must
// not always start at the same class, so batches draw a scattered index range.
int64_t batch_start(int64_t step, int batch) { return (step * 7919 % 1000003) * batch; }

}  // namespace

DemoTrainResult train_demo_model(const DemoTrainOptions& o, const JobControl& job) {
  if (o.out_dir.empty()) throw Error("demo-train: no output folder given");
  const VitConfig config = demo_model_config(o);
  auto model = VisionTransformer::create_random(config, o.seed);
  std::vector<at::Tensor> params = model->parameters();
  for (auto& p : params) p.requires_grad_(true);
  // No weight decay on biases, norms and embeddings (timm's convention).
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& [key, t] : model->named_tensors()) {
    const bool matrix = t.dim() >= 2 && key != "pos_embed" && key != "cls_token";
    (matrix ? decay : no_decay).push_back(t);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(o.lr).weight_decay(0)));
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(o.lr));

  const Preprocessing& pp = config.preprocessing;
  BlasThreadsScope blas_threads;
  const auto start = std::chrono::steady_clock::now();
  const int64_t warmup = std::max<int64_t>(1, o.steps / 20);
  const uint64_t train_seed = o.seed * 1000003ULL + 17;  // never the held-out seed
  if (train_seed == o.heldout_seed) throw Error("demo-train: the training and held-out seeds collide");
  std::future<Batch> next =
      std::async(std::launch::async, make_batch, train_seed, batch_start(0, o.batch), o.batch, o.image_size, pp);
  std::vector<double> recent;
  DemoTrainResult r;
  for (int64_t step = 0; step < o.steps; ++step) {
    job.check();
    Batch b = next.get();
    if (step + 1 < o.steps)
      next = std::async(std::launch::async, make_batch, train_seed, batch_start(step + 1, o.batch), o.batch,
                        o.image_size, pp);
    const double lr = step < warmup ? o.lr * (step + 1) / warmup
                                    : 0.5 * o.lr * (1 + std::cos(M_PI * double(step - warmup) / (o.steps - warmup)));
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    opt.zero_grad();
    at::Tensor logits = model->forward(b.images).logits();
    at::Tensor loss = at::cross_entropy_loss(logits, b.labels, {}, at::Reduction::Mean, -100, o.label_smoothing);
    loss.backward();
    opt.step();
    recent.push_back(loss.item<double>());
    if (recent.size() > 100) recent.erase(recent.begin());
    Progress p;
    p.stage = "demo-train";
    p.done = step + 1;
    p.total = o.steps;
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double mean = 0;
    for (double v : recent) mean += v;
    r.final_loss = mean / recent.size();
    p.detail = "loss " + std::to_string(r.final_loss).substr(0, 6);
    job.report(p);
  }
  r.steps = o.steps;
  for (auto& p : params) p.requires_grad_(false);

  // Held-out accuracy on the demo set's own stream (the images shipped in datasets/ are this stream's first ones).
  {
    c10::NoGradGuard no_grad;
    int64_t correct = 0;
    for (int64_t i = 0; i < o.heldout_count; i += 100) {
      const int n = static_cast<int>(std::min<int64_t>(100, o.heldout_count - i));
      Batch b = make_batch(o.heldout_seed, i, n, o.image_size, pp);
      correct += model->forward(b.images).logits().argmax(1).eq(b.labels).sum().item<int64_t>();
    }
    r.heldout_top1 = 100.0 * correct / std::max<int64_t>(1, o.heldout_count);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) throw Error(o.out_dir, "cannot create the folder (" + ec.message() + ")");
  write_tensors(o.out_dir + "/model.safetensors", model->named_tensors(),
                {{"format", "pt"},
                 {"trained_by", "lorq demo-train"},
                 {"heldout_top1", std::to_string(r.heldout_top1)},
                 {"steps", std::to_string(r.steps)}});
  write_text_atomically(o.out_dir + "/config.json", vit_config_to_json(config) + "\n");
  return r;
}

}  // namespace lorq
