#include "lorq/models/registry.h"

#include "lorq/common/error.h"
#include "lorq/models/segformer.h"
#include "lorq/models/vit.h"
#include "lorq/models/yolos.h"

namespace lorq {

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> list = {vit_architecture(), yolos_architecture(), segformer_architecture()};
  return list;
}

std::string supported_architectures() {
  std::string out;
  for (const Architecture& a : architectures()) out += (out.empty() ? "" : ", ") + a.name;
  return out;
}

const Architecture& recognise_architecture(const CheckpointInfo& info) {
  const std::string& config = info.files.config;
  if (!info.model_type.empty()) {
    for (const Architecture& a : architectures())
      for (const std::string& t : a.model_types)
        if (t == info.model_type) return a;
    throw Error(config, "unsupported architecture: model_type '" + info.model_type +
                            "' (supported: " + supported_architectures() + ")");
  }
  if (!info.timm_architecture.empty())
    for (const Architecture& a : architectures())
      if (a.timm_name && a.timm_name(info.timm_architecture)) return a;
  // A config that names an architecture we do not know may still hold one we do (a renamed fine-tune): the tensor
  // shapes decide, and the message names both when they do not.
  for (const Architecture& a : architectures())
    if (a.shapes && a.shapes(info.shapes)) return a;
  const std::string what = info.timm_architecture.empty()
                               ? "the tensors match no supported architecture"
                               : "unsupported architecture '" + info.timm_architecture + "' (" + config +
                                     "), and the tensors match no supported architecture";
  throw Error(info.files.weights, what + " (supported: " + supported_architectures() + ")");
}

}  // namespace lorq
