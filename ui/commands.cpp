#include "commands.h"

#include <QUndoStack>

#include "workbench_state.h"

using namespace lorq::api;

BudgetCommand::BudgetCommand(WorkbenchState* state, int64_t from, int64_t to) : state_(state), from_(from), to_(to) {
  setText(QString("Budget %1 MB").arg(to / 1e6, 0, 'f', 3));
}

void BudgetCommand::undo() { state_->setBudget(from_); }
void BudgetCommand::redo() { state_->setBudget(to_); }

bool BudgetCommand::mergeWith(const QUndoCommand* other) {
  if (other->id() != id()) return false;
  to_ = static_cast<const BudgetCommand*>(other)->to_;
  setText(QString("Budget %1 MB").arg(to_ / 1e6, 0, 'f', 3));
  return true;
}

ConstraintsCommand::ConstraintsCommand(WorkbenchState* state, ConstraintMap from, ConstraintMap to, const QString& text)
    : state_(state), from_(std::move(from)), to_(std::move(to)) {
  setText(text);
}

void ConstraintsCommand::undo() { state_->setConstraints(from_); }
void ConstraintsCommand::redo() { state_->setConstraints(to_); }

EditActions::EditActions(WorkbenchState* state, QUndoStack* stack, QObject* parent)
    : QObject(parent), state_(state), stack_(stack) {}

void EditActions::setBudget(int64_t bytes) {
  if (!state_->ready() || bytes == state_->budget()) return;
  stack_->push(new BudgetCommand(state_, state_->budget(), bytes));
}

bool EditActions::setConstraint(int layer, const LayerConstraint& constraint, const QString& text) {
  if (!state_->ready() || layer < 0 || layer >= static_cast<int>(state_->layers().size())) return false;
  ConstraintMap next = state_->constraints();
  const std::string& name = state_->layers()[layer].name;
  if (constraint.empty())
    next.erase(name);
  else
    next[name] = constraint;
  if (next == state_->constraints()) return true;
  const QString why = state_->checkConstraints(next);
  if (!why.isEmpty()) {
    emit problem(why);
    return false;
  }
  stack_->push(new ConstraintsCommand(state_, state_->constraints(), next, text));
  return true;
}

bool EditActions::pinLayer(int layer, int option) {
  if (!state_->ready() || layer < 0 || layer >= static_cast<int>(state_->layers().size())) return false;
  const LayerAnalysis& l = state_->layers()[layer];
  if (option < 0 || option >= static_cast<int>(l.options.size())) return false;
  LayerConstraint c;  // a pin overrides the other limits; exclusion cannot coexist with it
  c.pinned_option = option;
  return setConstraint(
      layer, c,
      QString("Pin %1 to %2").arg(QString::fromStdString(l.name), QString::fromStdString(l.options[option].label)));
}

bool EditActions::clearAllConstraints() {
  if (!state_->ready() || state_->constraints().empty()) return false;
  stack_->push(new ConstraintsCommand(state_, state_->constraints(), {}, "Clear all constraints"));
  return true;
}
