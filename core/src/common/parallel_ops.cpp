#include "lorq/common/parallel_ops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <dlfcn.h>

#include <cstdlib>
#include <thread>

namespace lorq {

namespace {
bool needs_autograd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c = {}) {
  return c10::GradMode::is_enabled() &&
         (a.requires_grad() || b.requires_grad() || (c.defined() && c.requires_grad()));
}
}  // namespace

at::Tensor parallel_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (needs_autograd(x, w, b) || x.scalar_type() != at::kFloat || at::get_num_threads() == 1)
    return at::linear(x, w, b);
  at::Tensor x2 = x.reshape({-1, x.size(-1)});
  const int64_t M = x2.size(0), N = w.size(0);
  at::Tensor out = at::empty({M, N}, x.options());
  const at::Tensor wt = w.t();
  const int64_t chunks = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(1, M / 16));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t lo = M * c / chunks, hi = M * (c + 1) / chunks;
      at::Tensor o = out.slice(0, lo, hi);
      if (b.defined()) {
        at::addmm_out(o, b, x2.slice(0, lo, hi), wt);
      } else {
        at::mm_out(o, x2.slice(0, lo, hi), wt);
      }
    }
  });
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = N;
  return out.view(shape);
}

at::Tensor parallel_matmul(const at::Tensor& a, const at::Tensor& b) {
  if (needs_autograd(a, b) || a.dim() < 3 || a.scalar_type() != at::kFloat || at::get_num_threads() == 1)
    return at::matmul(a, b);
  std::vector<int64_t> shape = a.sizes().vec();
  shape.back() = b.size(-1);
  at::Tensor out = at::empty(shape, a.options());
  at::parallel_for(0, a.size(0), 1, [&](int64_t i0, int64_t i1) {
    at::Tensor o = out.slice(0, i0, i1);
    at::matmul_out(o, a.slice(0, i0, i1), b.slice(0, i0, i1));
  });
  return out;
}

namespace {
// OpenBLAS is whatever libblas.so.3 resolves to; look the setter up instead of linking it.
void set_blas_threads(int n) {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(n);
}
}  // namespace

BlasThreadsScope::BlasThreadsScope() : torch_threads_(at::get_num_threads()) {
  set_blas_threads(torch_threads_);
  at::set_num_threads(1);
}

BlasThreadsScope::~BlasThreadsScope() {
  set_blas_threads(1);
  at::set_num_threads(torch_threads_);
}

int configure_threads() {
  set_blas_threads(1);
  if (!std::getenv("OMP_NUM_THREADS")) {
    const unsigned n = std::thread::hardware_concurrency();
    if (n > 0) at::set_num_threads(static_cast<int>(n));
  }
  return at::get_num_threads();
}

}  // namespace lorq
