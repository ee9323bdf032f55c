#include "layers_view.h"

#include <QFileDialog>
#include <QHeaderView>
#include <QItemSelection>
#include <QLineEdit>
#include <QMenu>
#include <QMessageBox>
#include <QSaveFile>
#include <QSortFilterProxyModel>
#include <QTableView>
#include <QVBoxLayout>
#include <algorithm>

#include "commands.h"
#include "constraint_menu.h"
#include "format.h"
#include "workbench_document.h"

using namespace lorq::api;

LayersModel::LayersModel(WorkbenchDocument* state, QObject* parent) : QAbstractTableModel(parent), state_(state) {}

int LayersModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(state_->model().layers.size());
}

int LayersModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : Columns; }

QVariant LayersModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal) return {};
  static const char* names[] = {"#",      "Block", "Layer",       "Shape",       "Params",    "fp32 KB",
                                "Choice", "Bytes", "Pred. error", "Error share", "Constraint"};
  if (role == Qt::DisplayRole) return names[section];
  if (role == Qt::ToolTipRole && section == Share) return "This layer's part of the total predicted error";
  if (role == Qt::ToolTipRole && section == Error) return "Predicted global error (output NSR) of the choice";
  return {};
}

QVariant LayersModel::data(const QModelIndex& index, int role) const {
  const int row = index.row();
  const auto& layers = state_->model().layers;
  if (!index.isValid() || row >= static_cast<int>(layers.size())) return {};
  const LayerRow& l = layers[row];
  const bool allocated = state_->ready() && row < static_cast<int>(state_->allocation().choice.size());
  const OptionRow* o = allocated ? state_->chosenOption(row) : nullptr;
  const double bytes = !allocated ? 0.0 : o ? static_cast<double>(o->bytes) : 4.0 * l.params;
  const double error = o ? o->error : 0.0;
  const double total = state_->allocation().predicted_error;
  // Qt::UserRole: the value to sort by.
  if (role == Qt::UserRole) {
    switch (index.column()) {
      case Index:
        return row;
      case Block:
        return l.stage;
      case Layer:
        return QString::fromStdString(l.name);
      case Shape:
        return static_cast<qlonglong>(l.out_features * l.in_features);
      case Params:
        return static_cast<qlonglong>(l.params);
      case Fp32KB:
        return l.fp32_mb;
      case Choice:
        return allocated ? 8.0 * bytes / l.params : 0.0;
      case Bytes:
        return bytes;
      case Error:
      case Share:
        return error;
      case Constraint: {
        QString text = formatConstraint(state_->constraint(row));
        const int group = state_->groupOf(row);
        if (group >= 0) text += QString(text.isEmpty() ? "group %1" : ", group %1").arg(group + 1);
        return text;
      }
    }
  }
  if (role == Qt::DisplayRole) {
    switch (index.column()) {
      case Index:
        return row;
      case Block:
        return l.stage < 0 ? QString("embed") : QString::number(l.stage);
      case Layer:
        return QString::fromStdString(l.name);
      case Shape:
        return QString("%1 × %2").arg(l.out_features).arg(l.in_features);
      case Params:
        return QLocale().toString(static_cast<qlonglong>(l.params));
      case Fp32KB:
        return QString::number(l.fp32_mb * 1000, 'f', 1);
      case Choice:
        return allocated ? state_->choiceLabel(row) : QString();
      case Bytes:
        return allocated ? QLocale().toString(static_cast<qlonglong>(bytes)) : QString();
      case Error:
        return allocated ? QString::number(error, 'g', 3) : QString();
      case Share:
        return allocated && total > 0 ? QString("%1 %").arg(100.0 * error / total, 0, 'f', 1) : QString();
      case Constraint: {
        QString text = formatConstraint(state_->constraint(row));
        const int group = state_->groupOf(row);
        if (group >= 0) text += QString(text.isEmpty() ? "group %1" : ", group %1").arg(group + 1);
        return text;
      }
    }
  }
  if (role == Qt::TextAlignmentRole) {
    const int c = index.column();
    if (c == Layer || c == Choice || c == Constraint) return int(Qt::AlignLeft | Qt::AlignVCenter);
    return int(Qt::AlignRight | Qt::AlignVCenter);
  }
  if (role == Qt::ForegroundRole && index.column() == Choice && allocated)
    return o ? kindColor(*o) : QColor(120, 120, 120);
  if (role == Qt::ToolTipRole && o) return optionTooltip(*o, l.params);
  return {};
}

void LayersModel::reset() {
  beginResetModel();
  endResetModel();
}

void LayersModel::allocationChanged() {
  if (rowCount() == 0) return;
  emit dataChanged(index(0, Choice), index(rowCount() - 1, Constraint));
}

LayersView::LayersView(WorkbenchDocument* state, EditActions* edit, QWidget* parent)
    : QWidget(parent), state_(state), edit_(edit) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  model_ = new LayersModel(state, this);
  proxy_ = new QSortFilterProxyModel(this);
  proxy_->setSourceModel(model_);
  proxy_->setSortRole(Qt::UserRole);
  table_ = new QTableView(this);
  table_->setModel(proxy_);
  table_->setSortingEnabled(true);
  table_->sortByColumn(LayersModel::Index, Qt::AscendingOrder);  // network order until the user sorts
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::ExtendedSelection);  // bulk constraints on several layers
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setAlternatingRowColors(true);
  table_->setContextMenuPolicy(Qt::CustomContextMenu);
  table_->verticalHeader()->hide();
  table_->verticalHeader()->setDefaultSectionSize(table_->fontMetrics().height() + 6);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  table_->horizontalHeader()->setStretchLastSection(true);
  table_->setObjectName("layersTable");
  // The choice sits beside the name, so it stays in sight in a narrow window.
  table_->horizontalHeader()->moveSection(LayersModel::Choice, LayersModel::Layer + 1);
  pattern_ = new QLineEdit(this);
  pattern_->setPlaceholderText("Select layers by name pattern, e.g. *.attn.qkv (then right-click to constrain them)");
  pattern_->setClearButtonEnabled(true);
  pattern_->setObjectName("layerPattern");
  layout->addWidget(pattern_);
  layout->addWidget(table_);
  connect(pattern_, &QLineEdit::textEdited, this, &LayersView::selectPattern);

  connect(state_, &WorkbenchDocument::modelChanged, model_, &LayersModel::reset);
  connect(state_, &WorkbenchDocument::sessionChanged, model_, &LayersModel::reset);
  connect(state_, &WorkbenchDocument::allocationChanged, model_, &LayersModel::allocationChanged);
  connect(state_, &WorkbenchDocument::constraintsChanged, model_, &LayersModel::allocationChanged);
  connect(table_->selectionModel(), &QItemSelectionModel::currentRowChanged, this, [this](const QModelIndex& current) {
    if (current.isValid()) state_->setSelectedLayer(proxy_->mapToSource(current).row());
  });
  connect(state_, &WorkbenchDocument::selectedLayerChanged, this, &LayersView::selectLayer);
  connect(table_, &QWidget::customContextMenuRequested, this, &LayersView::showMenu);
}

void LayersView::selectLayer(int layer) {
  if (layer < 0 || layer >= model_->rowCount()) return;
  const QModelIndex at = proxy_->mapFromSource(model_->index(layer, 0));
  if (table_->currentIndex().row() == at.row()) return;
  table_->setCurrentIndex(at);
  table_->scrollTo(at);
}

std::vector<int> LayersView::selectedLayers() const {
  std::vector<int> out;
  for (const QModelIndex& i : table_->selectionModel()->selectedRows()) out.push_back(proxy_->mapToSource(i).row());
  std::sort(out.begin(), out.end());
  return out;
}

int LayersView::selectPattern(const QString& pattern) {
  const std::vector<int> layers = layersMatching(*state_, pattern);
  QItemSelection selection;
  for (int layer : layers) {
    const QModelIndex at = proxy_->mapFromSource(model_->index(layer, 0));
    selection.select(at, at.siblingAtColumn(LayersModel::Columns - 1));
  }
  table_->selectionModel()->select(selection, QItemSelectionModel::ClearAndSelect);
  if (!layers.empty()) table_->scrollTo(proxy_->mapFromSource(model_->index(layers.front(), 0)));
  return static_cast<int>(layers.size());
}

QString LayersView::exportCsv(const QString& path) const {
  QString text;
  const auto field = [](QString v) {
    if (v.contains(',') || v.contains('"') || v.contains('\n')) v = '"' + v.replace('"', "\"\"") + '"';
    return v;
  };
  QStringList header;
  for (int c = 0; c < model_->columnCount(); ++c)
    header << field(model_->headerData(c, Qt::Horizontal, Qt::DisplayRole).toString());
  text += header.join(',') + '\n';
  for (int r = 0; r < model_->rowCount(); ++r) {
    QStringList row;
    for (int c = 0; c < model_->columnCount(); ++c)
      row << field(model_->data(model_->index(r, c), Qt::DisplayRole).toString());
    text += row.join(',') + '\n';
  }
  QSaveFile file(path);  // a failed write leaves no half file
  if (!file.open(QIODevice::WriteOnly) || file.write(text.toUtf8()) < 0 || !file.commit())
    return QString("%1: cannot write (%2)").arg(path, file.errorString());
  return {};
}

void LayersView::showMenu(const QPoint& pos) {
  const QModelIndex at = table_->indexAt(pos);
  QMenu menu(this);
  std::vector<int> layers = selectedLayers();
  if (at.isValid()) {
    const int layer = proxy_->mapToSource(at).row();
    if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers = {layer};
    if (layers.size() == 1) {
      state_->setSelectedLayer(layer);
      addConstraintActions(&menu, edit_, layer);
    } else {
      addBulkConstraintActions(&menu, edit_, layers);
    }
    menu.addSeparator();
  }
  menu.addAction("Export table as CSV…", this, [this] {
    const QString path = QFileDialog::getSaveFileName(this, "Export layers table", "layers.csv", "CSV (*.csv)");
    if (path.isEmpty()) return;
    const QString problem = exportCsv(path);
    if (!problem.isEmpty()) QMessageBox::warning(this, "Cannot export the table", problem);
  });
  menu.exec(table_->viewport()->mapToGlobal(pos));
}
