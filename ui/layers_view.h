#pragma once
// The layers table: every compressible layer in network order with its block, shape, size, current choice,
// bytes, predicted error and share of the total error. Sortable by any column (numbers sort as numbers);
// arrow keys move the selected layer (which drives the Pareto view); the context menu edits constraints.
#include <QAbstractTableModel>
#include <QWidget>
#include <vector>

class EditActions;
class QLineEdit;
class QSortFilterProxyModel;
class QTableView;
class WorkbenchDocument;

class LayersModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { Index, Block, Layer, Shape, Params, Fp32KB, Choice, Bytes, Error, Share, Constraint, Columns };
  explicit LayersModel(WorkbenchDocument* state, QObject* parent = nullptr);
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role) const override;
  void reset();
  void allocationChanged();  // only the allocation columns change: no reset, the selection stays

 private:
  WorkbenchDocument* state_;
};

class LayersView : public QWidget {
  Q_OBJECT
 public:
  LayersView(WorkbenchDocument* state, EditActions* edit, QWidget* parent = nullptr);
  QTableView* table() const { return table_; }
  LayersModel* model() const { return model_; }
  QLineEdit* patternBox() const { return pattern_; }
  // The selected layers in network order (several for bulk constraints).
  std::vector<int> selectedLayers() const;
  // Selects the layers whose name matches a wildcard pattern ("*.attn.qkv"); returns how many.
  int selectPattern(const QString& pattern);
  // Writes the table as shown (every column, network order) to a CSV file; returns "" or the problem.
  QString exportCsv(const QString& path) const;

 private:
  void selectLayer(int layer);
  void showMenu(const QPoint& pos);

  WorkbenchDocument* state_;
  EditActions* edit_;
  LayersModel* model_;
  QSortFilterProxyModel* proxy_;
  QTableView* table_;
  QLineEdit* pattern_;
};
