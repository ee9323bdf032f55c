#include "lorq/session/image_check.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/io/images.h"

namespace lorq::api {

std::string CalibrationCheck::warning() const {
  if (ok()) return "";
  std::string s = "only " + std::to_string(usable) + " of the " + std::to_string(requested) +
                  " requested calibration images are usable (the folder holds " + std::to_string(available);
  if (!undecodable.empty()) {
    s += "; " + std::to_string(undecodable.size()) + " cannot be decoded: ";
    for (size_t i = 0; i < undecodable.size() && i < 5; ++i)
      s += (i ? ", " : "") +
           std::filesystem::path(undecodable[i].substr(0, undecodable[i].find(": "))).filename().string();
    if (undecodable.size() > 5) s += ", … " + std::to_string(undecodable.size() - 5) + " more";
  }
  return s + ")";
}

CalibrationCheck check_calibration_images(const CompressionSession& session, const JobControl& job) {
  CalibrationCheck c;
  const std::vector<std::string>& files = session.calibration_set().files;
  c.requested = session.settings().calibration_images;
  c.available = static_cast<int64_t>(files.size());
  if (files.empty()) return c;
  // The same seeded permutation as calibrate() (lorq/pipeline/calibration.cpp); a test checks that the files this
  // check finds usable are the analysis' calibration files.
  at::Generator gen = at::detail::createCPUGenerator(session.settings().seed);
  const at::Tensor perm = at::randperm(static_cast<int64_t>(files.size()), gen, at::kLong);
  const int64_t* order = perm.data_ptr<int64_t>();
  for (int64_t i = 0; i < perm.size(0) && c.usable < c.requested; ++i) {
    job.check();
    const std::string& f = files[static_cast<size_t>(order[i])];
    try {
      decode_image(f);
      ++c.usable;
      c.files.push_back(f);
    } catch (const Error& e) {
      c.undecodable.push_back(e.what());
    }
    job.report({"checking images", c.usable, c.requested, 0, ""});
  }
  return c;
}

}  // namespace lorq::api
