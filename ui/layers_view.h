#pragma once
// The layers table: every compressible layer in network order with its block, shape, size, current choice,
// bytes, predicted error and share of the total error. Sortable by any column (numbers sort as numbers);
// arrow keys move the selected layer (which drives the Pareto view); the context menu edits constraints.
#include <QAbstractTableModel>
#include <QWidget>

class EditActions;
class QSortFilterProxyModel;
class QTableView;
class WorkbenchState;

class LayersModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { Index, Block, Layer, Shape, Params, Fp32KB, Choice, Bytes, Error, Share, Constraint, Columns };
  explicit LayersModel(WorkbenchState* state, QObject* parent = nullptr);
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role) const override;
  void reset();
  void allocationChanged();  // only the allocation columns change: no reset, the selection stays

 private:
  WorkbenchState* state_;
};

class LayersView : public QWidget {
  Q_OBJECT
 public:
  LayersView(WorkbenchState* state, EditActions* edit, QWidget* parent = nullptr);
  QTableView* table() const { return table_; }
  LayersModel* model() const { return model_; }

 private:
  void selectLayer(int layer);
  void showMenu(const QPoint& pos);

  WorkbenchState* state_;
  EditActions* edit_;
  LayersModel* model_;
  QSortFilterProxyModel* proxy_;
  QTableView* table_;
};
