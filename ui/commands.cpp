#include "commands.h"

#include <QUndoStack>
#include <algorithm>

#include "workbench_document.h"

using namespace lorq::api;

BudgetCommand::BudgetCommand(WorkbenchDocument* state, int64_t from, int64_t to, int gesture)
    : state_(state), from_(from), to_(to), gesture_(gesture) {
  setText(QString("Budget %1 MB").arg(to / 1e6, 0, 'f', 3));
}

void BudgetCommand::undo() { state_->setBudget(from_); }
void BudgetCommand::redo() { state_->setBudget(to_); }

// Like Tiled's ChangeValue::mergeWith: merging stops at the end of a gesture, so each drag is its own step.
bool BudgetCommand::mergeWith(const QUndoCommand* other) {
  if (other->id() != id()) return false;
  const auto* next = static_cast<const BudgetCommand*>(other);
  if (gesture_ == 0 || next->gesture_ != gesture_) return false;
  to_ = next->to_;
  setText(QString("Budget %1 MB").arg(to_ / 1e6, 0, 'f', 3));
  return true;
}

ConstraintsCommand::ConstraintsCommand(WorkbenchDocument* state, ConstraintMap from, ConstraintMap to,
                                       const QString& text)
    : ConstraintsCommand(state, std::move(from), state->groups(), std::move(to), state->groups(), text) {}

ConstraintsCommand::ConstraintsCommand(WorkbenchDocument* state, ConstraintMap from, LayerGroups fromGroups,
                                       ConstraintMap to, LayerGroups toGroups, const QString& text)
    : state_(state),
      from_(std::move(from)),
      to_(std::move(to)),
      fromGroups_(std::move(fromGroups)),
      toGroups_(std::move(toGroups)) {
  setText(text);
}

void ConstraintsCommand::undo() { state_->setConstraints(from_, fromGroups_); }
void ConstraintsCommand::redo() { state_->setConstraints(to_, toGroups_); }

EditActions::EditActions(WorkbenchDocument* state, QUndoStack* stack, QObject* parent)
    : QObject(parent), state_(state), stack_(stack) {}

void EditActions::beginGesture() { gesture_ = ++lastGesture_; }
void EditActions::endGesture() { gesture_ = 0; }

void EditActions::setBudget(int64_t bytes) {
  if (!state_->ready() || bytes == state_->budget()) return;
  stack_->push(new BudgetCommand(state_, state_->budget(), bytes, gesture_));
}

bool EditActions::setConstraint(int layer, const LayerConstraint& constraint, const QString& text) {
  return editConstraints(
      {layer}, [&](int, const LayerConstraint&) { return constraint; }, text);
}

bool EditActions::editConstraints(const std::vector<int>& layers,
                                  const std::function<LayerConstraint(int, const LayerConstraint&)>& edit,
                                  const QString& text) {
  if (!state_->ready() || layers.empty()) return false;
  ConstraintMap next = state_->constraints();
  for (int layer : layers) {
    if (layer < 0 || layer >= static_cast<int>(state_->layers().size())) return false;
    const std::string& name = state_->layers()[layer].name;
    const LayerConstraint c = edit(layer, state_->constraint(layer));
    if (c.empty())
      next.erase(name);
    else
      next[name] = c;
  }
  if (next == state_->constraints()) return true;
  const QString why = state_->checkConstraints(next, state_->groups());
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
  if (!state_->ready() || (state_->constraints().empty() && state_->groups().empty())) return false;
  stack_->push(
      new ConstraintsCommand(state_, state_->constraints(), state_->groups(), {}, {}, "Clear all constraints"));
  return true;
}

bool EditActions::replaceConstraints(const ConstraintMap& constraints, const LayerGroups& groups, const QString& text) {
  if (!state_->ready()) return false;
  if (constraints == state_->constraints() && groups == state_->groups()) return true;
  const QString why = state_->checkConstraints(constraints, groups);
  if (!why.isEmpty()) {
    emit problem(why);
    return false;
  }
  stack_->push(new ConstraintsCommand(state_, state_->constraints(), state_->groups(), constraints, groups, text));
  return true;
}

bool EditActions::groupLayers(const std::vector<int>& layers) {
  if (!state_->ready() || layers.size() < 2) return false;
  std::vector<std::string> group;
  for (int layer : layers) {
    if (layer < 0 || layer >= static_cast<int>(state_->layers().size())) return false;
    group.push_back(state_->layers()[layer].name);
  }
  LayerGroups next = state_->groups();
  next.push_back(group);
  return replaceConstraints(
      state_->constraints(), next,
      QString("Group %1 layers (%2, …)").arg(group.size()).arg(QString::fromStdString(group.front())));
}

bool EditActions::removeGroup(int group) {
  if (!state_->ready() || group < 0 || group >= static_cast<int>(state_->groups().size())) return false;
  LayerGroups next = state_->groups();
  next.erase(next.begin() + group);
  return replaceConstraints(state_->constraints(), next, QString("Remove layer group %1").arg(group + 1));
}
