"""The form wizards (dual/wizards.py): Scipion finds them for their parameters, and each
one's value, computed from real input sets of the phantoms' project, without a GUI."""

from pyworkflow.plugin import Domain
from pyworkflow.wizard import DESKTOP_TKINTER

from dual.protocols import ProtDualDenoise, ProtDualPick, ProtDualTrain, ProtDualWedge
from dual.tests.workflow import TINY_TRAINING, DualWorkflowTest, unsavedTomogramSet
from dual.wizards import (
    DualDiameterWizard,
    DualTiltRangeWizard,
    DualVoxelSizeWizard,
    WizardError,
    acquisitionTiltRange,
    diameterFromBox,
    workingVoxelSize,
)


class FakeForm:
    """What a wizard's show() uses of Scipion's form window: its protocol, setVar and
    showInfo."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.values, self.infos = {}, []

    def setVar(self, name, value):
        self.values[name] = value

    def showInfo(self, message):
        self.infos.append(message)


class TestDualWizards(DualWorkflowTest):
    def tomogramsAt(self, name, samplingRate=None, tiltRange=None):
        """A copy of the phantom tomograms with another sampling rate or tilt range."""
        tomograms = unsavedTomogramSet(
            self.getOutputPath('%s.sqlite' % name), items=self.tomograms, samplingRate=samplingRate
        )
        tomograms.setAcquisition(self.tomograms.getAcquisition().clone())
        if tiltRange is not None:
            tomograms.getAcquisition().setAngleMin(tiltRange[0])
            tomograms.getAcquisition().setAngleMax(tiltRange[1])
        return tomograms

    def test_scipion_finds_the_wizards(self):
        def wizards(cls):
            return Domain.findWizards(cls(), DESKTOP_TKINTER)

        self.assertEqual(wizards(ProtDualTrain), {'voxelSize': DualVoxelSizeWizard})
        self.assertEqual(
            wizards(ProtDualWedge),
            {
                'voxelSize': DualVoxelSizeWizard,
                'tiltMin': DualTiltRangeWizard,
                'tiltMax': DualTiltRangeWizard,
            },
        )
        self.assertEqual(wizards(ProtDualPick), {'particleDiameter': DualDiameterWizard})
        self.assertEqual(wizards(ProtDualDenoise), {})

    def test_working_voxel_size_is_the_tomograms_sampling_rate(self):
        train = self.newTraining()
        self.assertEqual(workingVoxelSize(train), self.tomograms.getSamplingRate())
        train.inputTomograms.set(self.tomogramsAt('rate', samplingRate=13.68))
        self.assertEqual(workingVoxelSize(train), 13.68)
        wedge = self.newProtocol(ProtDualWedge, **TINY_TRAINING)
        with self.assertRaisesRegex(WizardError, 'Choose the tomograms first'):
            workingVoxelSize(wedge)
        wedge.inputTomograms.set(self.tomogramsAt('rate_wedge', samplingRate=4.4))
        self.assertEqual(workingVoxelSize(wedge), 4.4)
        # The wizard writes it into the form.
        form = FakeForm(train)
        DualVoxelSizeWizard().show(form)
        self.assertEqual(form.values, {'voxelSize': 13.68})

    def test_tilt_range_is_the_tomograms_acquisition(self):
        wedge = self.newProtocol(ProtDualWedge, **TINY_TRAINING)
        wedge.inputTomograms.set(self.tomograms)
        acquisition = self.tomograms.getAcquisition()
        self.assertEqual(
            acquisitionTiltRange(wedge), (acquisition.getAngleMin(), acquisition.getAngleMax())
        )
        wedge.inputTomograms.set(self.tomogramsAt('tilts', tiltRange=(-50.0, 70.0)))
        self.assertEqual(acquisitionTiltRange(wedge), (-50.0, 70.0))
        form = FakeForm(wedge)
        DualTiltRangeWizard().show(form)
        self.assertEqual(form.values, {'tiltMin': -50.0, 'tiltMax': 70.0})
        # An acquisition without a tilt range: the wizard says so, the form is untouched.
        wedge.inputTomograms.set(self.tomogramsAt('no_tilts', tiltRange=(None, None)))
        form = FakeForm(wedge)
        DualTiltRangeWizard().show(form)
        self.assertEqual(form.values, {})
        self.assertIn('has no tilt range', form.infos[0])

    def test_particle_diameter_is_the_box_in_angstrom(self):
        pick = self.newProtocol(ProtDualPick)
        pick.inputTomograms.set(self.tomograms)
        with self.assertRaisesRegex(WizardError, 'Give the box size'):
            diameterFromBox(pick)
        pick.boxSize.set(28)  # px of the picked tomograms, 10 A
        self.assertEqual(diameterFromBox(pick), 280.0)
        # With original tomograms, the box is in their pixels.
        pick.originalTomograms.set(self.tomogramsAt('originals', samplingRate=5.0))
        self.assertEqual(diameterFromBox(pick), 140.0)
        form = FakeForm(pick)
        DualDiameterWizard().show(form)
        self.assertEqual(form.values, {'particleDiameter': 140.0})
