#include "constraint_menu.h"

#include <QMenu>

#include "commands.h"
#include "workbench_document.h"

using namespace lorq::api;

void addConstraintActions(QMenu* menu, EditActions* edit, int layer) {
  WorkbenchDocument* state = edit->state();
  if (!state->ready() || layer < 0 || layer >= static_cast<int>(state->layers().size())) {
    menu->addAction("Run the analysis to edit constraints")->setEnabled(false);
    return;
  }
  const LayerAnalysis& l = state->layers()[layer];
  const QString name = QString::fromStdString(l.name);
  const LayerConstraint current = state->constraint(layer);
  const int choice = state->allocation().choice[layer];

  QAction* pin = menu->addAction(QString("Pin to current choice (%1)").arg(state->choiceLabel(layer)));
  pin->setEnabled(choice != kKeepFloat && current.pinned_option != choice);
  QObject::connect(pin, &QAction::triggered, edit, [=] { edit->pinLayer(layer, choice); });

  QMenu* minBits = menu->addMenu("Minimum bits");
  for (int bits : {0, 3, 4, 6, 8}) {
    QAction* a = minBits->addAction(bits == 0 ? QString("No minimum") : QString("%1 bits").arg(bits));
    a->setCheckable(true);
    a->setChecked(current.pinned_option < 0 && current.min_bits == bits);
    QObject::connect(a, &QAction::triggered, edit, [=] {
      LayerConstraint c = current;
      c.pinned_option = -1;
      c.min_bits = bits;
      edit->setConstraint(layer, c, QString("Minimum %1 bits on %2").arg(bits).arg(name));
    });
  }

  QMenu* maxRank = menu->addMenu("Maximum rank");
  maxRank->setEnabled(l.low_rank_allowed);
  const int64_t full = l.full_rank;
  const std::pair<QString, int64_t> ranks[] = {{"No limit", -1},
                                               {"No low rank", 0},
                                               {QString("25% (%1)").arg(full / 4), full / 4},
                                               {QString("50% (%1)").arg(full / 2), full / 2},
                                               {QString("75% (%1)").arg(full * 3 / 4), full * 3 / 4}};
  for (const auto& entry : ranks) {
    const QString text = entry.first;
    const int64_t rank = entry.second;
    QAction* a = maxRank->addAction(text);
    a->setCheckable(true);
    a->setChecked(current.pinned_option < 0 && current.max_rank == rank);
    QObject::connect(a, &QAction::triggered, edit, [=] {
      LayerConstraint c = current;
      c.pinned_option = -1;
      c.max_rank = rank;
      edit->setConstraint(layer, c, QString("Maximum rank %1 on %2").arg(rank).arg(name));
    });
  }

  menu->addSeparator();
  const std::pair<QString, Exclusion> exclusions[] = {{"Keep at Q8 (exclude)", Exclusion::Q8},
                                                      {"Keep in float (exclude)", Exclusion::Float}};
  for (const auto& entry : exclusions) {
    const QString text = entry.first;
    const Exclusion ex = entry.second;
    QAction* a = menu->addAction(text);
    a->setCheckable(true);
    a->setChecked(current.excluded == ex);
    QObject::connect(a, &QAction::triggered, edit, [=](bool on) {
      LayerConstraint c;  // exclusion replaces pins and limits
      c.excluded = on ? ex : Exclusion::None;
      edit->setConstraint(layer, c, QString("%1 %2").arg(on ? text : "Include").arg(name));
    });
  }
  const int group = state->groupOf(layer);
  if (group >= 0) {
    menu->addSeparator();
    QObject::connect(
        menu->addAction(QString("Remove layer group %1 (%2 layers)").arg(group + 1).arg(state->groups()[group].size())),
        &QAction::triggered, edit, [=] { edit->removeGroup(group); });
  }
  menu->addSeparator();
  QAction* clear = menu->addAction("Clear constraints of " + name);
  clear->setEnabled(!current.empty());
  QObject::connect(clear, &QAction::triggered, edit,
                   [=] { edit->setConstraint(layer, {}, "Clear constraints of " + name); });
}

void addBulkConstraintActions(QMenu* menu, EditActions* edit, const std::vector<int>& layers) {
  WorkbenchDocument* state = edit->state();
  if (!state->ready()) {
    menu->addAction("Run the analysis to edit constraints")->setEnabled(false);
    return;
  }
  const QString n = QString("%1 layers").arg(layers.size());
  menu->addSection(QString("Constrain %1").arg(n));
  QMenu* minBits = menu->addMenu("Minimum bits");
  for (int bits : {0, 3, 4, 6, 8})
    QObject::connect(minBits->addAction(bits == 0 ? QString("No minimum") : QString("%1 bits").arg(bits)),
                     &QAction::triggered, edit, [=] {
                       edit->editConstraints(
                           layers,
                           [bits](int, LayerConstraint c) {
                             c.pinned_option = -1;
                             c.min_bits = bits;
                             return c;
                           },
                           QString("Minimum %1 bits on %2").arg(bits).arg(n));
                     });
  QMenu* maxRank = menu->addMenu("Maximum rank");
  for (const auto& [text, fraction] : std::vector<std::pair<QString, int>>{
           {"No limit", -1}, {"No low rank", 0}, {"25% of full rank", 25}, {"50% of full rank", 50}})
    QObject::connect(maxRank->addAction(text), &QAction::triggered, edit, [=, text = text, fraction = fraction] {
      std::vector<int> lowRank;  // a rank limit means nothing on a layer without low rank
      for (int l : layers)
        if (state->layers()[l].low_rank_allowed) lowRank.push_back(l);
      edit->editConstraints(
          lowRank,
          [state, fraction](int l, LayerConstraint c) {
            c.pinned_option = -1;  // each layer's own full rank sets its limit
            c.max_rank = fraction < 0 ? -1 : state->layers()[l].full_rank * fraction / 100;
            return c;
          },
          QString("Maximum rank %1 on %2").arg(text).arg(n));
    });
  menu->addSeparator();
  for (const auto& [text, ex] : std::vector<std::pair<QString, Exclusion>>{
           {"Keep at Q8 (exclude)", Exclusion::Q8}, {"Keep in float (exclude)", Exclusion::Float}})
    QObject::connect(menu->addAction(text), &QAction::triggered, edit, [=, text = text, ex = ex] {
      edit->editConstraints(
          layers,
          [ex](int, const LayerConstraint&) {
            LayerConstraint c;
            c.excluded = ex;
            return c;
          },
          QString("%1 %2").arg(text, n));
    });
  menu->addSeparator();
  QObject::connect(menu->addAction(QString("Group the %1 (same choice for all)").arg(n)), &QAction::triggered, edit,
                   [=] { edit->groupLayers(layers); });
  QObject::connect(menu->addAction(QString("Clear constraints of the %1").arg(n)), &QAction::triggered, edit, [=] {
    edit->editConstraints(
        layers, [](int, const LayerConstraint&) { return LayerConstraint(); },
        QString("Clear constraints of %1").arg(n));
  });
}
