#pragma once
// The embedded demo: a tiny ViT (timm architecture) trained from scratch on the procedural shapes set by the
// project's own trainer, so the product works with no download.
#include <cstdint>
#include <string>

#include "lorq/models/vit_config.h"
#include "lorq/common/progress.h"

namespace lorq {

struct DemoTrainOptions {
  std::string out_dir;       // receives model.safetensors + config.json (written atomically)
  int image_size = 64;
  int patch_size = 16;
  int embed_dim = 96;
  int depth = 6;
  int batch = 128;
  int64_t steps = 2400;
  double lr = 2e-3;
  double weight_decay = 0.05;
  double label_smoothing = 0.1;
  uint64_t seed = 7;          // model init and training-sample stream
  uint64_t heldout_seed = 1;  // the committed demo image set's seed: never trained on
  int64_t heldout_count = 300;  // the shipped demo images
};

struct DemoTrainResult {
  int64_t steps = 0;
  double seconds = 0;
  double final_loss = 0;     // mean training loss over the last 100 steps
  double heldout_top1 = 0;   // percent, on `heldout_count` generated images never seen in training
};

VitConfig demo_model_config(const DemoTrainOptions& options);
// Trains and writes the model. Progress reports steps; cancelling leaves out_dir untouched.
DemoTrainResult train_demo_model(const DemoTrainOptions& options, const JobControl& job = {});

}  // namespace lorq
