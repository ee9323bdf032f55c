#pragma once
// `lorq compress --baseline`: the uniform per-row baseline, MLoRQ with nearest rounding and MLoRQ with error
// compensation (GPTQ) side by side at the same budget (app/cmd_baseline.cpp).
#include <cstdint>
#include <string>

#include "lorq/common/progress.h"
#include "lorq/session/api.h"

namespace lorq::cli {

struct BaselineRequest {
  std::string model, calib, calib_labels, cache, eval, eval_labels, constraints_json, constraints_source;
  api::AnalysisSettings analysis;  // the run's settings; analysis.quantizer is the session already analysed
  api::FinalSettings final;        // applied to both MLoRQ rows
  int64_t budget = 0, limit = 0;
  // Already measured on request.eval by the caller (not measured again): the float model and `allocation`.
  const api::EvalSummary* float_eval = nullptr;
  const api::EvalSummary* compressed_eval = nullptr;
};

// `session` (analysed with request.analysis, finalized for `allocation`) gives one quantizer's rows; the other
// quantizer is analysed in a second session on the same images and settings (through the same cache folder, where
// each quantizer has its own key), allocated at the same budget under the same constraints and finalized alike.
// Prints one table: method, weight bytes, average bits, predicted error and, with request.eval, the task's first
// metric of the float and of each compressed model on the same held-out images.
void print_baseline(api::CompressionSession& session, const Allocation& allocation, const BaselineRequest& request,
                    const JobControl& job);

}  // namespace lorq::cli
