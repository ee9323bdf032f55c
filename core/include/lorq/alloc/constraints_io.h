#pragma once
// Constraints as JSON, shared by `lorq compress --constraints FILE` and the workbench's session file:
//   {"version": 1,
//    "layers": {"blocks.0.attn.qkv": {"pin": "LR r=37 A6/B4", "min_bits": 4, "max_rank": 64, "exclude": "q8"},
//               "head": {"exclude": "float"}},
//    "groups": [["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]]}
// A pin names an option by its label (LayerOption::label()), so the file stays valid when the analysis is
// recomputed with other settings as long as the option still exists; otherwise reading it is an error naming the
// file, the layer and the label. ("pin_option": N, an option index, is read for version-1 session files.)
#include <string>

#include "lorq/pipeline/compress.h"

namespace lorq {

// Throws lorq::Error naming `source` and the problem (bad JSON, unknown layer, unknown option label, bad value).
Constraints constraints_from_json(const std::string& json_text, const CompressionAnalysis& analysis,
                                  const std::string& source);
Constraints read_constraints(const std::string& path, const CompressionAnalysis& analysis);
std::string constraints_to_json(const Constraints& constraints, const CompressionAnalysis& analysis);

}  // namespace lorq
