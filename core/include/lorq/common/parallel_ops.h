#pragma once
// Matrix products split across LibTorch's intra-op (OpenMP) threads, each thread calling single-threaded BLAS.
//
// Why: on this class of machine (2 vCPUs) OpenBLAS's own thread pool and LibTorch's OpenMP pool fight for the
// cores — each spins while the other works — which made DeiT-Tiny's forward pass 2-3x slower than one thread.
// init_threads() therefore pins OpenBLAS to one thread and these functions give GEMMs their parallelism through
// the OpenMP pool, so only one pool ever runs. Without autograd only: with a graph being recorded they fall back
// to the ordinary (differentiable) ops.
#include <ATen/core/Tensor.h>

namespace lorq {

// y = x w^T + b for x [..., in], w [out, in], b [out] or undefined.
at::Tensor parallel_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);
// Batched a @ b over the leading dimension(s): a [B, ..., n, k], b [B, ..., k, m].
at::Tensor parallel_matmul(const at::Tensor& a, const at::Tensor& b);

// Sets LibTorch's intra-op threads to the core count (it defaults to one here) unless OMP_NUM_THREADS is set,
// and pins OpenBLAS to one thread (see above). Returns the number of threads in use.
int configure_threads();

// While alive, runs GEMMs on OpenBLAS's own threads and LibTorch's ops on one thread: the better split for
// autograd (training), whose differentiable GEMMs cannot use parallel_linear. Restores the engine's split after.
class BlasThreadsScope {
 public:
  BlasThreadsScope();
  ~BlasThreadsScope();
  BlasThreadsScope(const BlasThreadsScope&) = delete;
  BlasThreadsScope& operator=(const BlasThreadsScope&) = delete;

 private:
  int torch_threads_;
};

}  // namespace lorq
