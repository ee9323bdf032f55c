#pragma once
// Float vs compressed on real images: measured top-1/top-5 of both models (labeled sets), a strip of the
// evaluated images sorted by largest output change (KL), and for the chosen image both top-5 lists with the
// probability change. The image sits in its own canvas so boxes and masks can be drawn over it later.
#include <QWidget>
#include <functional>
#include <memory>
#include <vector>

#include "lorq/session/api.h"

class QLabel;
class QListWidget;
class QPushButton;
class QSpinBox;
class QTableWidget;

class CompareView : public QWidget {
  Q_OBJECT
 public:
  explicit CompareView(QWidget* parent = nullptr);
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

 signals:
  void evaluateRequested();
  void openImageRequested(const QString& path);
  // An image of the evaluation whose float classes are not all in the compressed top-k: every class is wanted.
  void detailsRequested(const lorq::api::ImageComparison& image);

 private:
  std::shared_ptr<lorq::api::ComparisonResult> result_;
  std::function<QString(int)> className_;
  bool settingResult_ = false;
  QPushButton* evaluate_;
  QSpinBox* limit_;
  QLabel* metrics_;
  QLabel* canvas_;
  QLabel* caption_;
  QTableWidget* table_;
  QListWidget* strip_;
};
