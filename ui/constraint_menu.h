#pragma once
// The per-layer constraint menu shared by the layers table and the allocation bars: pin to the current choice,
// minimum bits, maximum rank, keep at Q8 / in float, clear. Every entry goes through EditActions (undoable).
#include <vector>

class EditActions;
class QMenu;

void addConstraintActions(QMenu* menu, EditActions* edit, int layer);
// One constraint for several layers at once (one undo step each), and grouping them (same choice for all).
void addBulkConstraintActions(QMenu* menu, EditActions* edit, const std::vector<int>& layers);
