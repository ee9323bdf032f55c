#pragma once
// Shared wording and colours: how options, constraints and sizes read and look in every view.
#include <QColor>
#include <QString>

#include "lorq/session/api.h"

QString formatConstraint(const lorq::api::LayerConstraint& c);
QString optionTooltip(const lorq::api::OptionRow& o, int64_t params);
QString formatBytes(double bytes);
// Quantization in blues by bit width, low rank in warm hues by the factor bits (A/B).
QColor kindColor(const lorq::api::OptionRow& o);
QColor quantColor(int bits);
QColor lowRankColor(int bits_a, int bits_b);
