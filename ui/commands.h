#pragma once
// Every user edit of the allocation as an undoable command: budget moves (consecutive moves merge into one step,
// so a slider drag undoes at once) and per-layer constraints (pins, minimum bits, maximum rank, exclusion).
#include <QObject>
#include <QUndoCommand>

#include "lorq/session/api.h"

class QUndoStack;
class WorkbenchState;

class BudgetCommand : public QUndoCommand {
 public:
  static constexpr int kId = 1;
  BudgetCommand(WorkbenchState* state, int64_t from, int64_t to);
  void undo() override;
  void redo() override;
  int id() const override { return kId; }
  bool mergeWith(const QUndoCommand* other) override;

 private:
  WorkbenchState* state_;
  int64_t from_, to_;
};

class ConstraintsCommand : public QUndoCommand {
 public:
  ConstraintsCommand(WorkbenchState* state, lorq::api::ConstraintMap from, lorq::api::ConstraintMap to,
                     const QString& text);
  void undo() override;
  void redo() override;

 private:
  WorkbenchState* state_;
  lorq::api::ConstraintMap from_, to_;
};

// The one entry point views use to edit: validates, then pushes the command. Problems go to `problem`.
class EditActions : public QObject {
  Q_OBJECT
 public:
  EditActions(WorkbenchState* state, QUndoStack* stack, QObject* parent = nullptr);
  QUndoStack* undoStack() const { return stack_; }
  WorkbenchState* state() const { return state_; }

  void setBudget(int64_t bytes);
  // Sets one layer's constraint (an empty constraint clears it).
  bool setConstraint(int layer, const lorq::api::LayerConstraint& constraint, const QString& text);
  bool pinLayer(int layer, int option);
  bool clearAllConstraints();

 signals:
  void problem(const QString& message);

 private:
  WorkbenchState* state_;
  QUndoStack* stack_;
};
