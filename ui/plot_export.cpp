#include "plot_export.h"

#include <qcustomplot.h>

#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenu>
#include <QMessageBox>
#include <QSvgGenerator>

QString savePlot(QCustomPlot* plot, const QString& path, const PlotHighlights& highlights) {
  QList<QCPLayerable*> hidden;
  if (highlights)
    for (QCPLayerable* l : highlights())
      if (l && l->visible()) {
        l->setVisible(false);
        hidden << l;
      }
  const QString suffix = QFileInfo(path).suffix().toLower();
  bool ok = false;
  if (suffix == "pdf") {
    ok = plot->savePdf(path, plot->width(), plot->height());
  } else if (suffix == "svg") {
    // Vector output through Qt SVG, written to a temporary name and renamed, so a reader never sees half a file.
    const QString tmp = path + ".tmp";
    QSvgGenerator svg;
    svg.setFileName(tmp);
    svg.setSize(plot->size());
    svg.setResolution(96);  // the width and height are written in mm: at 96 dpi a browser shows the on-screen size
    svg.setViewBox(QRect(QPoint(0, 0), plot->size()));
    svg.setTitle(QFileInfo(path).completeBaseName());
    svg.setDescription("LoRQ Workbench plot");
    QCPPainter painter;
    ok = painter.begin(&svg);
    if (ok) {
      plot->toPainter(&painter, plot->width(), plot->height());
      ok = painter.end();
    }
    QFile::remove(path);
    ok = ok && QFile::rename(tmp, path);
    if (!ok) QFile::remove(tmp);
  } else if (suffix == "png")
    ok = plot->savePng(path, plot->width(), plot->height(), 2.0);  // twice the screen resolution
  for (QCPLayerable* l : hidden) l->setVisible(true);
  plot->replot(QCustomPlot::rpQueuedReplot);
  if (suffix != "png" && suffix != "pdf" && suffix != "svg") return path + ": choose a .png, .pdf or .svg file name";
  return ok ? QString() : path + ": cannot write the file";
}

void addSavePlotActions(QMenu* menu, QCustomPlot* plot, const QString& name, const PlotHighlights& highlights) {
  for (const char* format : {"png", "pdf", "svg"}) {
    const QString suffix = format;
    menu->addAction(QString("Save plot as %1…").arg(suffix.toUpper()), plot, [=] {
      const QString path = QFileDialog::getSaveFileName(plot, "Save plot", name + "." + suffix,
                                                        suffix.toUpper() + " (*." + suffix + ")");
      if (path.isEmpty()) return;
      const QString problem = savePlot(plot, path, highlights);
      if (!problem.isEmpty()) QMessageBox::warning(plot, "Cannot save the plot", problem);
    });
  }
}

void enablePlotSaveMenu(QCustomPlot* plot, const QString& name, const PlotHighlights& highlights) {
  plot->setContextMenuPolicy(Qt::CustomContextMenu);
  QObject::connect(plot, &QWidget::customContextMenuRequested, plot, [=](const QPoint& pos) {
    QMenu menu(plot);
    addSavePlotActions(&menu, plot, name, highlights);
    menu.exec(plot->mapToGlobal(pos));
  });
}
