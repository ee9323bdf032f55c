#pragma once
// How closely a compressed classifier follows its float model on the same images, beside the task's metric. Top-1
// against the labels moves by whole images (one of 372 is 0.27 points), and which images flip is largely chance; the
// float model's own top-1 class, its logits and its softmax are denser targets, and the output NSR is the quantity
// the allocation predicted (spec §6.1's global error, here measured on held-out images for the whole model).
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lorq {

struct OutputFidelity {
  int64_t images = 0;
  double agreement_pct = 0;  // images whose top-1 class is the float model's top-1 class
  double output_nsr = 0;     // Σ (y − y_float)² / Σ y_float² over every logit of every image
  double kl = 0;             // mean over images of KL(softmax(y_float) ‖ softmax(y)), in nats
};

// `float_logits` and `logits`: [N, classes], row i of both from the same image. Throws lorq::Error on shapes that
// differ or are not [N, classes] with N ≥ 1.
OutputFidelity output_fidelity(const at::Tensor& float_logits, const at::Tensor& logits);

}  // namespace lorq
