#include "lorq/quant/compressed_layer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "lorq/pipeline/compress.h"
#include "lorq/common/error.h"
#include "lorq/quant/gptq.h"

namespace lorq {

QuantizedTensor QuantizedTensor::nearest(const at::Tensor& values, const RowQuantParams& params) {
  QuantizedTensor q;
  q.values = values.to(at::kFloat).contiguous();
  q.params = params;
  q.codes = quantize_rows_to_codes(q.values, params);
  return q;
}

at::Tensor CompressedLayer::dequantized_weight() const {
  switch (form) {
    case LayerForm::Float:
      return {};
    case LayerForm::Quant:
      return weight.dequantized();
    case LayerForm::LowRank:
      return at::mm(a.dequantized().contiguous(), b.dequantized().contiguous());
  }
  return {};
}

namespace {

RowQuantParams first_rows(const RowQuantParams& p, int64_t rows) {
  return {p.scale.slice(0, 0, rows).contiguous(), p.zero_point.slice(0, 0, rows).contiguous(), p.bits};
}

void check_allocation(const CompressionAnalysis& a, const Allocation& alloc) {
  if (alloc.choice.size() != a.layers.size())
    throw Error("allocation has " + std::to_string(alloc.choice.size()) + " choices for " +
                std::to_string(a.layers.size()) + " layers");
  for (size_t i = 0; i < a.layers.size(); ++i)
    if (alloc.choice[i] < kKeepFloat || alloc.choice[i] >= static_cast<int>(a.layers[i].options.size()))
      throw Error(a.layers[i].layer + ": choice " + std::to_string(alloc.choice[i]) + " does not exist");
}

// One CompressedLayer per analysed layer: Float for kept layers, otherwise `fill` sets the tensors of the
// layer's chosen option (c.layer and c.option are set before).
template <typename Fill>
std::vector<CompressedLayer> build_layers(const CompressionAnalysis& a, const Allocation& alloc, Fill fill) {
  c10::NoGradGuard no_grad;
  check_allocation(a, alloc);
  std::vector<CompressedLayer> out;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerCandidates& l = a.layers[i];
    CompressedLayer c;
    c.layer = l.layer;
    if (alloc.choice[i] == kKeepFloat) {
      c.form = LayerForm::Float;
    } else {
      c.option = l.options[alloc.choice[i]];
      c.form = c.option.kind == OptionKind::Quant ? LayerForm::Quant : LayerForm::LowRank;
      fill(l, c);
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

std::vector<CompressedLayer> compress_layers(const Model& model, const CompressionAnalysis& a,
                                             const Allocation& alloc) {
  return build_layers(a, alloc, [&](const LayerCandidates& l, CompressedLayer& c) {
    if (c.form == LayerForm::Quant) {
      // The values rounded to the analysis' codes: W, or its error-compensated values (rounding starts from them).
      c.weight = QuantizedTensor::nearest(weight_source(l, c.option.bits, model.weight(l.layer)),
                                          l.weight_params.at(c.option.bits));
      c.weight.compensated = l.weight_values.count(c.option.bits) > 0;
    } else {
      // Stage 1 quantized the full factors once and truncated (§5.2): the same codes, sliced to rank r.
      const int64_t r = c.option.rank;
      c.a = QuantizedTensor::nearest(factor_a_source(l, c.option.bits_a, c.option.bits_b).slice(1, 0, r),
                                     l.a_params.at(c.option.bits_a));
      c.b = QuantizedTensor::nearest(factor_b_source(l, c.option.bits_b).slice(0, 0, r),
                                     first_rows(l.b_params.at(c.option.bits_b), r));
      c.a.compensated = l.a_values.count({c.option.bits_a, c.option.bits_b}) > 0;
      c.b.compensated = l.b_values.count(c.option.bits_b) > 0;
    }
  });
}

std::vector<CompressedLayer> refit_layers(const Model& model, const CompressionAnalysis& a, const Allocation& alloc,
                                          const std::map<std::string, at::Tensor>& lfh, const CandidateSettings& s,
                                          const std::map<std::string, at::Tensor>* input_moments) {
  return build_layers(a, alloc, [&](const LayerCandidates& l, CompressedLayer& c) {
    const at::Tensor W = model.weight(l.layer).to(at::kFloat).contiguous();
    auto it = lfh.find(l.layer);
    const bool use_h = s.hessian_weighted && it != lfh.end() && it->second.defined();
    const at::Tensor H = use_h ? it->second.to(at::kFloat) : at::Tensor();
    // Error compensation through the layer's input moment (when given for this layer).
    at::Tensor Hx;
    if (s.quantizer == Quantizer::Gptq && input_moments) {
      auto m = input_moments->find(l.layer);
      if (m != input_moments->end() && m->second.defined()) Hx = m->second.to(at::kDouble);
    }
    const auto compensated = [&](const at::Tensor& v, const RowQuantParams& p, const at::Tensor& Hv,
                                 const GptqSettings& gs) {
      bool used = false;
      QuantizedTensor q =
          QuantizedTensor::nearest(Hv.defined() ? compensated_values(v, p, Hv, gptq_factorize(Hv, gs), gs, &used) : v, p);
      q.compensated = used;
      return q;
    };
    if (c.form == LayerForm::Quant) {
      const RangeError kind = use_h ? RangeError::Hessian : RangeError::Plain;
      c.weight = compensated(W, search_row_ranges(W, c.option.bits, kind, H), Hx, s.gptq);
    } else {
      const int64_t r = c.option.rank;
      const LowRankFactors f = weighted_svd(W, s.weighted_svd ? H : at::Tensor());
      const at::Tensor A = f.A.slice(1, 0, r).contiguous(), B = f.B.slice(0, 0, r).contiguous();
      c.b = compensated(B, search_row_ranges(B, c.option.bits_b, RangeError::Plain), Hx, s.gptq);
      // The second factor's input is the first factor's (quantized) output.
      at::Tensor Hz;
      if (Hx.defined()) {
        const at::Tensor Bt = c.b.dequantized().to(at::kDouble);
        Hz = at::mm(at::mm(Bt, Hx), Bt.t());
      }
      c.a = compensated(A, search_row_ranges(A, c.option.bits_a, RangeError::Product, H, W, B), Hz, s.gptq);
    }
  });
}

void apply_compressed_layers(Model& model, const std::vector<CompressedLayer>& layers) {
  c10::NoGradGuard no_grad;
  for (const CompressedLayer& c : layers)
    if (c.form != LayerForm::Float) model.set_weight(c.layer, c.dequantized_weight());
}

}  // namespace lorq
