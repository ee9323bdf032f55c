#include "lorq/session/lraqvit_blocks_row.h"

namespace lorq::api {

FinalSettings with_lraqvit_blocks(FinalSettings s) {
  s.per_token_activations = s.activation_bits > 0;
  s.wads = s.activation_bits > 0;
  if (s.recovery_steps <= 0) s.recovery_steps = kLraQvitBlocksRecoverySteps;
  return s;
}

FinalSummary finalize_with_lraqvit_blocks(CompressionSession& session, const Allocation& allocation,
                                          const FinalSettings& settings, const JobControl& job) {
  return session.finalize(allocation, with_lraqvit_blocks(settings), job);
}

}  // namespace lorq::api
