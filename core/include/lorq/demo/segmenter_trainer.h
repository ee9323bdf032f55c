#pragma once
// The embedded demo segmenter: a tiny SegFormer in the Hugging Face layout (config.json with model_type "segformer",
// preprocessor_config.json, model.safetensors with HF tensor names, the decode head's BatchNorm included), trained
// from scratch by the project's own trainer on generated scenes (demo/scenes.h: background + the six shape classes)
// with the pixel cross-entropy HF's SegformerForSemanticSegmentation uses (logits upsampled bilinearly to the label
// map). Resumable like the detector trainer (<out_dir>/checkpoint, `resume`).
#include <cstdint>
#include <string>
#include <vector>

#include "lorq/common/progress.h"

namespace lorq {

class Model;

struct SegmenterTrainOptions {
  std::string out_dir;  // receives config.json, preprocessor_config.json, model.safetensors (written atomically)
  int image_size = 128;
  std::vector<int> hidden_sizes{16, 32, 64, 128};  // MiT stages (B0 is 32, 64, 160, 256)
  std::vector<int> depths{1, 1, 1, 1};
  std::vector<int> heads{1, 1, 2, 4};
  int decoder_hidden_size = 64;
  int batch = 16;
  int64_t steps = 3000;
  double lr = 1e-3;
  double weight_decay = 0.01;
  double clip_grad_norm = 1.0;
  uint64_t seed = 7;               // model init and training-scene stream
  uint64_t heldout_seed = 1;       // the shipped demo scenes' seed: never trained on
  int64_t heldout_count = 200;     // held-out scenes for the final mIoU
  int64_t checkpoint_every = 200;  // steps between checkpoints (0: none)
  bool resume = false;             // continue from <out_dir>/checkpoint when it exists
};

struct SegmenterTrainResult {
  int64_t steps = 0;
  int64_t resumed_from = 0;
  double seconds = 0;  // this run's training time (without the held-out evaluation)
  double steps_per_second = 0;
  double first_loss = 0;                                // the training loss of this run's first step
  double final_loss = 0;                                // mean training loss over the last 100 steps
  double heldout_miou = 0, heldout_pixel_accuracy = 0;  // on held-out scenes, in [0, 1]
};

// The class names of the demo segmenter: "background", then shape_class_names().
std::vector<std::string> segmenter_class_names();

// Writes a randomly initialised demo SegFormer (the three HF files) into `dir`.
void write_initial_demo_segmenter(const std::string& dir, const SegmenterTrainOptions& options);

// Trains and writes the model. Cancelling leaves out_dir's model files untouched (the last checkpoint stays).
SegmenterTrainResult train_demo_segmenter(const SegmenterTrainOptions& options, const JobControl& job = {});

struct SegmentationEvalFigures {
  double miou = 0, pixel_accuracy = 0;
  int64_t images = 0;
};
// mIoU and pixel accuracy of a segmenter on generated scenes (seed, indices 0..count-1, size x size), the label maps
// taken as HF's post-processing does (logits upsampled to the image size, argmax).
SegmentationEvalFigures evaluate_segmenter_on_scenes(Model& model, uint64_t seed, int64_t count, int size);

}  // namespace lorq
