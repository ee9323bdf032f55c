// COCO-style box mAP against hand-computed cases (perfect, shifted, duplicate, missed and out-of-order detections,
// empty images, classes without ground truth, two classes) and, on random sets, against the textbook definition of
// 101-point AP: the mean over r of the best precision at any recall >= r.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "lorq/common/error.h"
#include "lorq/tasks/box_map.h"

using namespace lorq;

namespace {

TruthBox gt(int c, double x0, double y0, double x1, double y1) { return {c, x0, y0, x1, y1}; }
DetectedBox det(int c, double s, double x0, double y0, double x1, double y1) { return {c, s, x0, y0, x1, y1}; }

// AP when a class's ranked detections hit `tp` (true/false per rank) out of `npos` objects, by the definition, at
// COCO's recall points (numpy.linspace(0, 1, 101) = i · 0.01, so point 70 is 0.7000000000000001).
double textbook_ap(const std::vector<bool>& tp, int64_t npos) {
  std::vector<double> rc, pr;
  double t = 0;
  for (size_t i = 0; i < tp.size(); ++i) {
    t += tp[i];
    rc.push_back(t / double(npos));
    pr.push_back(t / double(i + 1));
  }
  double sum = 0;
  for (int r = 0; r <= 100; ++r) {
    double best = 0;
    for (size_t i = 0; i < rc.size(); ++i)
      if (rc[i] >= (r == 100 ? 1.0 : r * 0.01)) best = std::max(best, pr[i]);
    sum += best;
  }
  return sum / 101;
}

}  // namespace

TEST(BoxIou, HandComputed) {
  EXPECT_DOUBLE_EQ(box_iou(0, 0, 10, 10, 0, 0, 10, 10), 1.0);
  EXPECT_DOUBLE_EQ(box_iou(0, 0, 8, 10, 0, 0, 5, 10), 50.0 / 80.0);
  EXPECT_DOUBLE_EQ(box_iou(0, 0, 10, 10, 5, 5, 15, 15), 25.0 / 175.0);
  EXPECT_EQ(box_iou(0, 0, 10, 10, 10, 0, 20, 10), 0.0);  // touching edges
  EXPECT_EQ(box_iou(0, 0, 0, 0, 0, 0, 0, 0), 0.0);       // empty boxes: no overlap, not NaN
}

TEST(BoxMap, PerfectDetectionsScoreOne) {
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.9, 10, 10, 50, 60), det(1, 0.8, 100, 20, 140, 90)},
                {gt(0, 10, 10, 50, 60), gt(1, 100, 20, 140, 90)});
  acc.add_image({det(1, 0.3, 0, 0, 5, 5)}, {gt(1, 0, 0, 5, 5)});
  const BoxMapValues v = acc.values();
  EXPECT_DOUBLE_EQ(v.map, 1.0);
  EXPECT_DOUBLE_EQ(v.map50, 1.0);
  EXPECT_DOUBLE_EQ(v.map75, 1.0);
  EXPECT_EQ(v.classes, (std::vector<int>{0, 1}));
  EXPECT_EQ(acc.images(), 2);
  EXPECT_EQ(acc.truth_boxes(), 3);
}

TEST(BoxMap, ShiftedBoxCountsAtThresholdsUpToItsIou) {
  // IoU 50/80 = 0.625: a hit at 0.50, 0.55, 0.60 and a miss at 0.65 ... 0.95, so mAP@[.5:.95] = 3/10.
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.7, 0, 0, 5, 10)}, {gt(0, 0, 0, 8, 10)});
  const BoxMapValues v = acc.values();
  EXPECT_DOUBLE_EQ(v.map50, 1.0);
  EXPECT_DOUBLE_EQ(v.map75, 0.0);
  EXPECT_NEAR(v.map, 0.3, 1e-12);
}

TEST(BoxMap, DuplicateDetectionIsAFalsePositive) {
  // Two objects; ranks: hit (0.9), duplicate of the same object (0.8), hit on the second (0.7). Recall 0.5 at
  // precision 1, then recall 1 at precision 2/3: the envelope is 1 for r <= 0.5 (51 points) and 2/3 above (50).
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.9, 0, 0, 10, 10), det(0, 0.8, 0, 0, 10, 10), det(0, 0.7, 20, 20, 30, 30)},
                {gt(0, 0, 0, 10, 10), gt(0, 20, 20, 30, 30)});
  const double want = (51 + 50 * 2.0 / 3.0) / 101;  // 253/303
  EXPECT_NEAR(acc.values().map50, want, 1e-12);
  EXPECT_NEAR(acc.values().map, want, 1e-12);
  // A duplicate ranked after every hit costs nothing (the envelope is 1 up to recall 1).
  BoxMapAccumulator late;
  late.add_image({det(0, 0.9, 0, 0, 10, 10), det(0, 0.8, 20, 20, 30, 30), det(0, 0.7, 0, 0, 10, 10)},
                 {gt(0, 0, 0, 10, 10), gt(0, 20, 20, 30, 30)});
  EXPECT_DOUBLE_EQ(late.values().map, 1.0);
}

TEST(BoxMap, MissedObjectCapsRecall) {
  // One of two objects found: precision 1 up to recall 0.5 (51 of 101 points), 0 beyond.
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.9, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10), gt(0, 20, 20, 30, 30)});
  EXPECT_NEAR(acc.values().map, 51.0 / 101, 1e-12);
  // The object with no detection at all may sit in another image: same figure.
  BoxMapAccumulator split;
  split.add_image({det(0, 0.9, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10)});
  split.add_image({}, {gt(0, 20, 20, 30, 30)});
  EXPECT_NEAR(split.values().map, 51.0 / 101, 1e-12);
}

TEST(BoxMap, DetectionsAreRankedByScoreNotByInputOrder) {
  // The false positive is listed first but scores lower: ranks hit, miss -> AP 1.
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.3, 50, 50, 60, 60), det(0, 0.9, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10)});
  EXPECT_DOUBLE_EQ(acc.values().map, 1.0);
  // Across images: a false positive in image 1 outscoring the hit in image 2 -> ranks miss, hit: precision 1/2 at
  // recall 1, so AP 1/2.
  BoxMapAccumulator across;
  across.add_image({det(0, 0.95, 50, 50, 60, 60)}, {});
  across.add_image({det(0, 0.9, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10)});
  EXPECT_NEAR(across.values().map, 0.5, 1e-12);
  // Added the other way round: the same.
  BoxMapAccumulator reversed;
  reversed.add_image({det(0, 0.9, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10)});
  reversed.add_image({det(0, 0.95, 50, 50, 60, 60)}, {});
  EXPECT_NEAR(reversed.values().map, 0.5, 1e-12);
}

TEST(BoxMap, GreedyMatchTakesTheBestUnmatchedBox) {
  // a = [0,10]x[0,10], b = [3,13]x[0,10]. The 0.9 detection [2,12] has IoU 80/120 = 0.667 with a and 90/110 =
  // 0.818 with b: it takes b. The 0.8 detection is a exactly. At t <= 0.80 (7 thresholds) both hit: AP 1; at
  // 0.85, 0.90, 0.95 the first is a miss and the second a hit: precision 1/2 up to recall 1/2, AP 25.5/101.
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.9, 2, 0, 12, 10), det(0, 0.8, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10), gt(0, 3, 0, 13, 10)});
  const BoxMapValues v = acc.values();
  EXPECT_DOUBLE_EQ(v.map50, 1.0);
  EXPECT_NEAR(v.map, (7 + 3 * 25.5 / 101) / 10, 1e-12);
}

TEST(BoxMap, EmptyImagesChangeNothingAndNoTruthGivesNoValue) {
  BoxMapAccumulator acc;
  acc.add_image({}, {});
  acc.add_image({}, {});
  EXPECT_EQ(acc.images(), 2);
  EXPECT_EQ(acc.values().map, -1);
  EXPECT_TRUE(acc.values().classes.empty());
  acc.add_image({det(0, 0.5, 0, 0, 4, 4)}, {gt(0, 0, 0, 4, 4)});
  acc.add_image({}, {});
  EXPECT_DOUBLE_EQ(acc.values().map, 1.0);
  // Ground truth with no detection anywhere: AP 0.
  BoxMapAccumulator none;
  none.add_image({}, {gt(2, 0, 0, 4, 4)});
  EXPECT_EQ(none.values().map, 0.0);
  EXPECT_EQ(none.values().classes, (std::vector<int>{2}));
}

TEST(BoxMap, ClassWithoutGroundTruthIsLeftOut) {
  // Class 3 never has ground truth: its confident detections neither count as false positives nor enter the mean.
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.6, 0, 0, 10, 10), det(3, 0.99, 0, 0, 10, 10), det(3, 0.98, 40, 40, 50, 50)},
                {gt(0, 0, 0, 10, 10)});
  const BoxMapValues v = acc.values();
  EXPECT_DOUBLE_EQ(v.map, 1.0);
  EXPECT_EQ(v.classes, (std::vector<int>{0}));
}

TEST(BoxMap, TwoClassesAreAveraged) {
  // Class 0 perfect (AP 1); class 1 finds one of two objects (AP 51/101): mAP = (1 + 51/101) / 2.
  BoxMapAccumulator acc;
  acc.add_image({det(0, 0.9, 0, 0, 10, 10), det(1, 0.8, 20, 0, 30, 10)}, {gt(0, 0, 0, 10, 10), gt(1, 20, 0, 30, 10)});
  acc.add_image({}, {gt(1, 5, 5, 9, 9)});
  const BoxMapValues v = acc.values();
  EXPECT_NEAR(v.map, (1 + 51.0 / 101) / 2, 1e-12);
  EXPECT_NEAR(v.map50, (1 + 51.0 / 101) / 2, 1e-12);
  ASSERT_EQ(v.class_ap.size(), 2u);
  EXPECT_DOUBLE_EQ(v.class_ap[0], 1.0);
  EXPECT_NEAR(v.class_ap[1], 51.0 / 101, 1e-12);
  // A detection of class 0 in the image without class-0 ground truth is a false positive (ranked first here).
  BoxMapAccumulator fp;
  fp.add_image({det(0, 0.9, 0, 0, 10, 10)}, {gt(0, 0, 0, 10, 10)});
  fp.add_image({det(0, 0.95, 0, 0, 10, 10)}, {gt(1, 0, 0, 10, 10)});
  EXPECT_NEAR(fp.values().class_ap[0], 0.5, 1e-12);
  EXPECT_EQ(fp.values().class_ap[1], 0.0);
}

TEST(BoxMap, RecallPointsAreNumpysLinspaceLikeCocoeval) {
  // 7 of 10 objects found, all ranked first: precision 1 up to recall 7/10 = 0.7. numpy's linspace makes recall
  // point 70 0.7000000000000001 > 0.7, so COCOeval counts 70 points (0 ... 0.69), not 71: AP = 70/101.
  BoxMapAccumulator acc;
  std::vector<TruthBox> g;
  std::vector<DetectedBox> d;
  for (int k = 0; k < 10; ++k) {
    g.push_back(gt(0, 20.0 * k, 0, 20.0 * k + 10, 10));
    if (k < 7) d.push_back(det(0, 0.9 - 0.01 * k, 20.0 * k, 0, 20.0 * k + 10, 10));
  }
  acc.add_image(d, g);
  EXPECT_NEAR(acc.values().map, 70.0 / 101, 1e-12);
}

TEST(BoxMap, OnlyTheTopDetectionsPerImageAndClassCount) {
  // Three misses outscore the hit; with 3 detections kept per image the hit is dropped: AP 0. With the default
  // 100: ranks miss, miss, miss, hit -> precision 1/4 at recall 1 -> AP 1/4.
  const std::vector<DetectedBox> d{det(0, 0.9, 50, 50, 60, 60), det(0, 0.8, 70, 70, 80, 80),
                                   det(0, 0.7, 90, 90, 95, 95), det(0, 0.6, 0, 0, 10, 10)};
  BoxMapAccumulator top3(3), all;
  top3.add_image(d, {gt(0, 0, 0, 10, 10)});
  all.add_image(d, {gt(0, 0, 0, 10, 10)});
  EXPECT_EQ(top3.values().map, 0.0);
  EXPECT_NEAR(all.values().map, 0.25, 1e-12);
}

TEST(BoxMap, RejectsBadInput) {
  BoxMapAccumulator acc;
  EXPECT_THROW(acc.add_image({det(-1, 0.5, 0, 0, 1, 1)}, {}), Error);
  EXPECT_THROW(acc.add_image({det(0, NAN, 0, 0, 1, 1)}, {}), Error);
  EXPECT_THROW(acc.add_image({}, {gt(0, 0, 0, INFINITY, 1)}), Error);
  EXPECT_EQ(acc.images(), 0);
  EXPECT_THROW(BoxMapAccumulator(0), Error);
}

TEST(BoxMap, ThresholdsAndRecallPointsAreCocos) {
  const auto& t = BoxMapAccumulator::iou_thresholds();
  ASSERT_EQ(t.size(), 10u);
  EXPECT_EQ(t.front(), 0.5);
  EXPECT_EQ(t.back(), 0.95);
  EXPECT_NEAR(t[5], 0.75, 1e-15);
  const auto& r = BoxMapAccumulator::recall_points();
  ASSERT_EQ(r.size(), 101u);
  EXPECT_EQ(r.front(), 0.0);
  EXPECT_EQ(r.back(), 1.0);
}

TEST(BoxMap, RandomSetsMatchTheTextbookDefinitionAtIouHalf) {
  // Disjoint ground-truth boxes and detections that are either exact copies (IoU 1) or far away (IoU 0), so the
  // match of each detection is unambiguous; AP@.5 then equals the textbook AP of the ranked hit list.
  std::mt19937 rng(42);
  for (int trial = 0; trial < 20; ++trial) {
    BoxMapAccumulator acc;
    std::vector<std::pair<double, bool>> ranked;  // (score, hit) over all images, class 0
    int64_t npos = 0;
    const int images = 1 + int(rng() % 6);
    for (int im = 0; im < images; ++im) {
      std::vector<TruthBox> g;
      std::vector<DetectedBox> d;
      const int n = int(rng() % 5);
      for (int k = 0; k < n; ++k) g.push_back(gt(0, 20.0 * k, 0, 20.0 * k + 10, 10));
      npos += n;
      std::vector<bool> used(n, false);
      const int m = int(rng() % 7);
      for (int k = 0; k < m; ++k) {
        const double s = std::uniform_real_distribution<double>(0, 1)(rng);
        const int target = n > 0 ? int(rng() % (n + 1)) : n;
        if (target < n) {
          d.push_back(det(0, s, 20.0 * target, 0, 20.0 * target + 10, 10));
        } else {
          d.push_back(det(0, s, 500, 500, 510, 510));
        }
      }
      // The hit flags need the in-image rank order: a repeated target is a hit only for its best-scored copy.
      std::vector<size_t> order(d.size());
      for (size_t k = 0; k < order.size(); ++k) order[k] = k;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d[a].score > d[b].score; });
      for (size_t k : order) {
        const int target = d[k].x0 >= 500 ? -1 : int(d[k].x0 / 20);
        const bool hit = target >= 0 && !used[size_t(target)];
        if (hit) used[size_t(target)] = true;
        ranked.push_back({d[k].score, hit});
      }
      acc.add_image(d, g);
    }
    std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<bool> hits;
    for (const auto& r : ranked) hits.push_back(r.second);
    const BoxMapValues v = acc.values();
    if (npos == 0) {
      EXPECT_EQ(v.map, -1);
      continue;
    }
    const double want = textbook_ap(hits, npos);
    EXPECT_NEAR(v.map50, want, 1e-12) << "trial " << trial;
    EXPECT_NEAR(v.map, want, 1e-12) << "trial " << trial;  // IoU is 1 or 0: every threshold agrees
  }
}
