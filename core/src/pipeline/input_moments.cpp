#include "lorq/pipeline/input_moments.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq {

std::map<std::string, InputMoment> layer_input_moments(Model& model, const at::Tensor& images, int batch,
                                                       const JobControl& job) {
  if (images.dim() != 4 || images.size(0) == 0) throw Error("layer_input_moments: expected a [N, C, H, W] batch");
  if (batch < 1) throw Error("layer_input_moments: the batch must hold at least one image");
  c10::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  std::map<std::string, InputMoment> out;
  std::vector<std::string> names;
  for (const auto& l : model.linear_layers()) {
    names.push_back(l.name);
    out[l.name].xtx = at::zeros({l.in_features, l.in_features}, at::kDouble);
  }
  model.set_observer(names, [&](const std::string& layer, const at::Tensor& in, const at::Tensor&) {
    const at::Tensor x = in.reshape({-1, in.size(-1)}).to(at::kFloat);
    const at::Tensor xt = x.t().contiguous();
    InputMoment& m = out.at(layer);
    m.xtx.add_(parallel_linear(xt, xt, {}).to(at::kDouble));  // xᵀx on every core, summed in float64
    m.rows += x.size(0);
  });
  try {
    const int64_t N = images.size(0);
    for (int64_t b0 = 0; b0 < N; b0 += batch) {
      job.check();
      model.forward(images.slice(0, b0, std::min<int64_t>(N, b0 + batch)));
      job.report({"input moments", std::min<int64_t>(N, b0 + batch), N,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ""});
    }
  } catch (...) {
    model.clear_observer();
    throw;
  }
  model.clear_observer();
  return out;
}

std::map<std::string, InputMoment> image_set_moments(Model& model, const ImageSet& set, int batch,
                                                     std::vector<std::string>* used, std::vector<std::string>* warnings,
                                                     const JobControl& job) {
  if (batch < 1) throw Error("image_set_moments: the batch must hold at least one image");
  std::map<std::string, InputMoment> out;
  for (size_t begin = 0; begin < set.size(); begin += static_cast<size_t>(batch)) {
    job.check();
    const ImageBatch b = load_batch(set, begin, std::min(set.size(), begin + batch), model.preprocessing(), 2);
    if (warnings)
      for (const auto& f : b.failed) warnings->push_back("skipped: " + f);
    if (used)
      for (size_t i : b.indices) used->push_back(set.items[i].path);
    if (b.images.size(0) > 0) add_moments(out, layer_input_moments(model, b.images, batch, job));
  }
  return out;
}

void add_moments(std::map<std::string, InputMoment>& into, const std::map<std::string, InputMoment>& more) {
  for (const auto& [layer, m] : more) {
    InputMoment& d = into[layer];
    if (!d.xtx.defined()) {
      d.xtx = m.xtx.clone();
      d.rows = m.rows;
      continue;
    }
    if (m.xtx.defined()) d.xtx = d.xtx + m.xtx;  // not in place: `into` may share its tensors with another map
    d.rows += m.rows;
  }
}

at::Tensor compensation_moment(const std::map<std::string, InputMoment>& moments, const std::string& layer) {
  auto it = moments.find(layer);
  if (it == moments.end() || !it->second.xtx.defined()) return {};
  if (it->second.rows < it->second.xtx.size(0)) return {};
  return it->second.xtx;
}

}  // namespace lorq
