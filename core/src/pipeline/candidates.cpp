#include "lorq/pipeline/candidates.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include "lorq/common/error.h"

namespace lorq {

std::string LayerOption::label() const {
  if (kind == OptionKind::Quant) return "Q" + std::to_string(bits);
  return "LR r=" + std::to_string(rank) + " A" + std::to_string(bits_a) + "/B" + std::to_string(bits_b);
}

std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points) {
  // Sweep by the first coordinate (ties by the second, then by position): a point survives when its second
  // coordinate is strictly below everything seen so far. The first of exactly tied points wins.
  std::vector<size_t> order(points.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (points[a].first != points[b].first) return points[a].first < points[b].first;
    return points[a].second < points[b].second;
  });
  std::vector<size_t> keep;
  double best = std::numeric_limits<double>::infinity();
  for (size_t i : order) {
    if (points[i].second < best) {
      keep.push_back(i);
      best = points[i].second;
    }
  }
  std::sort(keep.begin(), keep.end());
  return keep;
}

at::Tensor low_rank_local_losses(const at::Tensor& W, const at::Tensor& A_q, const at::Tensor& B_q,
                                 const at::Tensor& row_weight) {
  // ‖W_c − Σ_{i≤r} a_ci b_i‖² expands into ‖W_c‖² − 2 Σ_{i≤r} a_ci (W_c·b_i) + Σ_{i,j≤r} a_ci a_cj (b_i·b_j), so
  // every rank's loss comes from three matrix products and prefix sums: O(m·n·k) once instead of per rank.
  // float64 because the three terms nearly cancel at high rank.
  const at::Tensor W64 = W.to(at::kDouble), A = A_q.to(at::kDouble), B = B_q.to(at::kDouble);
  const at::Tensor h = row_weight.to(at::kDouble);
  const double mn = double(W.size(0)) * W.size(1);
  const double base = (W64.pow(2).sum(1) * h).sum().item<double>();
  at::Tensor P = at::mm(W64, B.t());                                  // [m, k]: W_c·b_i
  at::Tensor cross = at::cumsum((A * P * h.unsqueeze(1)).sum(0), 0);  // [k]
  at::Tensor M = at::mm(A.t() * h.unsqueeze(0), A);                   // [k, k]: Σ_c h_c a_ci a_cj
  at::Tensor E = M * at::mm(B, B.t());
  at::Tensor block = at::cumsum(at::cumsum(E, 0), 1).diagonal();  // Σ_{i,j≤r} E_ij
  return ((base - 2 * cross + block) / mn).clamp_min(0);
}

namespace {

double weighted_loss(const at::Tensor& W, const at::Tensor& Wq, const at::Tensor& hbar) {
  at::Tensor d = (W.to(at::kDouble) - Wq.to(at::kDouble)).pow(2).sum(1);
  return (d * hbar.to(at::kDouble)).sum().item<double>() / (double(W.size(0)) * W.size(1));
}

}  // namespace

at::Tensor weight_source(const LayerCandidates& c, int bits, const at::Tensor& W) {
  auto it = c.weight_values.find(bits);
  return it != c.weight_values.end() ? it->second : W.to(at::kFloat).reshape({c.out_features, c.in_features});
}

at::Tensor factor_a_source(const LayerCandidates& c, int bits_a, int bits_b) {
  auto it = c.a_values.find({bits_a, bits_b});
  return it != c.a_values.end() ? it->second : c.factors.A;
}

at::Tensor factor_b_source(const LayerCandidates& c, int bits_b) {
  auto it = c.b_values.find(bits_b);
  return it != c.b_values.end() ? it->second : c.factors.B;
}

LayerCandidates build_layer_candidates(const std::string& layer, const at::Tensor& W_in, const at::Tensor& H_in,
                                       bool low_rank_allowed, const CandidateSettings& s,
                                       const at::Tensor& input_moment) {
  if (W_in.dim() != 2) throw Error(layer + ": the weight must be a matrix");
  const at::Tensor W = W_in.to(at::kFloat).contiguous();
  const int64_t m = W.size(0), n = W.size(1), k = std::min(m, n);
  const bool use_h = s.hessian_weighted && H_in.defined();
  const at::Tensor H = use_h ? H_in.to(at::kFloat) : at::Tensor();
  const at::Tensor hbar = use_h ? std::get<0>(H.max(1)) : at::ones({m});
  const int max_bits = *std::max_element(s.bits.begin(), s.bits.end());

  LayerCandidates c;
  c.layer = layer;
  c.out_features = m;
  c.in_features = n;
  c.low_rank_allowed = low_rank_allowed;
  // One factorisation of the input moment serves every bit width of W and of the first factor B.
  const bool compensate = s.quantizer == Quantizer::Gptq && input_moment.defined();
  at::Tensor Hx;
  GptqFactor fx;
  if (compensate) {
    if (input_moment.dim() != 2 || input_moment.size(0) != n || input_moment.size(1) != n)
      throw Error(layer + ": the input moment must be [" + std::to_string(n) + ", " + std::to_string(n) + "]");
    Hx = input_moment.to(at::kDouble);
    fx = gptq_factorize(Hx, s.gptq);
  }

  // Everything considered, with the size the Pareto filter sees.
  std::vector<LayerOption> all;
  std::vector<std::pair<double, double>> points;  // (filter size, Λ)
  for (int b : s.bits) {
    RowQuantParams p = search_row_ranges(W, b, use_h ? RangeError::Hessian : RangeError::Plain, H);
    LayerOption o;
    o.kind = OptionKind::Quant;
    o.bits = b;
    o.size_bits = int64_t(b) * m * n;
    o.bytes = o.size_bits / 8;
    if (compensate && b <= s.gptq.row_grid_max_bits) {
      CompensatedRows r = compensated_rows(W, p, Hx, fx, s.gptq);
      p = r.params;
      c.weight_values[b] = r.values;
    } else if (compensate) {
      c.weight_values[b] = compensated_values(W, p, Hx, fx, s.gptq);
    }
    c.weight_params[b] = p;
    o.local_loss = weighted_loss(W, fake_quantize_rows(weight_source(c, b, W), p), hbar);
    all.push_back(o);
    points.emplace_back(double(o.size_bits), o.local_loss);
  }
  if (low_rank_allowed) {
    c.factors = weighted_svd(W, s.weighted_svd ? H : at::Tensor());
    for (int b : s.factor_bits) {
      c.a_params[b] = search_row_ranges(c.factors.A, b, RangeError::Product, H, W, c.factors.B);
      c.b_params[b] = search_row_ranges(c.factors.B, b, RangeError::Plain);
    }
    if (compensate) {
      // B̃ sees the layer's input; Ã sees B̃'s output z = B̃x, whose moment is B̃ H B̃ᵀ. Ã is swept in rank order
      // (no activation order), so column j only absorbs the errors of columns before it and a rank-r prefix is
      // the same for every r.
      GptqSettings rank_order = s.gptq;
      rank_order.act_order = false;
      for (int bb : s.factor_bits) {
        c.b_values[bb] = compensated_values(c.factors.B, c.b_params[bb], Hx, fx, s.gptq);
        const at::Tensor Bt = fake_quantize_rows(c.b_values[bb], c.b_params[bb]).to(at::kDouble);
        const at::Tensor Hz = at::mm(at::mm(Bt, Hx), Bt.t());
        const GptqFactor fz = gptq_factorize(Hz, rank_order);
        for (int ba : s.factor_bits)
          c.a_values[{ba, bb}] = compensated_values(c.factors.A, c.a_params[ba], Hz, fz, rank_order);
      }
    }
    for (int ba : s.factor_bits) {
      for (int bb : s.factor_bits) {
        const at::Tensor Aq = fake_quantize_rows(factor_a_source(c, ba, bb), c.a_params[ba]);
        const at::Tensor Bq = fake_quantize_rows(factor_b_source(c, bb), c.b_params[bb]);
        const at::Tensor losses = low_rank_local_losses(W, Aq, Bq, hbar);
        auto acc = losses.accessor<double, 1>();
        for (int64_t r = 1; r <= k; ++r) {
          const int64_t correct = r * (m * ba + n * bb);
          const int64_t filter = s.swapped_lr_size ? r * (n * ba + m * bb) : correct;
          if (filter >= int64_t(max_bits) * m * n) break;  // only factorizations smaller than the 8-bit layer
          LayerOption o;
          o.kind = OptionKind::LowRank;
          o.bits_a = ba;
          o.bits_b = bb;
          o.rank = r;
          o.size_bits = correct;
          o.bytes = correct / 8;
          o.local_loss = acc[r - 1];
          all.push_back(o);
          points.emplace_back(double(filter), o.local_loss);
        }
      }
    }
  }
  c.candidates_considered = static_cast<int64_t>(all.size());
  for (size_t i : pareto_front(points)) {
    if (all[i].kind == OptionKind::LowRank && all[i].rank <= 1) continue;
    c.options.push_back(all[i]);
  }
  for (size_t i = 0; i < s.bits.size(); ++i) {  // every Q(b) stays an option, dominated or not
    const bool present = std::any_of(c.options.begin(), c.options.end(), [&](const LayerOption& o) {
      return o.kind == OptionKind::Quant && o.bits == all[i].bits;
    });
    if (!present) c.options.push_back(all[i]);
  }
  return c;
}

at::Tensor compressed_weight(const LayerCandidates& c, const LayerOption& o, const at::Tensor& W) {
  if (o.kind == OptionKind::Quant) {
    auto it = c.weight_params.find(o.bits);
    if (it == c.weight_params.end()) throw Error(c.layer + ": no quantizer for " + o.label());
    return fake_quantize_rows(weight_source(c, o.bits, W), it->second);
  }
  // Contiguous factors: the export decodes to exactly these [m, r] and [r, n] matrices, and the same product
  // must follow bit for bit.
  const at::Tensor Aq = fake_quantize_rows(factor_a_source(c, o.bits_a, o.bits_b), c.a_params.at(o.bits_a))
                            .slice(1, 0, o.rank)
                            .contiguous();
  const at::Tensor Bq =
      fake_quantize_rows(factor_b_source(c, o.bits_b), c.b_params.at(o.bits_b)).slice(0, 0, o.rank).contiguous();
  return at::mm(Aq, Bq);
}

}  // namespace lorq
