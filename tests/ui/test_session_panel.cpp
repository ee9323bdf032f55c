// The Session panel's quantizer and moment-images settings on the offscreen platform: the moment-images box is
// enabled only with the gptq quantizer, both settings reach the document (AnalysisSettings::quantizer,
// gptq_images), are written to the session file and shown again by a window that reads it back; Fast settings keep
// them. No analysis runs.
#include <QComboBox>
#include <QPushButton>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QtTest>

#include "lorq/session/api.h"
#include "main_window.h"
#include "workbench_document.h"

using namespace lorq::api;

class SessionPanelTest : public QObject {
  Q_OBJECT
 private:
  QTemporaryDir tmp_;

 private slots:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    QVERIFY(tmp_.isValid());
  }

  void momentImagesFollowTheQuantizerAndRoundTripThroughTheSessionFile() {
    MainWindow w;
    w.setQuiet(true);
    QVERIFY(w.openDemo());
    auto* quantizer = w.findChild<QComboBox*>("quantizer");
    auto* images = w.findChild<QSpinBox*>("gptqImages");
    QVERIFY(quantizer && images);
    WorkbenchDocument* d = w.state();
    // GPTQ is the default quantizer.
    QCOMPARE(QString::fromStdString(d->settings().quantizer), QString("gptq"));
    QCOMPARE(quantizer->currentData().toString(), QString("gptq"));
    QVERIFY(images->isEnabled());
    QVERIFY(images->toolTip().contains("one float pass per 32 images"));
    QVERIFY(images->toolTip().contains("3 bits"));

    quantizer->setCurrentIndex(quantizer->findData("nearest"));
    QCOMPARE(QString::fromStdString(d->settings().quantizer), QString("nearest"));
    QVERIFY(!images->isEnabled());  // nearest rounding uses no moments
    quantizer->setCurrentIndex(quantizer->findData("gptq"));
    QCOMPARE(QString::fromStdString(d->settings().quantizer), QString("gptq"));
    QVERIFY(images->isEnabled());
    QCOMPARE(images->value(), 0);
    QCOMPARE(images->text(), QString("calibration"));  // 0: the calibration images only
    images->setValue(128);
    QCOMPARE(d->settings().gptq_images, 128);

    const QString file = QDir(tmp_.path()).filePath("moments.lorq");
    QVERIFY(w.saveSession(file));
    const SessionFile saved = load_session_file(file.toStdString());
    QCOMPARE(QString::fromStdString(saved.settings.quantizer), QString("gptq"));
    QCOMPARE(saved.settings.gptq_images, 128);

    // Another window given the file's settings (what opening the session does before it analyzes) shows them.
    MainWindow other;
    other.setQuiet(true);
    QVERIFY(other.openDemo());
    other.setSettings(saved.settings);
    auto* otherQuantizer = other.findChild<QComboBox*>("quantizer");
    auto* otherImages = other.findChild<QSpinBox*>("gptqImages");
    QCOMPARE(otherQuantizer->currentData().toString(), QString("gptq"));
    QCOMPARE(otherImages->value(), 128);
    QVERIFY(otherImages->isEnabled());

    // Fast settings keep the quantizer, its moment images and its damping (here a session file's fixed one).
    AnalysisSettings fixed = d->settings();
    fixed.gptq_damping = 0.05;
    d->setSettings(fixed);
    QPushButton* fast = nullptr;
    for (QPushButton* b : w.findChildren<QPushButton*>())
      if (b->text() == "Fast settings") fast = b;
    QVERIFY(fast);
    fast->click();
    QCOMPARE(d->settings().calibration_images, AnalysisSettings::fast().calibration_images);
    QCOMPARE(QString::fromStdString(d->settings().quantizer), QString("gptq"));
    QCOMPARE(d->settings().gptq_images, 128);
    QCOMPARE(images->value(), 128);
    QCOMPARE(d->settings().gptq_damping, 0.05);

    // Back to nearest: the box is disabled and keeps its value for a later gptq run.
    quantizer->setCurrentIndex(quantizer->findData("nearest"));
    QCOMPARE(QString::fromStdString(d->settings().quantizer), QString("nearest"));
    QVERIFY(!images->isEnabled());
    QCOMPARE(d->settings().gptq_images, 128);
  }
};

QTEST_MAIN(SessionPanelTest)
#include "test_session_panel.moc"
