#include "lorq/lraqvit/method.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <set>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq::lraqvit {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

QuantizedTensor quantize_per_channel(const at::Tensor& values, int bits) {
  return QuantizedTensor::nearest(values.contiguous(), per_channel_weight_params(values, bits));
}

CompressedLayer quant_layer(const std::string& name, const at::Tensor& w, int bits) {
  CompressedLayer c;
  c.layer = name;
  c.form = LayerForm::Quant;
  c.weight = quantize_per_channel(w, bits);
  c.option.kind = OptionKind::Quant;
  c.option.bits = bits;
  c.option.size_bits = w.numel() * bits;
  c.option.bytes = c.option.size_bits / 8;
  c.option.error = 0;  // LRA-QViT predicts no error (MLoRQ's field)
  return c;
}

CompressedLayer low_rank_layer(const MergedFactors& f, int bits) {
  CompressedLayer c;
  c.layer = f.layer;
  c.form = LayerForm::LowRank;
  c.a = quantize_per_channel(f.a, bits);
  c.b = quantize_per_channel(f.b, bits);
  c.option.kind = OptionKind::LowRank;
  c.option.rank = f.a.size(1);
  c.option.bits_a = c.option.bits_b = bits;
  c.option.size_bits = c.option.rank * (f.a.size(0) * bits + f.b.size(1) * bits);
  c.option.bytes = c.option.size_bits / 8;
  c.option.error = 0;  // LRA-QViT predicts no error (MLoRQ's field)
  return c;
}

}  // namespace

int64_t lraqvit_weight_bytes(const Model& model, const RbLraSettings& lra, int bits) {
  const std::vector<std::string> kinds = layer_kinds_for(model, lra);
  int64_t bytes = 0;
  for (const LinearLayerInfo& info : model.linear_layers()) {
    const bool factorized = selected_layer(info, kinds);
    const int64_t m = info.out_features, n = info.in_features;
    bytes += (factorized ? rank_for(m, n, lra) * (m * bits + n * bits) : m * n * bits) / 8;
  }
  return bytes;
}

void install_token_quantization(Model& model, const std::map<std::string, std::pair<at::Tensor, at::Tensor>>& factors,
                                const TokenQuantizer& q) {
  if (q.bits == 0) return;
  for (const LinearLayerInfo& info : model.linear_layers()) {
    if (info.role == LayerRole::PatchEmbedding) continue;  // its input is the image
    auto f = factors.find(info.name);
    if (f != factors.end()) {
      const at::Tensor a = f->second.first, b = f->second.second;
      model.set_linear_override(info.name, [a, b, q](const at::Tensor& x, const at::Tensor&, const at::Tensor& bias) {
        return parallel_linear(fake_quantize_per_token(parallel_linear(fake_quantize_per_token(x, q), b, {}), q), a,
                               bias);
      });
    } else {
      model.set_linear_override(info.name, [q](const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
        return parallel_linear(fake_quantize_per_token(x, q), w, bias);
      });
    }
  }
}

void apply_lraqvit_layers(Model& model, const std::vector<CompressedLayer>& layers, const TokenQuantizer& q) {
  apply_compressed_layers(model, layers);
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> factors;
  for (const CompressedLayer& c : layers)
    if (c.form == LayerForm::LowRank) factors[c.layer] = {c.a.dequantized(), c.b.dequantized()};
  install_token_quantization(model, factors, q);
}

LraQvitResult run_lraqvit(const Model& float_model, const at::Tensor& images, const at::Tensor& labels,
                          const LraQvitSettings& s, const JobControl& job) {
  if (s.weight_bits < 2 || s.weight_bits > 8)
    throw Error("LRA-QViT: weight bits must be in 2..8, got " + std::to_string(s.weight_bits));
  if (s.act_bits != 0 && (s.act_bits < 2 || s.act_bits > 8))
    throw Error("LRA-QViT: activation bits must be 0 (weights only) or in 2..8, got " + std::to_string(s.act_bits));
  LraQvitResult r;
  r.activations = {s.act_bits, s.act_mode};
  r.model = float_model.clone();
  Model& model = *r.model;

  auto t = std::chrono::steady_clock::now();
  job.report({"rb-lra", 0, 1, 0, ""});
  std::vector<RbLraLayer> lra = truncate_layers(model, s.lra);
  r.ranks = rank_summary(lra);
  r.stage_seconds.emplace_back("rb-lra", seconds_since(t));

  if (s.recover) {
    t = std::chrono::steady_clock::now();
    std::unique_ptr<Model> teacher = float_model.clone();
    r.distill = distill(model, *teacher, lra, images, labels, s.distill, job, s.distill_checkpoint);
    r.stage_seconds.emplace_back("distillation", seconds_since(t));
  }
  FactorMap factors;
  for (const RbLraLayer& l : lra) factors[l.name] = l.merge();

  if (s.wads && s.act_bits > 0) {
    t = std::chrono::steady_clock::now();
    WadsSettings ws = s.wads_settings;
    ws.weight_bits = s.weight_bits;
    ws.activations = r.activations;
    r.wads = apply_wads(model, factors, images, ws, job);
    r.stage_seconds.emplace_back("wads", seconds_since(t));
  }

  t = std::chrono::steady_clock::now();
  c10::NoGradGuard no_grad;
  for (const auto& info : model.linear_layers()) {
    auto f = factors.find(info.name);
    r.layers.push_back(f != factors.end() ? low_rank_layer(f->second, s.weight_bits)
                                          : quant_layer(info.name, model.weight(info.name), s.weight_bits));
    r.weight_bytes += r.layers.back().option.bytes;
    r.compressible_params += info.params();
  }
  apply_lraqvit_layers(model, r.layers, r.activations);
  r.stage_seconds.emplace_back("quantization", seconds_since(t));
  job.report({"quantization", 1, 1, seconds_since(t), ""});
  return r;
}

}  // namespace lorq::lraqvit
