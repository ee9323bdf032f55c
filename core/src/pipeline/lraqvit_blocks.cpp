#include "lorq/pipeline/lraqvit_blocks.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <set>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/lraqvit/method.h"

namespace lorq {

namespace {

lraqvit::TokenQuantizer token_quantizer(int bits) {
  lraqvit::TokenQuantizer q;
  q.bits = bits;
  return q;
}

bool is_bias_or_norm(const std::string& key) {  // as distill.cpp selects what it trains
  return (key.size() > 5 && key.compare(key.size() - 5, 5, ".bias") == 0) || key.find("norm") != std::string::npos;
}

// The per-token overrides with straight-through rounding, so the recovery's gradients pass the quantizers.
void install_per_token_ste(Model& model, const std::vector<CompressedLayer>& layers, int bits) {
  const lraqvit::TokenQuantizer q = token_quantizer(bits);
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> factors;
  for (const CompressedLayer& c : layers)
    if (c.form == LayerForm::LowRank) factors[c.layer] = {c.a.dequantized(), c.b.dequantized()};
  for (const LinearLayerInfo& info : model.linear_layers()) {
    if (info.role == LayerRole::PatchEmbedding) continue;
    auto f = factors.find(info.name);
    if (f != factors.end()) {
      const at::Tensor a = f->second.first, b = f->second.second;
      model.set_linear_override(info.name, [a, b, q](const at::Tensor& x, const at::Tensor&, const at::Tensor& bias) {
        const at::Tensor z = at::linear(lraqvit::fake_quantize_per_token_ste(x, q), b);
        return at::linear(lraqvit::fake_quantize_per_token_ste(z, q), a, bias);
      });
    } else {
      model.set_linear_override(info.name, [q](const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
        return at::linear(lraqvit::fake_quantize_per_token_ste(x, q), w, bias);
      });
    }
  }
}

}  // namespace

std::vector<lraqvit::WadsPointResult> apply_wads_before_final_layers(Model& model, const at::Tensor& images,
                                                                     const LraQvitBlockSettings& s,
                                                                     std::map<std::string, at::Tensor>* lfh,
                                                                     const JobControl& job) {
  if (s.wads_steps < 0) throw Error("WADS: steps must be >= 0, got " + std::to_string(s.wads_steps));
  std::map<std::string, at::Tensor> before;
  for (const LinearLayerInfo& info : model.linear_layers()) before[info.name] = model.weight(info.name).clone();
  lraqvit::WadsSettings ws;
  ws.steps = s.wads_steps;
  ws.weight_bits = std::min(8, std::max(2, s.wads_weight_bits));
  ws.activations = token_quantizer(std::min(8, std::max(2, s.wads_act_bits)));
  lraqvit::FactorMap no_factors;  // MLoRQ's factors are made after the scaling (see the header)
  auto results = lraqvit::apply_wads(model, no_factors, images, ws, job);
  if (lfh) {
    c10::NoGradGuard no_grad;
    for (auto& [name, h] : *lfh) {
      auto it = before.find(name);
      if (it == before.end() || !h.defined()) continue;
      const at::Tensor w0 = it->second.reshape(h.sizes()), w1 = model.weight(name).reshape(h.sizes());
      // c = w1 / w0 per element (a row or column scale); elements at zero keep their sensitivity.
      const at::Tensor ok = (w0 != 0) & (w1 != 0);
      const at::Tensor ratio = at::where(ok, w0 / at::where(ok, w1, at::ones_like(w1)), at::ones_like(w0));
      h = (h * ratio * ratio).contiguous();
    }
  }
  return results;
}

void recover_biases_and_norms(Model& model, const std::vector<CompressedLayer>& layers, const Model& teacher,
                              const at::Tensor& images, const LraQvitBlockSettings& s, LraQvitBlocksReport* report,
                              const JobControl& job) {
  if (s.recovery_steps < 1) throw Error("recovery: steps must be >= 1");
  std::unique_ptr<Model> student = model.clone();
  apply_compressed_layers(*student, layers);
  if (s.per_token_bits > 0) install_per_token_ste(*student, layers, s.per_token_bits);
  std::unique_ptr<Model> teacher_copy = teacher.clone();
  lraqvit::DistillSettings ds;
  ds.steps = s.recovery_steps;
  ds.batch = std::max(1, s.recovery_batch);
  ds.lr = s.recovery_lr;
  ds.train_biases_norms = true;
  std::vector<lraqvit::RbLraLayer> no_branches;  // only the float biases and norms train (see the header)
  const at::Tensor no_labels;                    // the teacher's predictions are the targets
  LraQvitBlocksReport local;
  LraQvitBlocksReport& r = report ? *report : local;
  r.recovery_loss_before = lraqvit::distillation_loss(*student, *teacher_copy, no_branches, images, no_labels, ds).loss;
  r.recovery =
      lraqvit::distill(*student, *teacher_copy, no_branches, images, no_labels, ds, job, s.recovery_checkpoint);
  r.recovery_loss_after = lraqvit::distillation_loss(*student, *teacher_copy, no_branches, images, no_labels, ds).loss;
  c10::NoGradGuard no_grad;
  for (const auto& [key, t] : student->named_tensors())
    if (is_bias_or_norm(key)) model.set_tensor(key, t.detach().clone());
}

void install_per_token_activations(Model& model, const std::vector<CompressedLayer>& layers, int bits) {
  if (bits <= 0) return;
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> factors;
  for (const CompressedLayer& c : layers)
    if (c.form == LayerForm::LowRank) factors[c.layer] = {c.a.dequantized(), c.b.dequantized()};
  lraqvit::install_token_quantization(model, factors, token_quantizer(bits));
}

std::map<std::string, std::string> lraqvit_blocks_metadata(const LraQvitBlockSettings& s) {
  std::map<std::string, std::string> meta;
  if (s.per_token_bits > 0) {
    meta["lraqvit.act_bits"] = std::to_string(s.per_token_bits);
    meta["lraqvit.act_mode"] = lraqvit::to_string(lraqvit::TokenQuantMode::Symmetric);
  }
  std::string blocks;
  if (s.per_token_bits > 0) blocks += "per-token";
  if (s.wads) blocks += std::string(blocks.empty() ? "" : ",") + "wads";
  if (s.recovery_steps > 0)
    blocks += std::string(blocks.empty() ? "" : ",") + "recovery=" + std::to_string(s.recovery_steps);
  if (!blocks.empty()) meta["mlorq.lraqvit_blocks"] = blocks;
  return meta;
}

}  // namespace lorq
