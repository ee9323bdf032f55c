#include "lorq/types.h"

namespace lorq {

const char* task_name(TaskKind kind) {
  switch (kind) {
    case TaskKind::Classification:
      return "classification";
    case TaskKind::Detection:
      return "detection";
    case TaskKind::Segmentation:
      return "segmentation";
  }
  return "unknown";
}

bool Constraints::empty() const {
  for (const auto& [layer, c] : layers)
    if (!c.empty()) return false;
  return groups.empty();
}

}  // namespace lorq
