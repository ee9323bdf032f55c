#pragma once
// The embedded demo detector: a tiny YOLOS in the Hugging Face layout (config.json with model_type "yolos",
// preprocessor_config.json, model.safetensors with HF tensor names), trained from scratch by the project's own
// trainer on an endless stream of generated scenes (demo/scenes.h) with the DETR set loss (demo/detection_loss.h),
// so it loads through the same code as a hub checkpoint.
//
// Resumable: every `checkpoint_every` steps the weights, the AdamW state and the step are saved in
// <out_dir>/checkpoint/; with `resume` a run continues from there (the data stream is a function of the step, so a
// resumed run sees the batches an uninterrupted one would have).
#include <array>
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "lorq/common/progress.h"

namespace lorq {

class Model;

struct DetectorTrainOptions {
  std::string out_dir;  // receives config.json, preprocessor_config.json, model.safetensors (written atomically)
  int image_size = 128;
  int patch_size = 16;
  int hidden_size = 128;
  int depth = 4;
  int heads = 4;
  int detection_tokens = 16;  // object queries, one per cell of an even grid (4x4); a scene has at most 4 objects
  // Location prior of the Hungarian matching (DetectionLossWeights::anchor_cost): objects go to the query of their
  // cell unless the predictions clearly say otherwise. 0: the plain DETR/HF matcher.
  double anchor_cost = 5;
  // Weight of a training-only loss that teaches the patch tokens what they show: a linear classifier on the final
  // LayerNorm of every patch token predicts the share of each class (and background) in its patch, from the
  // scene's label map (soft cross-entropy). The detection tokens read their cell's patches, so class evidence
  // there makes their classification easy; from the set loss alone it is learned slowly (DETR's deep supervision
  // idea, applied to the encoder). The classifier is not part of the exported model. 0: off.
  double patch_class_loss = 1;
  int batch = 32;
  int64_t steps = 4000;
  double lr = 5e-4;
  double weight_decay = 1e-4;
  double clip_grad_norm = 1.0;
  bool aux_loss = true;  // a set loss on every encoder layer's output too (the reported loss is the last layer's)
  double layer_norm_eps = 1e-12;  // HF YolosConfig's default
  std::array<float, 3> image_mean{0.485f, 0.456f, 0.406f}, image_std{0.229f, 0.224f, 0.225f};
  // A timm ViT folder (e.g. datasets/demo-vit, the demo classifier trained on single shapes) whose patch embedding,
  // class token, position embeddings (interpolated to the detector's grid) and blocks initialise the encoder, as
  // YOLOS starts from a DeiT. Its width, depth, heads, patch size, LayerNorm eps and normalisation then replace
  // the ones above. Empty: random initialisation.
  std::string backbone;
  // A demo detector folder to continue from (fine-tuning with a fresh schedule) instead of a new model; its
  // architecture replaces the options above. Empty: a new model.
  std::string init;
  uint64_t seed = 7;               // model init and training-scene stream
  uint64_t heldout_seed = 1;       // the shipped demo scenes' seed: never trained on
  int64_t heldout_count = 200;     // held-out scenes for the final mAP
  int64_t checkpoint_every = 200;  // steps between checkpoints (0: none)
  bool resume = false;             // continue from <out_dir>/checkpoint when it exists
};

struct DetectorTrainResult {
  int64_t steps = 0;
  int64_t resumed_from = 0;  // the step a resumed run started at (0: a fresh run)
  double seconds = 0;        // this run's training time (without the held-out evaluation)
  double steps_per_second = 0;
  double first_loss = 0;                      // the training loss of this run's first step
  double final_loss = 0;                      // mean training loss over the last 100 steps
  double heldout_map50 = 0, heldout_map = 0;  // box mAP@.5 and mAP@[.5:.95] on held-out scenes, in [0, 1]
};

// The centres (normalised x, y) of the image cells the detection tokens are responsible for: an even grid of
// ceil(sqrt(Q)) columns, row by row. [Q, 2] float.
at::Tensor query_anchors(int detection_tokens);

// Writes a randomly initialised demo YOLOS (the three HF files) into `dir`.
void write_initial_demo_detector(const std::string& dir, const DetectorTrainOptions& options);

// Trains and writes the model. Progress reports steps; cancelling stops at the next step and leaves out_dir's
// model files untouched (the last checkpoint stays for --resume).
DetectorTrainResult train_demo_detector(const DetectorTrainOptions& options, const JobControl& job = {});

struct DetectionEvalFigures {
  double map50 = 0, map = 0;  // box mAP@.5 and mAP@[.5:.95]
  int64_t images = 0, objects = 0;
};
// Box mAP of a detector on generated scenes (seed, indices 0..count-1, size x size): every detection token counts
// (score = its best class probability, as COCO-style evaluation takes up to 100 detections per image).
DetectionEvalFigures evaluate_detector_on_scenes(Model& model, uint64_t seed, int64_t count, int size);

}  // namespace lorq
