#include "layers_view.h"

#include <QHeaderView>
#include <QMenu>
#include <QSortFilterProxyModel>
#include <QTableView>
#include <QVBoxLayout>

#include "commands.h"
#include "constraint_menu.h"
#include "format.h"
#include "workbench_state.h"

using namespace lorq::api;

LayersModel::LayersModel(WorkbenchState* state, QObject* parent) : QAbstractTableModel(parent), state_(state) {}

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
      case Constraint:
        return formatConstraint(state_->constraint(row));
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
      case Constraint:
        return formatConstraint(state_->constraint(row));
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

LayersView::LayersView(WorkbenchState* state, EditActions* edit, QWidget* parent)
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
  table_->setSelectionMode(QAbstractItemView::SingleSelection);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setAlternatingRowColors(true);
  table_->setContextMenuPolicy(Qt::CustomContextMenu);
  table_->verticalHeader()->hide();
  table_->verticalHeader()->setDefaultSectionSize(table_->fontMetrics().height() + 6);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  table_->horizontalHeader()->setStretchLastSection(true);
  table_->setObjectName("layersTable");
  layout->addWidget(table_);

  connect(state_, &WorkbenchState::modelChanged, model_, &LayersModel::reset);
  connect(state_, &WorkbenchState::sessionChanged, model_, &LayersModel::reset);
  connect(state_, &WorkbenchState::allocationChanged, model_, &LayersModel::allocationChanged);
  connect(state_, &WorkbenchState::constraintsChanged, model_, &LayersModel::allocationChanged);
  connect(table_->selectionModel(), &QItemSelectionModel::currentRowChanged, this, [this](const QModelIndex& current) {
    if (current.isValid()) state_->setSelectedLayer(proxy_->mapToSource(current).row());
  });
  connect(state_, &WorkbenchState::selectedLayerChanged, this, &LayersView::selectLayer);
  connect(table_, &QWidget::customContextMenuRequested, this, &LayersView::showMenu);
}

void LayersView::selectLayer(int layer) {
  if (layer < 0 || layer >= model_->rowCount()) return;
  const QModelIndex at = proxy_->mapFromSource(model_->index(layer, 0));
  if (table_->currentIndex().row() == at.row()) return;
  table_->setCurrentIndex(at);
  table_->scrollTo(at);
}

void LayersView::showMenu(const QPoint& pos) {
  const QModelIndex at = table_->indexAt(pos);
  if (!at.isValid()) return;
  const int layer = proxy_->mapToSource(at).row();
  state_->setSelectedLayer(layer);
  QMenu menu(this);
  addConstraintActions(&menu, edit_, layer);
  menu.exec(table_->viewport()->mapToGlobal(pos));
}
