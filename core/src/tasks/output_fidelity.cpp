#include "lorq/tasks/output_fidelity.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/util/StringUtil.h>

#include "lorq/common/error.h"

namespace lorq {

OutputFidelity output_fidelity(const at::Tensor& float_logits, const at::Tensor& logits) {
  if (float_logits.dim() != 2 || float_logits.size(0) < 1 || !float_logits.sizes().equals(logits.sizes()))
    throw Error("output fidelity: logits of shapes " + c10::str(float_logits.sizes()) + " and " +
                c10::str(logits.sizes()) + " (expected the same [images, classes])");
  c10::NoGradGuard no_grad;
  // Double: the sums run over every logit of hundreds of images.
  const at::Tensor r = float_logits.to(at::kDouble), y = logits.to(at::kDouble);
  OutputFidelity f;
  f.images = r.size(0);
  f.agreement_pct = 100.0 * r.argmax(1).eq(y.argmax(1)).sum().item<int64_t>() / static_cast<double>(f.images);
  const double signal = r.pow(2).sum().item<double>();
  f.output_nsr = signal > 0 ? (y - r).pow(2).sum().item<double>() / signal : 0.0;
  const at::Tensor lr = at::log_softmax(r, 1), ly = at::log_softmax(y, 1);
  f.kl = (lr.exp() * (lr - ly)).sum(1).mean().item<double>();
  return f;
}

}  // namespace lorq
