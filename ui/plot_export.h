#pragma once
// Saving a plot from its context menu: PNG, PDF or SVG (Qt SVG) by the file's suffix, at the plot's on-screen size,
// with the view's UI-only highlights (a selected bar, a hover marker) hidden while it is drawn.
#include <QList>
#include <QString>
#include <functional>

class QCPLayerable;
class QCustomPlot;
class QMenu;
class QWidget;

using PlotHighlights = std::function<QList<QCPLayerable*>()>;

// Returns "" or the problem, naming the file.
QString savePlot(QCustomPlot* plot, const QString& path, const PlotHighlights& highlights = {});
// "Save plot as PNG…" / "… PDF…" / "… SVG…" entries (a file dialog, then savePlot; problems in a message box).
void addSavePlotActions(QMenu* menu, QCustomPlot* plot, const QString& name, const PlotHighlights& highlights = {});
// For plots without a context menu of their own: right-click shows the save entries.
void enablePlotSaveMenu(QCustomPlot* plot, const QString& name, const PlotHighlights& highlights = {});
