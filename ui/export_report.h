#pragma once
// The workbench's additions to the engine's export folder: PNGs of the budget and allocation plots and a short
// Markdown report (model, budget, per-layer choices, constraints, measured metrics when evaluated, and for detectors
// and segmenters the most changed images with both models' boxes or masks).
#include <QString>
#include <functional>

#include "lorq/session/api.h"

class AllocationView;
class BudgetView;
class WorkbenchDocument;

// Writes DIR/budget.png, DIR/allocation.png and DIR/report.md; returns "" or the problem (naming the file).
QString writeExportExtras(const QString& dir, const WorkbenchDocument& state, BudgetView* budget,
                          AllocationView* allocation, const lorq::api::ComparisonResult* comparison);
// The report's Markdown text.
QString exportReport(const WorkbenchDocument& state, const lorq::api::ComparisonResult* comparison);

// Detection and segmentation comparisons: the report shows this many of the most changed images.
constexpr int kReportChangedImages = 4;
// The names of those images' PNGs in the export folder ("changed-1.png", ...); none for a classification.
QStringList changedImageFiles(const lorq::api::ComparisonResult& comparison);
// Draws them (the compare view's canvas, side by side, default threshold and opacity) into DIR; returns "" or the
// problem naming the file.
QString writeChangedImages(const QString& dir, const lorq::api::ComparisonResult& comparison,
                           const std::function<QString(int)>& className = {});
