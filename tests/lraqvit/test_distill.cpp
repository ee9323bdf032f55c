// Recovery by distillation on the demo model: the loss falls, progress and cancel work, and a run resumed from its
// checkpoint gives bit-identical deltas (and biases/norms) to an uninterrupted one.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/lraqvit/distill.h"
#include "lraqvit_test_util.h"

using namespace lorq;
using namespace lorq::lraqvit;
using namespace lorq::lraqvit_test;

namespace {

struct Trial {
  std::unique_ptr<Model> student, teacher;
  std::vector<RbLraLayer> layers;
};

Trial fresh_run(const Model& float_model, BranchInit init = BranchInit::Zero) {
  Trial r;
  r.student = float_model.clone();
  r.teacher = float_model.clone();
  RbLraSettings s;
  s.init = init;
  r.layers = truncate_layers(*r.student, s);
  return r;
}

DistillSettings small_settings() {
  DistillSettings s;
  s.steps = 8;
  s.batch = 4;
  s.lr = 1e-4;
  s.checkpoint_every = 3;
  return s;
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / ("lorq_distill_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace

TEST(Distill, LossDecreasesOnTheDemo) {
  auto float_model = load_model(demo_model_dir());
  const at::Tensor images = demo_images(*float_model, 32);
  Trial r = fresh_run(*float_model);
  DistillSettings s = small_settings();
  s.steps = 40;
  s.batch = 8;
  const DistillStep before = distillation_loss(*r.student, *r.teacher, r.layers, images, {}, s);
  std::vector<Progress> progress;
  JobControl job;
  job.progress = [&](const Progress& p) { progress.push_back(p); };
  const DistillReport rep = distill(*r.student, *r.teacher, r.layers, images, {}, s, job);
  const DistillStep after = distillation_loss(*r.student, *r.teacher, r.layers, images, {}, s);
  EXPECT_EQ(rep.steps_run, 40);
  EXPECT_LT(after.loss, 0.7 * before.loss) << "before " << before.loss << " after " << after.loss;
  EXPECT_LT(after.feature, before.feature);
  EXPECT_LT(after.task, before.task);
  std::printf("loss %.4f -> %.4f (task %.4f -> %.4f, features %.5f -> %.5f)\n", before.loss, after.loss, before.task,
              after.task, before.feature, after.feature);
  ASSERT_EQ(progress.size(), 40u);
  EXPECT_EQ(progress.back().stage, "distillation");
  EXPECT_EQ(progress.back().done, 40);
  // The student is left without overrides and its deltas frozen.
  for (const auto& l : r.layers) {
    EXPECT_FALSE(r.student->has_linear_override(l.name));
    EXPECT_FALSE(l.delta_out.requires_grad());
  }
  EXPECT_GT(r.layers[0].delta_out.abs().max().item<float>(), 0.f);
}

TEST(Distill, ResumeFromCheckpointIsBitIdentical) {
  auto float_model = load_model(demo_model_dir());
  const at::Tensor images = demo_images(*float_model, 12);
  // Labels on some images: the task loss mixes them with the teacher's predictions.
  const at::Tensor labels = at::tensor(std::vector<int64_t>{0, -1, 2, 3, -1, 5, 1, -1, 4, 0, -1, 2}, at::kLong);
  DistillSettings s = small_settings();
  s.train_biases_norms = true;

  // Uninterrupted.
  Trial a = fresh_run(*float_model, BranchInit::WrReported);
  distill(*a.student, *a.teacher, a.layers, images, labels, s);

  // Cancelled after step 5 (the flag is raised from the step callback, no timing involved), then resumed in a
  // fresh process-like state: new models, new layers, the same checkpoint file.
  TempDir dir;
  const std::string ckpt = dir.file("distill.safetensors");
  {
    Trial b = fresh_run(*float_model, BranchInit::WrReported);
    std::atomic<bool> cancel{false};
    JobControl job;
    job.cancel = &cancel;
    EXPECT_THROW(distill(*b.student, *b.teacher, b.layers, images, labels, s, job, ckpt,
                         [&](const DistillStep& st) {
                           if (st.step == 5) cancel = true;
                         }),
                 Cancelled);
    for (const auto& l : b.layers) EXPECT_FALSE(b.student->has_linear_override(l.name));
  }
  Trial c = fresh_run(*float_model, BranchInit::WrReported);
  const DistillReport rep = distill(*c.student, *c.teacher, c.layers, images, labels, s, {}, ckpt);
  EXPECT_EQ(rep.resumed_from, 5);
  EXPECT_EQ(rep.steps_run, 3);
  EXPECT_TRUE(rep.warnings.empty());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_TRUE(at::equal(a.layers[i].delta_out, c.layers[i].delta_out)) << a.layers[i].name;
    EXPECT_TRUE(at::equal(a.layers[i].delta_in, c.layers[i].delta_in)) << a.layers[i].name;
  }
  int changed = 0;
  for (const auto& [key, t] : a.student->named_tensors()) {
    EXPECT_TRUE(at::equal(t, c.student->tensor(key))) << key;
    changed += at::equal(t, float_model->tensor(key)) ? 0 : 1;
  }
  EXPECT_GT(changed, 0) << "train_biases_norms trained nothing";

  // A checkpoint of other settings is not resumed, and says so.
  Trial d = fresh_run(*float_model, BranchInit::WrReported);
  s.seed = 1;
  s.steps = 1;
  const DistillReport other = distill(*d.student, *d.teacher, d.layers, images, labels, s, {}, ckpt);
  EXPECT_EQ(other.resumed_from, 0);
  ASSERT_EQ(other.warnings.size(), 1u);
  EXPECT_NE(other.warnings[0].find("stale checkpoint"), std::string::npos) << other.warnings[0];
}

TEST(Distill, BadInputsAreClearErrors) {
  auto m = random_vit(3);
  Trial r = fresh_run(*m);
  at::Generator g = at::detail::createCPUGenerator(1);
  const at::Tensor images = at::randn({4, 3, 32, 32}, g);
  EXPECT_THROW(distill(*r.student, *r.teacher, r.layers, images, at::zeros({3}, at::kLong), small_settings()), Error);
  DistillSettings s = small_settings();
  s.steps = 0;
  EXPECT_THROW(distill(*r.student, *r.teacher, r.layers, images, {}, s), Error);
  std::vector<RbLraLayer> none;
  EXPECT_THROW(distill(*r.student, *r.teacher, none, images, {}, small_settings()), Error);
}
