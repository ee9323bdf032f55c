#pragma once
// Every user edit of the allocation as an undoable command: budget moves (the moves of one gesture, such as a
// slider drag, merge into one step; the next drag or a typed value is another step) and constraints (pins, minimum
// bits, maximum rank, exclusion, layer groups).
#include <QObject>
#include <QUndoCommand>
#include <functional>

#include "lorq/session/api.h"

class QUndoStack;
class WorkbenchDocument;

class BudgetCommand : public QUndoCommand {
 public:
  static constexpr int kId = 1;
  // gesture 0: a step of its own; otherwise merges with the previous command of the same gesture.
  BudgetCommand(WorkbenchDocument* state, int64_t from, int64_t to, int gesture = 0);
  void undo() override;
  void redo() override;
  int id() const override { return kId; }
  bool mergeWith(const QUndoCommand* other) override;

 private:
  WorkbenchDocument* state_;
  int64_t from_, to_;
  int gesture_;
};

class ConstraintsCommand : public QUndoCommand {
 public:
  ConstraintsCommand(WorkbenchDocument* state, lorq::api::ConstraintMap from, lorq::api::ConstraintMap to,
                     const QString& text);
  ConstraintsCommand(WorkbenchDocument* state, lorq::api::ConstraintMap from, lorq::api::LayerGroups fromGroups,
                     lorq::api::ConstraintMap to, lorq::api::LayerGroups toGroups, const QString& text);
  void undo() override;
  void redo() override;

 private:
  WorkbenchDocument* state_;
  lorq::api::ConstraintMap from_, to_;
  lorq::api::LayerGroups fromGroups_, toGroups_;
};

// The one entry point views use to edit: validates, then pushes the command. Problems go to `problem`.
class EditActions : public QObject {
  Q_OBJECT
 public:
  EditActions(WorkbenchDocument* state, QUndoStack* stack, QObject* parent = nullptr);
  QUndoStack* undoStack() const { return stack_; }
  WorkbenchDocument* state() const { return state_; }

  // A gesture (press .. release of a slider) groups its budget moves into one undo step.
  void beginGesture();
  void endGesture();
  bool inGesture() const { return gesture_ != 0; }
  void setBudget(int64_t bytes);
  // Sets one layer's constraint (an empty constraint clears it).
  bool setConstraint(int layer, const lorq::api::LayerConstraint& constraint, const QString& text);
  // One undo step for several layers: `edit` turns each layer's current constraint into its new one.
  bool editConstraints(
      const std::vector<int>& layers,
      const std::function<lorq::api::LayerConstraint(int layer, const lorq::api::LayerConstraint&)>& edit,
      const QString& text);
  bool pinLayer(int layer, int option);
  bool clearAllConstraints();
  // Layer groups: these layers take the same choice (one new group); removing a group frees its layers.
  bool groupLayers(const std::vector<int>& layers);
  bool removeGroup(int group);
  // Replaces every constraint and group at once (e.g. an imported constraints file).
  bool replaceConstraints(const lorq::api::ConstraintMap& constraints, const lorq::api::LayerGroups& groups,
                          const QString& text);

 signals:
  void problem(const QString& message);

 private:
  WorkbenchDocument* state_;
  QUndoStack* stack_;
  int gesture_ = 0, lastGesture_ = 0;
};
