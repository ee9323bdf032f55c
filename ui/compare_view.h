#pragma once
// Float vs compressed on real images, for every task: both models' metrics (labeled sets), a strip of the evaluated
// images sorted by largest output change (KL, lost + new boxes, changed pixels), and for the chosen image what each
// model says: both top-5 lists with the probability change, both models' boxes (matched / lost / new, a score
// threshold), or both label maps with the disagreement map (an opacity slider). Captions and controls sit beside the
// image canvas (TaskCanvas), never over it.
#include <QWidget>
#include <functional>
#include <memory>
#include <vector>

#include "lorq/session/api.h"

class QCheckBox;
class QLabel;
class QListWidget;
class QSlider;
class TaskCanvas;
class QPushButton;
class QSpinBox;
class QTableWidget;

class CompareView : public QWidget {
  Q_OBJECT
 public:
  explicit CompareView(QWidget* parent = nullptr);
  // The model's task; a result carrying boxes or label maps says so by itself.
  void setTask(lorq::api::TaskKind task) { task_ = task; }
  lorq::api::TaskKind task() const { return task_; }
  void setResult(const lorq::api::ComparisonResult& result);
  // One image's predictions (from the strip, or an image opened on its own).
  // `compressedAll`: the compressed model's probabilities of every class, so Δp is filled for a float class that
  // left the compressed top-k (without it, such a row says so).
  void showImage(const lorq::api::ImageComparison& image,
                 const std::vector<lorq::api::ClassScore>* compressedAll = nullptr);
  // Names a class the predictions do not carry (an image's true class).
  void setClassNamer(std::function<QString(int)> namer) { className_ = std::move(namer); }
  QLabel* caption() const { return caption_; }
  // Whether the compressed top-k holds every class of the float top-k (then every Δp is known).
  static bool allFloatClassesRanked(const lorq::api::ImageComparison& image);
  void markStale();  // the allocation moved since the evaluation
  void clear();      // a new document: no results
  const lorq::api::ComparisonResult* result() const { return result_.get(); }
  int limit() const;
  QListWidget* strip() const { return strip_; }
  QTableWidget* table() const { return table_; }
  TaskCanvas* canvas() const { return canvas_; }
  QSlider* thresholdSlider() const { return threshold_; }  // detection: score threshold in hundredths
  QSlider* opacitySlider() const { return opacity_; }      // segmentation: mask opacity in percent
  QCheckBox* overlayToggle() const { return overlay_; }
  QLabel* metricsLabel() const { return metrics_; }
  // The strip's text for one image: "KL 0.12", "−2 +1" (lost, new boxes), "3.4% px" (changed pixels).
  static QString changeText(const lorq::api::ImageComparison& image, lorq::api::TaskKind task);
  // "Float: mAP 45.10%, mAP@.5 61.00%" from EvalSummary::metrics (top-1/top-5 when it has none).
  static QString metricsText(const char* name, const lorq::api::EvalSummary& e, bool rich);
  // The strip's picture of one image, at most `size` pixels a side: the image (decoded at that size), with the
  // boxes at the default threshold in their fate colours (detection) or the changed pixels in red (segmentation).
  static QImage stripThumbnail(const lorq::api::ImageComparison& image, lorq::api::TaskKind task, int size);
  // The task a comparison's images show (boxes or maps present), else `fallback`.
  static lorq::api::TaskKind taskOf(const lorq::api::ComparisonResult& result, lorq::api::TaskKind fallback);

 signals:
  void evaluateRequested();
  void openImageRequested(const QString& path);
  // An image of the evaluation whose float classes are not all in the compressed top-k: every class is wanted.
  void detailsRequested(const lorq::api::ImageComparison& image);

 private:
  std::shared_ptr<lorq::api::ComparisonResult> result_;
  void fillClassificationTable(const lorq::api::ImageComparison& image,
                               const std::vector<lorq::api::ClassScore>* compressedAll);
  void fillDetectionTable();
  void fillSegmentationTable(const lorq::api::ImageComparison& image);
  void showControlsFor(lorq::api::TaskKind task);

  std::function<QString(int)> className_;
  lorq::api::TaskKind task_ = lorq::api::TaskKind::Classification;
  bool settingResult_ = false;
  QPushButton* evaluate_;
  QSpinBox* limit_;
  QLabel* metrics_;
  TaskCanvas* canvas_;
  QWidget* controls_;
  QCheckBox* overlay_;
  QLabel* thresholdLabel_;
  QSlider* threshold_;
  QLabel* opacityLabel_;
  QSlider* opacity_;
  QLabel* caption_;
  QTableWidget* table_;
  QListWidget* strip_;
};
