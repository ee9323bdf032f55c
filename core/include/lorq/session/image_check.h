#pragma once
// Before an analysis starts: does the calibration set give as many usable images as the settings ask for? The
// check decodes exactly the images the calibration's seeded draw will take (and the ones it skips because they do
// not decode), so it names the undecodable files and the usable count the analysis will really get. Torch-free.
#include <cstdint>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/session/api.h"

namespace lorq::api {

struct CalibrationCheck {
  int requested = 0;                     // AnalysisSettings::calibration_images
  int64_t available = 0;                 // images (by name) in the set
  int usable = 0;                        // of the images the draw takes, how many decode (at most `requested`)
  std::vector<std::string> undecodable;  // "path: problem", in draw order
  std::vector<std::string> files;        // the usable images, in draw order (the analysis' calibration files)
  bool ok() const { return usable >= requested; }
  // "" when ok, else e.g. "only 29 of the 32 requested calibration images are usable (the folder holds 31;
  // 2 cannot be decoded: a.jpg, b.jpg)".
  std::string warning() const;
};

// Decodes the images calibrate() will draw, in its order, until `requested` decode. Throws Cancelled.
CalibrationCheck check_calibration_images(const CompressionSession& session, const JobControl& job = {});

}  // namespace lorq::api
