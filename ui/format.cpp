#include "format.h"

#include <QStringList>

using namespace lorq::api;

QString formatConstraint(const LayerConstraint& c) {
  if (c.excluded == Exclusion::Float) return "float (excluded)";
  if (c.excluded == Exclusion::Q8) return "Q8 (excluded)";
  if (c.pinned_option >= 0) return "pinned";
  QStringList parts;
  if (c.min_bits > 0) parts << QString("≥%1 bits").arg(c.min_bits);
  if (c.max_rank == 0) parts << "no low rank";
  if (c.max_rank > 0) parts << QString("rank ≤%1").arg(c.max_rank);
  return parts.join(", ");
}

QString formatBytes(double bytes) {
  if (bytes >= 1e6) return QString("%1 MB").arg(bytes / 1e6, 0, 'f', 3);
  if (bytes >= 1e3) return QString("%1 KB").arg(bytes / 1e3, 0, 'f', 1);
  return QString("%1 B").arg(bytes, 0, 'f', 0);
}

QString optionTooltip(const OptionRow& o, int64_t params) {
  QString s = QString("<b>%1</b><br>%2 (%3 bits/weight)<br>predicted error %4 (%5)<br>local loss %6")
                  .arg(QString::fromStdString(o.label))
                  .arg(formatBytes(static_cast<double>(o.bytes)))
                  .arg(params > 0 ? 8.0 * o.bytes / params : 0.0, 0, 'f', 2)
                  .arg(o.error, 0, 'g', 4)
                  .arg(o.measured ? "measured" : "interpolated")
                  .arg(o.local_loss, 0, 'g', 4);
  if (o.on_front) s += "<br>on the Pareto front";
  return s;
}

QColor quantColor(int bits) {
  switch (bits) {
    case 2:
      return QColor(158, 202, 225);
    case 3:
      return QColor(107, 174, 214);
    case 4:
      return QColor(49, 130, 189);
    case 6:
      return QColor(8, 81, 156);
    default:
      return QColor(8, 48, 107);
  }
}

QColor lowRankColor(int bits_a, int bits_b) {
  // Hue by A bits, lightness by B bits: nine distinguishable warm colours for {4, 6, 8}².
  const int hue = bits_a <= 4 ? 10 : bits_a <= 6 ? 35 : 320;
  const int light = bits_b <= 4 ? 150 : bits_b <= 6 ? 120 : 90;
  return QColor::fromHsl(hue, 200, light);
}

QColor kindColor(const OptionRow& o) {
  return o.kind == OptionKind::Quant ? quantColor(o.bits) : lowRankColor(o.bits_a, o.bits_b);
}
