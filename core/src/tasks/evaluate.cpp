#include "lorq/tasks/evaluate.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq {

void init_threads() { configure_threads(); }

EvalResult evaluate(Model& model, const ImageSet& set, const EvalOptions& options, const JobControl& job) {
  c10::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  const size_t total = options.limit > 0 ? std::min<size_t>(options.limit, set.size()) : set.size();
  const size_t batch = static_cast<size_t>(std::max(1, options.batch));
  const Preprocessing& pp = model.config().preprocessing;
  EvalResult r;
  std::vector<at::Tensor> logits;

  auto load = [&](size_t begin) {
    return load_batch(set, begin, std::min(begin + batch, total), pp, options.decode_threads);
  };
  // Decode the next batch while the model runs on this one.
  std::future<ImageBatch> next = std::async(std::launch::async, load, 0);
  for (size_t begin = 0; begin < total; begin += batch) {
    job.check();
    ImageBatch b = next.get();
    if (begin + batch < total) next = std::async(std::launch::async, load, begin + batch);
    r.failed.insert(r.failed.end(), b.failed.begin(), b.failed.end());
    if (b.images.size(0) > 0) {
      at::Tensor out = model.forward(b.images);
      const int64_t k = std::min<int64_t>(5, out.size(1));
      at::Tensor top = std::get<1>(out.topk(k, 1));
      auto acc = top.accessor<int64_t, 2>();
      for (int64_t i = 0; i < out.size(0); ++i) {
        const int label = b.labels[i];
        if (label < 0) continue;
        ++r.labeled;
        if (acc[i][0] == label) ++r.top1;
        for (int64_t j = 0; j < k; ++j)
          if (acc[i][j] == label) {
            ++r.top5;
            break;
          }
      }
      r.images += out.size(0);
      if (options.keep_logits) {
        logits.push_back(out);
        r.indices.insert(r.indices.end(), b.indices.begin(), b.indices.end());
      }
    }
    Progress p;
    p.stage = "eval";
    p.done = static_cast<int64_t>(std::min(begin + batch, total));
    p.total = static_cast<int64_t>(total);
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r.labeled) p.detail = "top-1 " + std::to_string(r.top1_pct()).substr(0, 5) + "%";
    job.report(p);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (r.images == 0) throw Error(set.source, "none of the " + std::to_string(total) + " images could be decoded");
  if (options.keep_logits) r.logits = at::cat(logits);
  return r;
}

std::vector<Prediction> top_k(const at::Tensor& logits_row, int k, const ModelConfig& config) {
  at::Tensor probs = at::softmax(logits_row.reshape({-1}).to(at::kFloat), 0);
  k = std::min<int>(k, static_cast<int>(probs.size(0)));
  auto [values, idx] = probs.topk(k);
  std::vector<Prediction> out;
  for (int i = 0; i < k; ++i) {
    const int c = static_cast<int>(idx[i].item<int64_t>());
    out.push_back({c, values[i].item<float>(), config.label(c)});
  }
  return out;
}

}  // namespace lorq
