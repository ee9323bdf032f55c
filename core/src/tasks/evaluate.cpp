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
#include "lorq/tasks/task.h"

namespace lorq {

void init_threads() { configure_threads(); }

double EvalResult::metric(const std::string& name) const {
  for (const MetricValue& m : metrics)
    if (m.name == name) return m.value;
  return 0.0;
}

EvalResult evaluate(Model& model, const ImageSet& set, const EvalOptions& options, const JobControl& job) {
  c10::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  const size_t total = options.limit > 0 ? std::min<size_t>(options.limit, set.size()) : set.size();
  const Preprocessing& pp = model.preprocessing();
  // Images of different input sizes run one at a time: a padded batch would change the outputs (the encoder attends
  // to the padding), and a result must not depend on which images shared a batch.
  const size_t batch = pp.variable_size() ? 1 : static_cast<size_t>(std::max(1, options.batch));
  const std::unique_ptr<MetricAccumulator> metric = task_of(model).new_metric();
  EvalResult r;
  std::vector<ModelOutputs> kept;

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
      ModelOutputs out = model.forward(b.images);
      metric->add(out, set, b);
      r.images += b.images.size(0);
      if (options.keep_outputs) {
        kept.push_back(std::move(out));
        r.indices.insert(r.indices.end(), b.indices.begin(), b.indices.end());
        r.geometry.insert(r.geometry.end(), b.geometry.begin(), b.geometry.end());
        for (size_t i = 0; i < b.indices.size(); ++i) r.input_sizes.push_back({b.images.size(2), b.images.size(3)});
      }
    }
    r.labeled = metric->labeled();
    Progress p;
    p.stage = "eval";
    p.done = static_cast<int64_t>(std::min(begin + batch, total));
    p.total = static_cast<int64_t>(total);
    p.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::vector<MetricValue> v = metric->values();
    if (!v.empty()) p.detail = v[0].name + " " + std::to_string(v[0].value).substr(0, 5) + (v[0].percent ? "%" : "");
    job.report(p);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (r.images == 0) throw Error(set.source, "none of the " + std::to_string(total) + " images could be decoded");
  r.metrics = metric->values();
  if (options.keep_outputs) r.outputs = ModelOutputs::cat(kept);
  return r;
}

}  // namespace lorq
