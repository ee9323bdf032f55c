#include "lorq/lraqvit/wads.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cstdio>
#include <set>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq::lraqvit {

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::vector<MergedFactors> as_list(const FactorMap& factors) {
  std::vector<MergedFactors> out;
  for (const auto& [name, f] : factors) out.push_back(f);
  return out;
}

// Scales the consumer's input columns by s.
void scale_input_columns(Model& model, FactorMap& factors, const std::string& consumer, const at::Tensor& s) {
  auto it = factors.find(consumer);
  if (it != factors.end()) {
    it->second.b = (it->second.b * s).contiguous();
  } else {
    model.set_weight(consumer, model.weight(consumer) * s);
  }
}

}  // namespace

std::vector<WadsPoint> wads_points(const Model& model, const FactorMap& factors) {
  std::map<std::string, std::vector<WadsPoint>> by_consumer;
  for (const ActivationPoint& p : model.activation_points()) {
    if (p.kind == ActivationKind::LayerNormOutput && !p.norm.empty() && !p.consumer.empty()) {
      by_consumer[p.consumer].push_back({p.norm, WadsPointKind::LayerNorm, p.norm, p.consumer});
    } else if (!p.consumer.empty()) {
      // The attention output projection reads attention-weighted values: its producer is the value projection,
      // timm's fused qkv ("...attn.proj" -> "...attn.qkv", the last third of its rows) or HF's separate value layer
      // (YOLOS "...attention.output.dense" -> "...attention.attention.value", SegFormer -> "...attention.self.value").
      std::vector<std::string> producers;
      if (ends_with(p.consumer, ".attn.proj")) producers.push_back(p.consumer.substr(0, p.consumer.size() - 4) + "qkv");
      const std::string hf = "attention.output.dense";
      if (ends_with(p.consumer, "." + hf)) {
        const std::string prefix = p.consumer.substr(0, p.consumer.size() - hf.size());
        producers.push_back(prefix + "attention.attention.value");
        producers.push_back(prefix + "attention.self.value");
      }
      for (const auto& v : producers) {
        bool exists = false;
        for (const auto& l : model.linear_layers()) exists = exists || l.name == v;
        if (!exists) continue;
        by_consumer[p.consumer].push_back({p.name, WadsPointKind::ValueToProj, v, p.consumer});
        break;
      }
    }
  }
  std::vector<WadsPoint> out;
  for (const auto& l : model.linear_layers()) {
    for (const WadsPoint& p : by_consumer[l.name]) out.push_back(p);
    if (factors.count(l.name)) out.push_back({l.name + ".bottleneck", WadsPointKind::Bottleneck, l.name, l.name});
  }
  return out;
}

at::Tensor consumer_weight(const Model& model, const FactorMap& factors, const WadsPoint& point) {
  auto it = factors.find(point.consumer);
  if (point.kind == WadsPointKind::Bottleneck) {
    if (it == factors.end()) throw Error("WADS: '" + point.consumer + "' is not factorized");
    return it->second.a;
  }
  return it != factors.end() ? it->second.b : model.weight(point.consumer);
}

void fold_scale(Model& model, FactorMap& factors, const WadsPoint& point, const at::Tensor& s_in) {
  c10::NoGradGuard no_grad;
  const at::Tensor s = s_in.detach().to(at::kFloat).contiguous();
  const int64_t channels = consumer_weight(model, factors, point).size(1);
  if (s.dim() != 1 || s.size(0) != channels)
    throw Error("WADS: point '" + point.name + "' has " + std::to_string(channels) + " channels, got a scale of " +
                std::to_string(s.numel()));
  if (!(s > 0).all().item<bool>() || !at::isfinite(s).all().item<bool>())
    throw Error("WADS: point '" + point.name + "': scales must be positive and finite");
  switch (point.kind) {
    case WadsPointKind::LayerNorm:
      model.set_tensor(point.producer + ".weight", model.tensor(point.producer + ".weight") / s);
      model.set_tensor(point.producer + ".bias", model.tensor(point.producer + ".bias") / s);
      scale_input_columns(model, factors, point.consumer, s);
      break;
    case WadsPointKind::ValueToProj: {
      // qkv's output is [q | k | v], C channels each: the v rows are the last C (a separate value layer: all of
      // its C rows).
      auto it = factors.find(point.producer);
      const int64_t rows = it != factors.end() ? it->second.a.size(0) : model.weight(point.producer).size(0);
      at::Tensor row_scale = at::ones({rows});
      row_scale.slice(0, rows - channels).div_(s);
      if (it != factors.end()) {
        it->second.a = (it->second.a * row_scale.unsqueeze(1)).contiguous();
      } else {
        model.set_weight(point.producer, model.weight(point.producer) * row_scale.unsqueeze(1));
      }
      const at::Tensor b = model.bias(point.producer);
      if (b.defined()) model.set_bias(point.producer, b * row_scale);
      scale_input_columns(model, factors, point.consumer, s);
      break;
    }
    case WadsPointKind::Bottleneck: {
      MergedFactors& f = factors.at(point.consumer);
      f.b = (f.b / s.unsqueeze(1)).contiguous();
      f.a = (f.a * s).contiguous();
      break;
    }
  }
}

double wads_error(const at::Tensor& X, const at::Tensor& W, const at::Tensor& s, const WadsSettings& st) {
  c10::NoGradGuard no_grad;
  const at::Tensor Y = at::matmul(X, W.t());
  const at::Tensor Yq =
      at::matmul(fake_quantize_per_token(X / s, st.activations), fake_quantize_per_channel(W * s, st.weight_bits).t());
  return ((Yq - Y).pow(2).sum() / Y.pow(2).sum().clamp_min(1e-30)).item<double>();
}

namespace {

// Learns one point's scale; returns it with the errors.
at::Tensor learn_scale(const at::Tensor& X, const at::Tensor& W, const WadsSettings& st, WadsPointResult& r) {
  const at::Tensor ones = at::ones({X.size(1)});
  r.identity_error = wads_error(X, W, ones, st);
  const at::Tensor ax = X.abs().amax(0).clamp_min(1e-5), aw = W.abs().amax(0).clamp_min(1e-5);
  const at::Tensor init = (ax / aw).sqrt();
  r.initial_error = wads_error(X, W, init, st);
  at::Tensor best = r.initial_error <= r.identity_error ? init : ones;
  double best_err = std::min(r.initial_error, r.identity_error);
  if (st.steps > 0) {
    at::Tensor log_s = best.log().clone().requires_grad_(true);
    torch::optim::Adam opt({log_s}, torch::optim::AdamOptions(st.lr));
    c10::AutoGradMode grad(true);
    const at::Tensor Y = at::matmul(X, W.t()).detach();
    const at::Tensor denom = Y.pow(2).sum().clamp_min(1e-30);
    for (int it = 0; it <= st.steps; ++it) {
      const at::Tensor s = log_s.exp();
      const at::Tensor xq = fake_quantize_per_token_ste(X / s, st.activations);
      const at::Tensor wq = fake_quantize_per_channel_ste(W * s, st.weight_bits);
      const at::Tensor loss = (at::matmul(xq, wq.t()) - Y).pow(2).sum() / denom;
      const double e = loss.item<double>();  // the true quantized error of the current s
      if (e < best_err) {
        best_err = e;
        best = s.detach().clone();
      }
      if (it == st.steps) break;
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
  }
  r.final_error = best_err;
  return best;
}

}  // namespace

std::vector<WadsPointResult> apply_wads(Model& model, FactorMap& factors, const at::Tensor& images,
                                        const WadsSettings& st, const JobControl& job) {
  const auto start = std::chrono::steady_clock::now();
  if (images.dim() != 4 || images.size(0) == 0) throw Error("WADS: expected [N, C, H, W] images");
  if (st.images < 1 || st.steps < 0 || st.max_rows < 1 || !(st.lr > 0))
    throw Error("WADS: images >= 1, max_rows >= 1, steps >= 0 and lr > 0 needed");
  const std::vector<WadsPoint> points = wads_points(model, factors);

  // The float activations of every point's tensor, from the merged model (each point's own fold is the only one
  // that changes its tensor, so one pass serves every point).
  std::map<std::string, std::vector<at::Tensor>> rows;  // by point name
  std::map<std::string, std::vector<const WadsPoint*>> of_consumer;
  std::vector<std::string> watched;
  for (const WadsPoint& p : points) {
    if (!of_consumer.count(p.consumer)) watched.push_back(p.consumer);
    of_consumer[p.consumer].push_back(&p);
  }
  {
    c10::NoGradGuard no_grad;
    install_merged(model, as_list(factors));
    model.set_observer(watched, [&](const std::string& layer, const at::Tensor& in, const at::Tensor&) {
      const at::Tensor x = in.reshape({-1, in.size(-1)});
      for (const WadsPoint* p : of_consumer[layer])
        rows[p->name].push_back(p->kind == WadsPointKind::Bottleneck ? at::matmul(x, factors.at(layer).b.t())
                                                                     : x.clone());
    });
    const int64_t N = std::min<int64_t>(images.size(0), st.images);
    try {
      for (int64_t b0 = 0; b0 < N; b0 += 16) {
        job.check();
        model.forward(images.slice(0, b0, std::min<int64_t>(N, b0 + 16)));
      }
    } catch (...) {
      model.clear_observer();
      for (const auto& [name, f] : factors) model.clear_linear_override(name);
      throw;
    }
    model.clear_observer();
    for (const auto& [name, f] : factors) model.clear_linear_override(name);
  }

  std::vector<WadsPointResult> results;
  BlasThreadsScope blas_threads;
  for (size_t i = 0; i < points.size(); ++i) {
    job.check();
    const WadsPoint& p = points[i];
    WadsPointResult r;
    r.point = p;
    at::Tensor X = at::cat(rows[p.name]);
    rows.erase(p.name);
    if (X.size(0) > st.max_rows) {
      at::Generator g = at::detail::createCPUGenerator(st.seed + i);
      X = X.index_select(0, at::randperm(X.size(0), g, at::kLong).slice(0, 0, st.max_rows));
    }
    const at::Tensor s = learn_scale(X, consumer_weight(model, factors, p).detach(), st, r);
    fold_scale(model, factors, p, s);
    results.push_back(r);
    char detail[200];
    std::snprintf(detail, sizeof detail, "%s: error %.3g -> %.3g (closed form %.3g)", p.name.c_str(), r.identity_error,
                  r.final_error, r.initial_error);
    job.report({"wads", int64_t(i + 1), int64_t(points.size()),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), detail});
  }
  return results;
}

}  // namespace lorq::lraqvit
