#pragma once
// Float vs compressed on real images: measured top-1/top-5 of both models (labeled sets), a strip of the
// evaluated images sorted by largest output change (KL), and for the chosen image both top-5 lists with the
// probability change. The image sits in its own canvas so boxes and masks can be drawn over it later.
#include <QWidget>
#include <memory>

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
  void showImage(const lorq::api::ImageComparison& image);
  void markStale();  // the allocation moved since the evaluation
  void clear();      // a new document: no results
  const lorq::api::ComparisonResult* result() const { return result_.get(); }
  int limit() const;
  QListWidget* strip() const { return strip_; }
  QTableWidget* table() const { return table_; }

 signals:
  void evaluateRequested();
  void openImageRequested(const QString& path);

 private:
  std::shared_ptr<lorq::api::ComparisonResult> result_;
  QPushButton* evaluate_;
  QSpinBox* limit_;
  QLabel* metrics_;
  QLabel* canvas_;
  QLabel* caption_;
  QTableWidget* table_;
  QListWidget* strip_;
};
