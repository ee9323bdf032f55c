#include "lorq/api.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdlib>
#include <filesystem>

#include "lorq/evaluate.h"
#include "lorq/images.h"
#include "lorq/model.h"

namespace fs = std::filesystem;

namespace lorq::api {

struct ModelHandle::Impl {
  std::unique_ptr<Model> model;
  ModelSummary summary;
};

ModelHandle::ModelHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelHandle::~ModelHandle() = default;

std::shared_ptr<ModelHandle> ModelHandle::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->model = load_model(path);
  const ModelConfig& c = impl->model->config();
  ModelSummary& s = impl->summary;
  s.path = path;
  s.architecture = c.architecture;
  s.depth = c.depth;
  s.embed_dim = c.embed_dim;
  s.num_heads = c.num_heads;
  s.num_classes = c.num_classes;
  s.image_size = c.img_size;
  for (const auto& l : impl->model->linear_layers()) {
    s.layers.push_back({l.name, l.out_features, l.in_features, l.params(), l.fp32_bytes() / 1e6, l.low_rank_allowed,
                        l.stage});
    s.compressible_params += l.params();
  }
  for (const auto& [k, t] : impl->model->named_tensors()) s.total_params += t.numel();
  return std::shared_ptr<ModelHandle>(new ModelHandle(std::move(impl)));
}

const ModelSummary& ModelHandle::summary() const { return impl_->summary; }

std::vector<ClassScore> ModelHandle::predict(const std::string& image_path, int k) const {
  c10::NoGradGuard no_grad;
  const ModelConfig& c = impl_->model->config();
  at::Tensor logits = impl_->model->forward(load_image(image_path, c.preprocessing).unsqueeze(0))[0];
  std::vector<ClassScore> out;
  for (const Prediction& p : top_k(logits, k, c)) out.push_back({p.class_index, p.probability, p.label});
  return out;
}

EvalSummary ModelHandle::evaluate(const std::string& images, const std::string& labels, int64_t limit,
                                  const JobControl& job) const {
  ImageSet set = open_image_set(images, labels, impl_->model->config().label_names);
  EvalOptions o;
  o.limit = limit;
  EvalResult r = lorq::evaluate(*impl_->model, set, o, job);
  return {r.images, r.labeled, r.top1_pct(), r.top5_pct(), r.images_per_s(), r.seconds, r.failed};
}

DemoPaths find_demo() {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("LORQ_DEMO_DIR")) roots.emplace_back(env);
#ifdef LORQ_DEMO_DIR
  roots.emplace_back(LORQ_DEMO_DIR);
#endif
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    roots.push_back(exe.parent_path() / "../share/lorq/datasets");
    roots.push_back(exe.parent_path() / "../datasets");
    roots.push_back(exe.parent_path() / "../../datasets");
  }
  for (const fs::path& r : roots) {
    if (fs::is_regular_file(r / "demo-vit" / "model.safetensors", ec)) {
      DemoPaths d;
      d.model_dir = (r / "demo-vit").lexically_normal().string();
      d.images_dir = (r / "demo-shapes" / "images").lexically_normal().string();
      d.labels_csv = (r / "demo-shapes" / "labels.csv").lexically_normal().string();
      if (!fs::is_regular_file(d.labels_csv, ec)) d.labels_csv.clear();
      return d;
    }
  }
  return {};
}

void init_engine() { init_threads(); }

}  // namespace lorq::api
