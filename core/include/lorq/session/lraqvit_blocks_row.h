#pragma once
// The method comparison's row "MLoRQ + LRA-QViT blocks" (issue 12): MLoRQ's allocation finalized with every
// LRA-QViT building block that applies. Plain types only (api.h), like the session it drives.
#include "lorq/session/api.h"

namespace lorq::api {

// Recovery steps the row uses when `settings` asks for none: on DeiT-Tiny one step of 8 images costs ~5-10 s on
// this 2-core CPU, so the row stays within a few minutes.
constexpr int kLraQvitBlocksRecoverySteps = 20;

// `settings` with the blocks switched on: per-token activations and WADS when activation_bits > 0 (weights only:
// neither applies), recovery at settings.recovery_steps (kLraQvitBlocksRecoverySteps when 0).
FinalSettings with_lraqvit_blocks(FinalSettings settings);

// session.finalize(allocation, with_lraqvit_blocks(settings), job): afterwards the session's evaluate_compressed(),
// compare() and export_to() of `allocation` use the result. Throws Cancelled or lorq::Error as finalize does.
FinalSummary finalize_with_lraqvit_blocks(CompressionSession& session, const Allocation& allocation,
                                          const FinalSettings& settings, const JobControl& job = {});

}  // namespace lorq::api
