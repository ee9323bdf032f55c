#include "export_report.h"

#include <qcustomplot.h>

#include <QDir>
#include <QFileInfo>
#include <QSaveFile>

#include "allocation_view.h"
#include "budget_view.h"
#include "compare_view.h"
#include "final_settings_dialog.h"
#include "format.h"
#include "lorq/io/export_size.h"
#include "task_canvas.h"
#include "workbench_document.h"

using namespace lorq::api;

QStringList changedImageFiles(const ComparisonResult& comparison) {
  QStringList files;
  if (CompareView::taskOf(comparison, TaskKind::Classification) == TaskKind::Classification) return files;
  const int n = std::min<int>(kReportChangedImages, static_cast<int>(comparison.images.size()));
  for (int i = 0; i < n; ++i) files << QString("changed-%1.png").arg(i + 1);
  return files;
}

QString writeChangedImages(const QString& dir, const ComparisonResult& comparison,
                           const std::function<QString(int)>& className) {
  const QStringList files = changedImageFiles(comparison);
  const TaskKind task = CompareView::taskOf(comparison, TaskKind::Classification);
  TaskCanvas canvas;
  canvas.setClassNamer(className);
  // What the compare view shows first: both models side by side, Hugging Face's default threshold.
  canvas.setScoreThreshold(std::max(0.5, comparison.min_score));
  canvas.setOpacity(0.5);
  for (int i = 0; i < files.size(); ++i) {
    canvas.setImage(comparison.images[i], task);
    QSize size = canvas.nativeSize();
    if (size.width() > 1600) size = QSize(1600, std::max(1, size.height() * 1600 / size.width()));
    const QString png = QDir(dir).filePath(files[i]);
    QSaveFile file(png);  // written whole or not at all
    if (!file.open(QIODevice::WriteOnly) || !canvas.renderImage(size).save(&file, "PNG") || !file.commit())
      return png + ": cannot write the PNG";
  }
  return {};
}

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
             .arg(s.estimate            ? ", LFH-estimated errors"
                  : s.calibrated_errors ? ", calibrated errors (Q2–Q4 and one rank per pair measured)"
                                        : ", every anchor measured");
  }
  // What the export holds after the allocation (Analysis › Final model…; final_settings_dialog.h).
  const bool final = state.finalState() == WorkbenchDocument::FinalState::Current;
  r += "- Final model: " +
       (final ? describeFinalSettings(*state.builtFinalSettings()) : QString("nearest rounding, weights only")) + "\n";
  if (comparison) {
    auto line = [](const char* name, const EvalSummary& e) {
      return e.labeled ? QString("- %1 (%2 images)\n").arg(CompareView::metricsText(name, e, false)).arg(e.labeled)
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
  if (comparison && !changedImageFiles(*comparison).isEmpty()) {
    const TaskKind task = CompareView::taskOf(*comparison, TaskKind::Classification);
    r += task == TaskKind::Detection
             ? "\n## Most changed images\n\nFloat boxes left, compressed right (score ≥ 0.5): matched solid green, "
               "lost dashed orange (float only), new dotted blue (compressed only).\n\n"
             : "\n## Most changed images\n\nFloat mask, compressed mask, and the pixels whose class changed (red).\n\n";
    const QStringList files = changedImageFiles(*comparison);
    for (int i = 0; i < files.size(); ++i) {
      const ImageComparison& c = comparison->images[i];
      r += QString("%1. `%2` — %3\n\n   ![%4](%4)\n\n")
               .arg(i + 1)
               .arg(QFileInfo(QString::fromStdString(c.path)).fileName())
               .arg(task == TaskKind::Detection
                        ? QString("%1 lost, %2 new, %3 matched").arg(c.lost).arg(c.added).arg(c.matched)
                        : QString("%1 pixels changed").arg(CompareView::changeText(c, task).remove(" px")))
               .arg(files[i]);
    }
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
  if (comparison) {
    const QString problem =
        writeChangedImages(dir, *comparison, [&state](int index) { return state.className(index); });
    if (!problem.isEmpty()) return problem;
  }
  const QString md = out.filePath("report.md");
  QSaveFile file(md);  // written whole or not at all
  if (!file.open(QIODevice::WriteOnly | QIODevice::Text)) return md + ": " + file.errorString();
  file.write(exportReport(state, comparison).toUtf8());
  file.write(("\n```\n" + lorq::export_size_report(out.filePath("model").toStdString()) + "```\n").c_str());
  if (!file.commit()) return md + ": " + file.errorString();
  return {};
}
