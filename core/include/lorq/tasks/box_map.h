#pragma once
// COCO-style box mAP, as pycocotools' COCOeval computes it for iouType "bbox", area "all", maxDets 100:
//  - per image and class, detections sorted by descending score (stable) and cut to the first 100;
//  - at each IoU threshold t in 0.50:0.05:0.95, greedy matching in that order: a detection takes the unmatched
//    ground-truth box with the highest IoU >= t (ties: the later box, as COCOeval's loop does), else it is a false
//    positive;
//  - per class, all its detections over all images sorted by descending score (stable: image order, then rank),
//    precision made monotone decreasing and sampled at the 101 recall points 0, 0.01, ..., 1 (0 past the largest
//    recall reached): AP(class, t) = the mean of those 101 samples;
//  - mAP@[.5:.95] = mean over classes and thresholds; mAP@.5 = mean over classes at t = 0.5.
// Classes without any ground-truth box in the whole set are left out of the average, and their detections are
// ignored (COCO gives them precision -1, which the mean skips). A detection of a class that has ground truth in
// other images is a false positive in an image without it.
// No torch here: plain numbers in, plain numbers out.
#include <cstdint>
#include <vector>

namespace lorq {

// A detector's box in pixels (corners), with its class and score.
struct DetectedBox {
  int class_index = 0;
  double score = 0;
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// A ground-truth box in pixels (corners).
struct TruthBox {
  int class_index = 0;
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Intersection over union of two corner boxes; 0 when they do not overlap with a positive area (COCO's bbIou).
double box_iou(double ax0, double ay0, double ax1, double ay1, double bx0, double by0, double bx1, double by1);

struct BoxMapValues {
  double map = -1;    // mAP@[.5:.95]; -1 when no class has ground truth (COCO's "no value")
  double map50 = -1;  // mAP@.5
  double map75 = -1;  // mAP@.75
  // The classes with ground truth, ascending, and their AP@[.5:.95] and AP@.5.
  std::vector<int> classes;
  std::vector<double> class_ap, class_ap50;
};

class BoxMapAccumulator {
 public:
  explicit BoxMapAccumulator(int max_detections_per_image = 100);
  // One image: its detections (any order) and its ground truth (possibly empty: then every detection of a class
  // with ground truth elsewhere is a false positive). Throws lorq::Error for a class index outside 0..2^20 or a
  // non-finite score or coordinate.
  void add_image(const std::vector<DetectedBox>& detections, const std::vector<TruthBox>& truth);
  int64_t images() const { return images_; }
  int64_t truth_boxes() const;
  BoxMapValues values() const;

  // The IoU thresholds (numpy.linspace(.5, .95, 10), as COCOeval builds them) and the recall points
  // (numpy.linspace(0, 1, 101)).
  static const std::vector<double>& iou_thresholds();
  static const std::vector<double>& recall_points();

 private:
  struct Record {
    double score;
    uint16_t matched;  // bit k: a true positive at iou_thresholds()[k]
  };
  struct ClassData {
    int64_t truth = 0;
    std::vector<Record> records;  // image order, then descending score within the image
  };
  ClassData& class_data(int class_index);

  int max_detections_;
  int64_t images_ = 0;
  std::vector<ClassData> classes_;  // indexed by class
};

}  // namespace lorq
