#pragma once
// The workbench's additions to the engine's export folder: PNGs of the budget and allocation plots and a short
// Markdown report (model, budget, per-layer choices, constraints, measured accuracy when evaluated).
#include <QString>

#include "lorq/session/api.h"

class AllocationView;
class BudgetView;
class WorkbenchDocument;

// Writes DIR/budget.png, DIR/allocation.png and DIR/report.md; returns "" or the problem (naming the file).
QString writeExportExtras(const QString& dir, const WorkbenchDocument& state, BudgetView* budget,
                          AllocationView* allocation, const lorq::api::ComparisonResult* comparison);
// The report's Markdown text.
QString exportReport(const WorkbenchDocument& state, const lorq::api::ComparisonResult* comparison);
