#pragma once
// The per-layer constraint menu shared by the layers table and the allocation bars: pin to the current choice,
// minimum bits, maximum rank, keep at Q8 / in float, clear. Every entry goes through EditActions (undoable).
class EditActions;
class QMenu;

void addConstraintActions(QMenu* menu, EditActions* edit, int layer);
