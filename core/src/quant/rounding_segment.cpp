// Joint rounding of one segment's layers (RoundingScope::Segment): the layers' soft weights go into the model
// through its linear overrides, the segment runs forward and backward on a few images per step, and the loss is the
// segment output's error against the float network's.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/quant/adaptive_rounding.h"
#include "lorq/quant/radam.h"
#include "rounding_variable.h"

namespace lorq {
namespace rounding {

namespace {

// Removes the overrides it set, whatever happens.
class SegmentOverrides {
 public:
  explicit SegmentOverrides(Model& m) : model_(m) {}
  ~SegmentOverrides() {
    for (const auto& l : names_) model_.clear_linear_override(l);
  }
  void set(const std::string& layer, Model::LinearFn fn) {
    model_.set_linear_override(layer, std::move(fn));
    names_.push_back(layer);
  }

 private:
  Model& model_;
  std::vector<std::string> names_;
};

// (1 − share)·mean((y − t)²) + share·mean over the readout rows, summed over the output's floating-point tensors.
at::Tensor output_loss(const StageState& y, const StageState& t, const std::vector<int64_t>& readout, double share) {
  if (y.size() != t.size()) throw Error("segment rounding: the segment's output does not match its target");
  at::Tensor loss;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!at::isFloatingType(y[i].scalar_type())) continue;  // sizes or indices, not the weights' doing
    at::Tensor l = at::mse_loss(y[i], t[i]);
    if (share > 0 && !readout.empty() && y[i].dim() == 3) {
      const at::Tensor r = at::tensor(readout, at::kLong);
      l = (1 - share) * l + share * at::mse_loss(y[i].index_select(1, r), t[i].index_select(1, r));
    }
    loss = loss.defined() ? loss + l : l;
  }
  if (!loss.defined()) throw Error("segment rounding: the segment has no floating-point output to reconstruct");
  return loss;
}

StageState select_images(const StageState& s, const at::Tensor& index) {
  StageState out;
  for (const at::Tensor& t : s) out.push_back(t.index_select(0, index));
  return out;
}

double loss_share(const SegmentRoundingData& d, const RoundingSettings& s) {
  return d.readout.empty() ? 0.0 : s.readout_share;
}

}  // namespace

double segment_loss(Model& model, const SegmentFn& run, const std::vector<CompressedLayer*>& layers,
                    const SegmentRoundingData& data, const RoundingSettings& s) {
  c10::NoGradGuard no_grad;
  SegmentOverrides overrides(model);
  for (CompressedLayer* l : layers) {
    const at::Tensor W = l->dequantized_weight();
    overrides.set(l->layer, [W](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) {
      return parallel_linear(x, W, b);
    });
  }
  const int64_t N = data.input.at(0).size(0);
  double sum = 0;
  for (int64_t n0 = 0; n0 < N; n0 += s.batch) {
    const int64_t n1 = std::min<int64_t>(N, n0 + s.batch);
    const StageState y = run(slice_batch(data.input, n0, n1));
    sum += output_loss(y, slice_batch(data.target, n0, n1), data.readout, loss_share(data, s)).item<double>() *
           static_cast<double>(n1 - n0);
  }
  return N > 0 ? sum / static_cast<double>(N) : 0.0;
}

std::vector<LayerRoundingResult> learn_segment(Model& model, const SegmentFn& run,
                                               const std::vector<CompressedLayer*>& layers,
                                               const SegmentRoundingData& data, const RoundingSettings& s,
                                               const JobControl& job,
                                               const std::function<void(int, double, double, double)>& on_step) {
  const auto start = std::chrono::steady_clock::now();
  if (layers.empty()) return {};
  if (s.iterations < 0 || s.block_images_per_step < 1 || s.record_every < 1 || s.batch < 1)
    throw Error("rounding: iterations must be >= 0, block_images_per_step, batch and record_every >= 1");
  if (s.readout_share < 0 || s.readout_share > 1) throw Error("rounding: readout_share must be in [0, 1]");
  if (data.input.empty() || data.target.empty() || data.input.at(0).size(0) == 0 ||
      data.input.at(0).size(0) != data.target.at(0).size(0))
    throw Error("segment rounding: the input and target must hold the same images");
  const double share = loss_share(data, s);

  // Per layer: its quantized tensors, their rounding variables, and the soft weights of the current step.
  struct Learned {
    CompressedLayer* layer;
    std::vector<QuantizedTensor*> tensors;
    std::vector<RoundingVariable> vars;
    std::vector<at::Tensor> soft;
  };
  std::vector<Learned> learned;
  std::vector<at::Tensor> params;
  for (CompressedLayer* l : layers) {
    Learned e{l, tensors_of(*l), {}, {}};
    for (const QuantizedTensor* q : e.tensors) {
      e.vars.emplace_back(*q);
      params.push_back(e.vars.back().alpha);
    }
    learned.push_back(std::move(e));
  }
  std::vector<LayerRoundingResult> results(layers.size());
  const double nearest = segment_loss(model, run, layers, data, s);

  RAdam optimizer(params, {s.lr, 0.9, 0.999, 1e-8});
  std::string names;
  for (const CompressedLayer* l : layers) names += l->layer + ";";
  const uint64_t name_hash = std::stoull(fnv1a64_hex(names.data(), names.size()), nullptr, 16);
  at::Generator gen = at::detail::createCPUGenerator(s.seed ^ name_hash);
  const int64_t N = data.input.at(0).size(0), per_step = std::min<int64_t>(N, s.block_images_per_step);
  std::vector<float> rec_curve, reg_curve;
  int iterations = 0;
  {
    SegmentOverrides overrides(model);
    for (Learned& e : learned) {
      const bool low_rank = e.layer->form == LayerForm::LowRank;
      const std::vector<at::Tensor>* soft = &e.soft;
      overrides.set(e.layer->layer, [soft, low_rank](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) {
        return low_rank ? at::linear(at::linear(x, (*soft)[1]), (*soft)[0], b) : at::linear(x, (*soft)[0], b);
      });
    }
    BlasThreadsScope blas_threads;  // autograd GEMMs: give OpenBLAS the threads (see parallel_ops.h)
    c10::AutoGradMode grad_on(true);
    for (int it = 0; it < s.iterations; ++it) {
      job.check();
      const at::Tensor index = per_step == N ? at::arange(N) : at::randperm(N, gen).slice(0, 0, per_step);
      const double beta = beta_at(it, s.iterations, s);
      at::Tensor reg = at::zeros({});
      for (Learned& e : learned) {
        e.soft.clear();
        for (const RoundingVariable& v : e.vars) {
          const at::Tensor h = rectified_sigmoid(v.alpha);
          e.soft.push_back(v.soft(h));
          reg = reg + (1 - (2 * h - 1).abs().pow(beta)).mean();
        }
      }
      reg = reg * s.reg_factor;
      const at::Tensor rec =
          output_loss(run(select_images(data.input, index)), select_images(data.target, index), data.readout, share);
      const at::Tensor loss = rec + reg;
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      const double rec_v = rec.item<double>(), reg_v = reg.item<double>();
      iterations = it + 1;
      if (it % s.record_every == 0) {
        rec_curve.push_back(static_cast<float>(rec_v));
        reg_curve.push_back(static_cast<float>(reg_v));
      }
      if (on_step) on_step(it, rec_v, reg_v, beta);
      if (rec_v + reg_v < s.early_stop_loss) break;
    }
    for (Learned& e : learned) e.soft.clear();
  }

  // Hard rounding for every layer; all of them keep nearest if the segment reconstructs worse (and the guard holds).
  c10::NoGradGuard no_grad;
  std::vector<HardRounding> hard;
  for (const Learned& e : learned) hard.push_back(take_hard_codes(e.tensors, e.vars));
  const double learned_loss = segment_loss(model, run, layers, data, s);
  const bool keep = s.keep_nearest_if_worse && learned_loss > nearest;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t k = 0; k < learned.size(); ++k) {
    LayerRoundingResult& r = results[k];
    r.layer = learned[k].layer->layer;
    r.iterations = iterations;
    r.group = static_cast<int>(learned.size());
    r.nearest_error = nearest;
    r.learned_error = learned_loss;
    r.flipped_fraction = hard[k].flipped_fraction();
    r.kept_nearest = keep;
    r.seconds = seconds;
    r.reconstruction = rec_curve;
    r.regularizer = reg_curve;
    if (keep)
      hard[k].restore(learned[k].tensors);
    else
      learned[k].layer->rounding_learned = true;
  }
  return results;
}

}  // namespace rounding
}  // namespace lorq
