#include "lorq/pipeline/sensitivity.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq {

std::map<std::string, at::Tensor> lfh_squared_gradients(Model& model, const at::Tensor& image, const at::Tensor& V,
                                                        std::map<std::string, at::Tensor>* running) {
  const int64_t P = V.size(0);
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
  at::Tensor logits;
  try {
    logits = model.forward(batch);
  } catch (...) {
    for (const auto& n : names) model.clear_linear_override(n);
    throw;
  }
  for (const auto& n : names) model.clear_linear_override(n);
  logits.backward(V.to(logits.dtype()));

  std::map<std::string, at::Tensor> out;
  for (const std::string& name : names) {
    // Every copy of the image has the same input to this layer; the projections differ only in dY.
    at::Tensor x = inputs.at(name);          // [P, N, in] (or [P, in] for the head)
    at::Tensor dy = probes.at(name).grad();  // [P, N, out]
    if (x.dim() == 2) {
      x = x.unsqueeze(1);
      dy = dy.unsqueeze(1);
    }
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

std::map<std::string, at::Tensor> label_free_hessian(Model& model, const at::Tensor& images, const LfhOptions& o,
                                                     const JobControl& job) {
  if (images.dim() != 4 || images.size(0) == 0) throw Error("label_free_hessian: expected a [K, C, H, W] image batch");
  if (o.projections < 1) throw Error("label_free_hessian: projections must be at least 1");
  const auto start = std::chrono::steady_clock::now();
  BlasThreadsScope blas_threads;  // autograd GEMMs: give OpenBLAS the threads (see parallel_ops.h)
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  const int64_t K = images.size(0);
  const int64_t classes = model.config().num_classes;
  std::map<std::string, at::Tensor> total, running;
  for (int64_t k = 0; k < K; ++k) {
    job.check();
    at::Tensor V = at::randn({o.projections, classes}, gen);
    // Chunks in projection order: the as-coded running sums carry over from one chunk to the next unchanged.
    const int64_t chunk = std::max(1, o.projection_batch);
    for (int64_t p0 = 0; p0 < o.projections; p0 += chunk) {
      const at::Tensor Vc = V.slice(0, p0, std::min<int64_t>(o.projections, p0 + chunk));
      auto sq = lfh_squared_gradients(model, images[k], Vc, o.as_coded_accumulation ? &running : nullptr);
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
