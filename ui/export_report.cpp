#include "export_report.h"

#include <qcustomplot.h>

#include <QDir>
#include <QFileInfo>
#include <QSaveFile>

#include "allocation_view.h"
#include "budget_view.h"
#include "format.h"
#include "lorq/io/export_size.h"
#include "workbench_document.h"

using namespace lorq::api;

QString exportReport(const WorkbenchDocument& state, const ComparisonResult* comparison) {
  const ModelSummary& m = state.model();
  const AllocationResult& a = state.allocation();
  const int64_t p = state.params();
  QString r;
  r += "# LoRQ compression report\n\n";
  r += QString("- Model: `%1` (%2, %3 compressible layers, %4 M weights)\n")
           .arg(QString::fromStdString(m.path), QString::fromStdString(m.architecture))
           .arg(m.layers.size())
           .arg(p / 1e6, 0, 'f', 3);
  r += QString("- Budget: %1 bytes (%2 bits per weight, %3× vs fp32)\n")
           .arg(a.budget_bytes)
           .arg(8.0 * a.budget_bytes / p, 0, 'f', 3)
           .arg(4.0 * p / a.budget_bytes, 0, 'f', 2);
  r += QString("- Allocation: %1 bytes (%2 bits per weight), predicted error %3\n")
           .arg(a.bytes)
           .arg(8.0 * a.bytes / p, 0, 'f', 3)
           .arg(a.predicted_error, 0, 'g', 4);
  if (state.session()) {
    const AnalysisSettings& s = state.session()->settings();
    r += QString("- Analysis: %1 calibration images, %2 LFH images × %3 projections, %4 anchors%5\n")
             .arg(s.calibration_images)
             .arg(s.lfh_images)
             .arg(s.projections)
             .arg(s.anchors)
             .arg(s.estimate ? ", LFH-estimated errors" : "");
  }
  if (comparison) {
    auto line = [](const char* name, const EvalSummary& e) {
      return e.labeled ? QString("- %1: top-1 %2%, top-5 %3% (%4 images)\n")
                             .arg(name)
                             .arg(e.top1_pct, 0, 'f', 2)
                             .arg(e.top5_pct, 0, 'f', 2)
                             .arg(e.labeled)
                       : QString("- %1: %2 unlabeled images\n").arg(name).arg(e.images);
    };
    r += line("Float", comparison->float_eval);
    r += line("Compressed", comparison->compressed_eval);
  }
  r += "\n![budget](budget.png)\n\n![allocation](allocation.png)\n\n";
  r += "| # | layer | shape | choice | bytes | predicted error | constraint |\n|---|---|---|---|---|---|---|\n";
  for (int i = 0; i < static_cast<int>(state.layers().size()); ++i) {
    const LayerAnalysis& l = state.layers()[i];
    const OptionRow* o = state.chosenOption(i);
    r += QString("| %1 | %2 | %3×%4 | %5 | %6 | %7 | %8 |\n")
             .arg(i)
             .arg(QString::fromStdString(l.name))
             .arg(l.out_features)
             .arg(l.in_features)
             .arg(state.choiceLabel(i))
             .arg(o ? o->bytes : 4 * l.params)
             .arg(o ? QString::number(o->error, 'g', 3) : QString("0"))
             .arg(formatConstraint(state.constraint(i)));
  }
  r += "\nThe compressed model is in `model/` (lorq-config.json, compressed.safetensors, config.json); "
       "`lorq eval --model model` loads it.\n";
  return r;
}

QString writeExportExtras(const QString& dir, const WorkbenchDocument& state, BudgetView* budget,
                          AllocationView* allocation, const ComparisonResult* comparison) {
  const QDir out(dir);
  const QString budgetPng = out.filePath("budget.png"), allocationPng = out.filePath("allocation.png");
  if (!budget->plot()->savePng(budgetPng, 900, 560)) return budgetPng + ": cannot write the PNG";
  // The selected layer's band is a UI highlight, not part of the result.
  QList<QCPLayerable*> hidden;
  for (QCPLayerable* l : allocation->highlights())
    if (l->visible()) {
      l->setVisible(false);
      hidden << l;
    }
  const bool allocationSaved = allocation->plot()->savePng(allocationPng, 1200, 480);
  for (QCPLayerable* l : hidden) l->setVisible(true);
  if (!allocationSaved) return allocationPng + ": cannot write the PNG";
  const QString md = out.filePath("report.md");
  QSaveFile file(md);  // written whole or not at all
  if (!file.open(QIODevice::WriteOnly | QIODevice::Text)) return md + ": " + file.errorString();
  file.write(exportReport(state, comparison).toUtf8());
  file.write(("\n```\n" + lorq::export_size_report(out.filePath("model").toStdString()) + "```\n").c_str());
  if (!file.commit()) return md + ": " + file.errorString();
  return {};
}
