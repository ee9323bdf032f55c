#pragma once
// The session cache: the expensive artifacts of the weight pipeline (label-free Hessians, per-layer candidates with
// their quantizers and factors, global errors) saved in a folder, keyed by the model's checksum, the calibration
// image list and every setting. Re-allocating for a new budget or reopening a session then takes milliseconds.
//
// Each stage's artifact is written only when the stage completes (to a temporary name, then renamed), so a
// cancelled run leaves the completed stages in place and the next run resumes after them. A file whose key does not
// match (stale) or that cannot be read (corrupted) is ignored, with a note in the warnings.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/pipeline/compress.h"

namespace lorq {

class SessionCache {
 public:
  // dir is created when missing. The key covers the model file's checksum, the image set and the settings.
  SessionCache(std::string dir, const std::string& model_path, const ImageSet& images, const CompressSettings& s);

  const std::string& key() const { return key_; }
  const std::string& dir() const { return dir_; }

  bool load_lfh(std::map<std::string, at::Tensor>* lfh, std::vector<std::string>* warnings) const;
  void save_lfh(const std::map<std::string, at::Tensor>& lfh) const;
  // `with_errors`: the complete analysis (global errors included) rather than the candidates alone. Each layer
  // records whether its errors were measured or estimated (LayerCandidates::errors_measured).
  bool load_analysis(bool with_errors, CompressionAnalysis* analysis, std::vector<std::string>* warnings) const;
  void save_analysis(const CompressionAnalysis& analysis, bool with_errors) const;

 private:
  std::string path(const std::string& artifact) const;
  std::string dir_, key_;
  std::string lfh_key_;    // the sensitivity's own key (fewer settings than key_)
  bool estimate_ = false;  // the settings' global_error.estimate (what a cache without per-layer flags held)
};

// The pipeline with a cache: every stage already in the cache is loaded instead of computed.
CompressionAnalysis analyze_model_cached(Model& model, const std::string& model_path, const ImageSet& images,
                                         const CompressSettings& settings, const std::string& cache_dir,
                                         const JobControl& job = {}, const AnalysisRevisionFn& on_revision = {});

}  // namespace lorq
