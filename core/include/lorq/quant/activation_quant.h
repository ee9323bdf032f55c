#pragma once
// Activation quantization (spec §8): static fake quantizers on the model's activation points (model.h), their
// range calibration (§8.3), activation mixed precision (§8.4), LayerNorm reparameterization (§8.5) and the
// ridge-regression weight correction (§8.6), plus quantize_activations(), which runs them in the spec's order.
//
// In the pipeline (§1 steps 8–14), after the ILP has chosen the layers' options:
//   fresh float model -> aq = quantize_activations(model, calib_images, settings, job)   // steps 8–10
//   disable_activation_quantization(model) -> LFH, final per-layer compression, rounding  // steps 11–13
//   enable_activation_quantization(model, aq) -> evaluate                                // step 14
// The LN-folded, ridge-corrected weights are the ones the later steps compress.
//
// Numerics follow the reference: float32 quantizers with round-half-to-even; quantiles by the numpy rule
// (row_quantiles, no full sort); the ridge solve in float64 (Cholesky) instead of the reference's fp32 inverse.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/models/model.h"
#include "lorq/common/progress.h"

namespace lorq {

enum class ActQuantizerType {
  PerTensor,   // uniform, one (Δ, z) for every entry
  PerChannel,  // uniform, one (Δ_c, z_c) per channel of the last dimension
  LogSqrt2,    // log√2 of softmax outputs: Δ·2^(−p/2), p = round(−2·log2(x/Δ)), 0 when p ≥ 2^b
};

// A static activation quantizer. Uniform: Δ·(clip(round_half_even(x/Δ) + z, 0, 2^b−1) − z) (§4.1) with float32
// Δ > 0 and z (integer-valued after calibration, a float mean after LN folding). LogSqrt2 uses scale only.
struct ActivationQuantizer {
  ActQuantizerType type = ActQuantizerType::PerTensor;
  int bits = 8;
  at::Tensor scale;       // float32 [1] (PerTensor, LogSqrt2) or [C] (PerChannel); undefined until calibrated
  at::Tensor zero_point;  // float32, the shape of scale; undefined for LogSqrt2

  bool calibrated() const { return scale.defined(); }
  // The fake-quantized x (float32, x's shape). Throws lorq::Error when not calibrated or the channels differ.
  at::Tensor operator()(const at::Tensor& x) const;
};

// Uniform fake quantization; scale and zero_point are [1] or [C] with C = x.size(-1). bits in 1..8.
at::Tensor fake_quantize_uniform(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int bits);
// log√2 fake quantization (§8.2) with scale Δ ([1]): output Δ·2^(−⌈p/2⌉)·(√2 if p odd) with p clamped to
// [0, 2^b−1]; 0 where p ≥ 2^b, which includes x = 0; x > Δ gives Δ. Inputs ≤ 0 (never a softmax output) give 0.
at::Tensor fake_quantize_log_sqrt2(const at::Tensor& x, const at::Tensor& scale, int bits);

// The activation percentile set P_A of §8.3: {0.999, 0.9999, 0.99999}.
const std::vector<double>& activation_percentiles();

// Fits q's parameters to x (§8.3), keeping q.type and q.bits. For each p in order, the candidate with the strictly
// smallest MSE over its entries wins (initial best 1e10; ties keep the earlier p):
//   PerTensor:  [quantile(x, 1−p), quantile(x, p)] over all entries;
//   PerChannel: the same per channel of the last dimension, each channel choosing its own p;
//   LogSqrt2:   Δ = quantile(x, p), incumbent Δ = max(x).
// Throws lorq::Error on an empty or non-finite x.
void calibrate_activation_quantizer(ActivationQuantizer& q, const at::Tensor& x,
                                    const std::vector<double>& percentiles = activation_percentiles());

// §8.4: b_t = max{b ∈ {2,3,4,6,8} : s_t·b ≤ S_max·bits} for per-sample element counts s_t (by point name).
std::map<std::string, int> activation_mixed_precision(const std::map<std::string, int64_t>& per_sample_elements,
                                                      int bits);

// §8.5: folds the per-channel quantizer of a LayerNormOutput point into the LayerNorm's affine and its consumer's
// weight columns and bias (creating the bias when missing), so that the function is unchanged with quantization
// off. Returns the per-tensor quantizer (mean Δ, mean z, not rounded) that replaces the per-channel one.
ActivationQuantizer fold_layernorm_quantizer(Model& model, const ActivationPoint& point,
                                             const ActivationQuantizer& per_channel);

// §8.6, one layer: the ridge solution β = (X̃ᵀX̃ + λI)⁻¹ X̃ᵀ(Y_fp − X̃W̃ᵀ) with X̃ = [X_q, 1], W̃ = [W, b] (no ones
// column and no bias without a bias), Y_fp = X_fp Wᵀ + b; returns W + β_{1..n}ᵀ and b + β_{n+1}. x_fp and x_q are
// [..., n] (rows: every leading index), w [m, n], b [m] or undefined. Solved in float64 by Cholesky; returns
// float32. Throws lorq::Error on mismatched shapes or λ ≤ 0.
struct CorrectedLinear {
  at::Tensor weight;  // [m, n]
  at::Tensor bias;    // [m], undefined when b was
};
CorrectedLinear ridge_regression_correction(const at::Tensor& x_fp, const at::Tensor& x_q, const at::Tensor& w,
                                            const at::Tensor& b, double lambda);

struct ActQuantSettings {
  bool enabled = false;           // the product's switch (activation quantization is off by default in LoRQ Workbench);
                                  // quantize_activations() itself ignores it
  int bits = 8;                   // --activation_n_bits: every quantizer's bit-width (2..8), unless mixed_precision
  bool mixed_precision = false;   // §8.4: closed-form per-tensor bits under the peak-tensor memory of `bits`
  bool log_sqrt2_softmax = true;  // softmax outputs get log√2 (else per-tensor uniform)
  bool fold_layernorm = true;     // §8.5 for per-channel (< 8-bit) LN-output quantizers; off keeps them per-channel
  bool ridge_regression = true;   // §8.6
  int num_images = 32;            // the first images of the calibration set, one forward pass each for ranges and ridge
  double ridge_lambda = 2000;     // λ for token (3-D) layer inputs (ERQ's 0.1·20000)
  double ridge_lambda_head = 0.1;  // λ for 2-D layer inputs (the classifier head)
  std::vector<double> percentiles = activation_percentiles();
};

// What quantize_activations() did; the quantizers stay installed on the model.
struct ActivationQuantization {
  std::map<std::string, ActivationQuantizer> quantizers;  // by activation point name; every point of the model
  std::vector<std::string> folded_norms;                  // LayerNorms reparameterized (§8.5), network order
  std::vector<std::string> corrected_layers;              // linear layers ridge-corrected (§8.6), network order
  double seconds = 0;
};

// Steps 8–10 of the pipeline on a float model (no linear overrides): bits (uniform or §8.4), range calibration
// on the first num_images of calib_images [N, C, H, W] (preprocessed) in one sequential pass with the
// quantizers enabled (§8.3; 8-bit LN outputs per-tensor), LN folding (§8.5), ridge regression with quantization
// off (§8.6). Changes LN affines, weights and biases in place and leaves the quantizers installed (enabled).
// Reports progress ("activation quantization") and stops at job.check() (throws Cancelled; the model is then
// partly modified and has no hooks).
ActivationQuantization quantize_activations(Model& model, const at::Tensor& calib_images, const ActQuantSettings& s,
                                            const JobControl& job = {});

// Installs the quantizers as the model's activation hooks (replacing any), or removes every activation hook.
// The rounding stage (§10) runs with activation quantization off; evaluation with it on.
void enable_activation_quantization(Model& model, const ActivationQuantization& aq);
void disable_activation_quantization(Model& model);

}  // namespace lorq
