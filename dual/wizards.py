"""Wizards of the DUAL forms (discovered by pyworkflow from this module): the button
next to a parameter fills it from the form's inputs.

Each wizard's value comes from a plain function of the protocol (no GUI), which says
why in a WizardError when the inputs cannot give one; the wizard shows that instead.
"""

from pwem.wizards import EmWizard

from dual.protocols import ProtDualPick, ProtDualTrain, ProtDualWedge


class WizardError(ValueError):
    """The form's inputs cannot give the value: the message is for the user."""


def inputTomograms(protocol):
    """The protocol's input tomograms, or a WizardError naming the missing input."""
    tomograms = protocol.inputTomograms.get()
    if tomograms is None:
        raise WizardError(
            'Choose the %s first.' % protocol.getParam('inputTomograms').label.get().lower()
        )
    return tomograms


def samplingRate(tomograms):
    """The tomograms' sampling rate (A/voxel), or a WizardError when they have none."""
    rate = tomograms.getSamplingRate()
    if not rate or rate <= 0:
        raise WizardError('The tomograms have no sampling rate; fix it on import.')
    return rate


def workingVoxelSize(protocol):
    """The working voxel size: the sampling rate of the tomograms the model will process
    (the noisy tomograms of "dual - train", the tomograms of "dual - missing wedge")."""
    return round(samplingRate(inputTomograms(protocol)), 3)


def acquisitionTiltRange(protocol):
    """(min, max) tilt angles of the input tomograms' acquisition, in degrees: the
    range "Tilt range from: tomograms' acquisition" would use for training."""
    acquisition = inputTomograms(protocol).getAcquisition()
    tilts = (acquisition.getAngleMin(), acquisition.getAngleMax()) if acquisition else (None,)
    if None in tilts:
        raise WizardError(
            'The tomograms\' acquisition has no tilt range: give it by hand, or choose '
            '"estimated from the data".'
        )
    return tuple(float(t) for t in tilts)


def diameterFromBox(protocol):
    """The particle diameter (A) of the form's box size: the box's side times the
    sampling rate of the tomograms the box refers to (the originals when given), the
    inverse of the default box (the diameter rounded up to an even number of pixels)."""
    box = protocol.boxSize.get()
    if not box:
        raise WizardError(
            'Give the box size (Output tab) first: the diameter is taken as its side in A.'
        )
    tomograms = protocol.originalTomograms.get() or inputTomograms(protocol)
    return round(box * samplingRate(tomograms), 1)


class DualWizard(EmWizard):
    """Fills its parameters (those of its _targets) with value(protocol), one value or a
    tuple of them, or says why it cannot."""

    _targets = []

    @staticmethod
    def value(protocol):
        raise NotImplementedError

    def show(self, form, *params):
        try:
            values = self.value(form.protocol)
        except WizardError as err:
            form.showInfo(str(err))
            return
        names = self._targets[0][1]
        for name, value in zip(names, values if len(names) > 1 else [values]):
            form.setVar(name, value)


class DualVoxelSizeWizard(DualWizard):
    _targets = [(ProtDualTrain, ['voxelSize']), (ProtDualWedge, ['voxelSize'])]
    value = staticmethod(workingVoxelSize)


class DualTiltRangeWizard(DualWizard):
    _targets = [(ProtDualWedge, ['tiltMin', 'tiltMax'])]
    value = staticmethod(acquisitionTiltRange)


class DualDiameterWizard(DualWizard):
    _targets = [(ProtDualPick, ['particleDiameter'])]
    value = staticmethod(diameterFromBox)
