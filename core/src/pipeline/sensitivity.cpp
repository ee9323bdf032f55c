#include "lorq/pipeline/sensitivity.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "lorq/common/error.h"
#include "lorq/common/memory_info.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/tasks/task.h"

namespace lorq {

std::map<std::string, at::Tensor> lfh_squared_gradients(Model& model, const at::Tensor& image,
                                                        const std::vector<at::Tensor>& V,
                                                        std::map<std::string, at::Tensor>* running) {
  const std::vector<std::pair<std::string, double>> error_outputs = task_of(model).error_outputs();
  if (V.size() != error_outputs.size() || V.empty())
    throw Error("lfh_squared_gradients: one projection tensor per error output expected");
  const int64_t P = V[0].size(0);
  std::vector<std::string> names;
  for (const auto& l : model.linear_layers())
    if (l.low_rank_allowed) names.push_back(l.name);

  // Probe tensors added to each layer's output: their gradient is the layer's output gradient dL/dY.
  std::map<std::string, at::Tensor> inputs, probes;
  c10::AutoGradMode grad_on(true);
  for (const std::string& name : names) {
    model.set_linear_override(name, [&, name](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
      at::Tensor y = at::linear(x, w, b);
      at::Tensor probe = at::zeros_like(y).requires_grad_(true);
      probes[name] = probe;
      inputs[name] = x.detach();
      return y + probe;
    });
  }
  at::Tensor batch = image.unsqueeze(0).expand({P, -1, -1, -1}).contiguous();
  ModelOutputs y;
  try {
    y = model.forward(batch);
  } catch (...) {
    for (const auto& n : names) model.clear_linear_override(n);
    throw;
  }
  for (const auto& n : names) model.clear_linear_override(n);
  if (error_outputs.size() == 1) {
    const at::Tensor& out = y.at(error_outputs[0].first);
    out.backward(V[0].to(out.dtype()));
  } else {
    // Σ_o <y_o, v_o>: its gradient with respect to each output is that output's projection.
    at::Tensor total;
    for (size_t o = 0; o < error_outputs.size(); ++o) {
      const at::Tensor& out = y.at(error_outputs[o].first);
      const at::Tensor term = (out * V[o].to(out.dtype())).sum();
      total = total.defined() ? total + term : term;
    }
    total.backward();
  }

  std::map<std::string, at::Tensor> out;
  for (const std::string& name : names) {
    // Every copy of the image has the same input to this layer; the projections differ only in dY.
    // [P, N, in] / [P, N, out]: tokens (ViT), [P, in] for a pooled head, [P, H, W, in] for a 1x1 convolution read
    // as a linear layer (SegFormer's decoder): every position is one row.
    at::Tensor x = inputs.at(name);
    at::Tensor dy = probes.at(name).grad();
    x = x.reshape({x.size(0), -1, x.size(-1)});
    dy = dy.reshape({dy.size(0), -1, dy.size(-1)});
    at::Tensor g = at::bmm(dy.transpose(1, 2), x);  // [P, out, in]: g_p = dY_pᵀ X
    if (running) {
      at::Tensor& acc = (*running)[name];
      if (!acc.defined()) acc = at::zeros({g.size(1), g.size(2)});
      at::Tensor sums = at::cumsum(g, 0) + acc;  // the never-reset gradient after each projection
      acc = sums[P - 1].clone();
      out[name] = sums.pow(2).sum(0);
    } else {
      out[name] = g.pow(2).sum(0);
    }
  }
  return out;
}

std::vector<ProjectionShape> lfh_projection_shapes(Model& model, const at::Tensor& images) {
  c10::NoGradGuard no_grad;
  const std::vector<std::pair<std::string, double>> outs = task_of(model).error_outputs();
  const ModelOutputs y = model.forward(outs.size() == 1 ? images.slice(0, 0, 1) : images);
  std::vector<ProjectionShape> shapes;
  double reference = 0;  // elements · mean(y²) / weight of the first output
  for (size_t i = 0; i < outs.size(); ++i) {
    const at::Tensor& t = y.at(outs[i].first);
    ProjectionShape ps;
    ps.shape = t.sizes().slice(1).vec();
    if (outs.size() > 1) {
      const double elements = static_cast<double>(t.numel() / std::max<int64_t>(1, t.size(0)));
      const double signal = t.to(at::kDouble).pow(2).mean().item<double>();
      const double unit = elements * signal / outs[i].second;
      if (i == 0) reference = unit;
      ps.scale = unit > 0 ? std::sqrt(reference / unit) : 0.0;
    }
    shapes.push_back(ps);
  }
  return shapes;
}

std::map<std::string, at::Tensor> label_free_hessian(Model& model, const at::Tensor& images, const LfhOptions& o,
                                                     const JobControl& job) {
  if (images.dim() != 4 || images.size(0) == 0) throw Error("label_free_hessian: expected a [K, C, H, W] image batch");
  if (o.projections < 1) throw Error("label_free_hessian: projections must be at least 1");
  const auto start = std::chrono::steady_clock::now();
  BlasThreadsScope blas_threads;  // autograd GEMMs: give OpenBLAS the threads (see parallel_ops.h)
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  const int64_t K = images.size(0);
  const std::vector<ProjectionShape> shapes = lfh_projection_shapes(model, images);
  std::map<std::string, at::Tensor> total, running;
  // Each projection of a chunk back-propagates its own copy of the image. At a detector's input size one copy
  // holds GBs (YOLOS-tiny at 800x1066: ~3,400 tokens and quadratic attention), so the configured chunk would end in
  // the kernel's OOM killer: the first image runs one projection alone to measure a copy's peak, and the chunk is
  // cut to what the budget holds. Where /proc cannot tell, the configured chunk stays.
  int64_t chunk = std::max(1, o.projection_batch);
  const int64_t budget = o.memory_budget_bytes > 0 ? o.memory_budget_bytes : available_memory_bytes() / 2;
  bool probing = budget > 0 && chunk > 1 && o.projections > 1;
  for (int64_t k = 0; k < K; ++k) {
    job.check();
    // One projection per output value, drawn output after output (a single [P, classes] draw for classifiers).
    std::vector<at::Tensor> V;
    for (const ProjectionShape& ps : shapes) {
      std::vector<int64_t> size{o.projections};
      size.insert(size.end(), ps.shape.begin(), ps.shape.end());
      at::Tensor v = at::randn(size, gen);
      V.push_back(ps.scale == 1.0 ? v : v * ps.scale);
    }
    // Chunks in projection order: the as-coded running sums carry over from one chunk to the next unchanged.
    for (int64_t p0 = 0; p0 < o.projections;) {
      const int64_t n = std::min<int64_t>(probing ? 1 : chunk, o.projections - p0);
      std::vector<at::Tensor> Vc;
      for (const at::Tensor& v : V) Vc.push_back(v.slice(0, p0, p0 + n));
      const int64_t resident_before = probing ? resident_bytes() : 0;
      if (probing) probing = reset_peak_resident();
      auto sq = lfh_squared_gradients(model, images[k], Vc, o.as_coded_accumulation ? &running : nullptr);
      if (probing) {
        const int64_t per_copy = std::max<int64_t>(1, peak_resident_bytes() - resident_before);
        chunk = std::clamp<int64_t>(budget / per_copy, 1, chunk);
        probing = false;
      }
      p0 += n;
      for (auto& [name, t] : sq) {
        if (total.count(name)) {
          total[name] += t;
        } else {
          total[name] = t;
        }
      }
    }
    job.report(
        {"sensitivity", k + 1, K, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ""});
  }
  std::map<std::string, at::Tensor> h;
  const double draws = double(K) * o.projections;
  for (const auto& l : model.linear_layers()) {
    if (l.low_rank_allowed) {
      h[l.name] = (total.at(l.name) / draws).to(at::kFloat);
    } else {
      h[l.name] = at::ones({l.out_features, l.in_features});
    }
  }
  return h;
}

}  // namespace lorq
