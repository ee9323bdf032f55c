#pragma once
// Matching two detection lists of one image (float vs compressed): torch-free, so the engine's change score and the
// workbench's matched / lost / new boxes are one computation.
#include <vector>

#include "lorq/types.h"

namespace lorq {

double box_iou(const Detection& a, const Detection& b);

// Greedy matching by descending score of `a`, same class, IoU >= min_iou (a later box of equal IoU wins): for each
// detection of `a`, the index of its match in `b` or -1.
std::vector<int> match_detections(const std::vector<Detection>& a, const std::vector<Detection>& b,
                                  double min_iou = 0.5);

}  // namespace lorq
