#pragma once
// Label-free Hessian (LFH, spec §4.4): per weight, the diagonal of JᵀJ with J = ∂outputs/∂W, estimated with
// Hutchinson-style random projections v ~ N(0, I) of the outputs: E[(Jᵀv)²] = diag(JᵀJ). No labels needed.
//
// Instead of one backward pass per projection, all projections of one image run as one batch: the image is
// replicated P times, the batch's logits are back-propagated with the P projections at once, and every layer's
// per-projection weight gradient is formed from its output gradient and its (shared) input,
// g_p = dY_pᵀ X. That is P times fewer backward launches for the same estimator.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/models/model.h"

namespace lorq {

struct LfhOptions {
  int projections = 32;  // random projections per image (the spec's 100 works too)
  // The spec's as-coded estimator: gradients are never reset between projections and images, so each squared
  // "gradient" is a running sum of all earlier ones (kept for parity). Default: the clean per-draw estimator.
  bool as_coded_accumulation = false;
  uint64_t seed = 0;
  // Projections back-propagated together (the image replicated this many times). Peak memory grows linearly with
  // it (DeiT-Tiny: 2.9 GB at 32); the stage lowers it to what memory_budget_bytes holds (label_free_hessian says
  // how). The estimate does not depend on it.
  int projection_batch = 32;
  int64_t memory_budget_bytes = 0;  // for the replicated copies; 0: half the memory available when the stage starts
};

// The LFH of every compressible layer, [out, in] float32, averaged over the images ([K, C, H, W]) and
// projections. Layers that cannot be low-rank (convolutions) get H ≡ 1, as in the spec. Progress counts images.
std::map<std::string, at::Tensor> label_free_hessian(Model& model, const at::Tensor& images, const LfhOptions& options,
                                                     const JobControl& job = {});

// The random projections are shaped like the task's error outputs (tasks/task.h): one value per output value of
// one image ([classes] for a classifier). With several outputs, output o's projections are scaled by
// c_o = sqrt(w_o·E_0 / E_o), E_o = values per image · mean(y_o²) on the LFH images, so that the LFH of the first
// output's units sums the outputs' normalised, weighted contributions (c_0 = 1; a classifier is unchanged).
struct ProjectionShape {
  std::vector<int64_t> shape;  // one image's output shape
  double scale = 1.0;          // c_o
};
std::vector<ProjectionShape> lfh_projection_shapes(Model& model, const at::Tensor& images);

// One image's per-projection squared gradients summed over the given projections V (one tensor per error output,
// [P, output shape...]): Σ_p (Jᵀ v_p)² per layer. When `running` is given (as-coded mode), each g_p is added to it
// first and the square is taken of the running sum; `running` is updated. Exposed for tests.
std::map<std::string, at::Tensor> lfh_squared_gradients(Model& model, const at::Tensor& image,
                                                        const std::vector<at::Tensor>& V,
                                                        std::map<std::string, at::Tensor>* running = nullptr);

}  // namespace lorq
