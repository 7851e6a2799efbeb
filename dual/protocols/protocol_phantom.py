import os

from pyworkflow import BETA
from pyworkflow.protocol import STEPS_PARALLEL
import pyworkflow.protocol.params as params
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import (
    Coordinate3D,
    SetOfCoordinates3D,
    SetOfTomograms,
    SetOfTomoMasks,
    Tomogram,
    TomoAcquisition,
    TomoMask,
)

from dual.contract import engine, sentence
from dual.convert import defaultBoxSize
from dual.protocols.protocol_base import ProtDualBase


# Two outputs of one type: an Enum would alias them, so names are constants and
# _possibleOutputs is a dict.
OUT_TOMOGRAMS = 'tomograms'
OUT_GRAND_MODELS = 'grandModels'
OUT_CLASS_MASKS = 'classMasks'
OUT_COORDINATES = 'coordinates'


# The engine's phantom defaults, shown in the form (outdir is the only required option).
PHANTOM = engine.PhantomOptions(outdir='')


class ProtDualPhantom(ProtDualBase):
    """Simulates cryo-ET phantoms with their ground truth, in the SHREC 2021 layout.

    Each phantom is a slab of cytoplasm with vesicles, gold fiducials and several
    macromolecule classes, imaged as a tilt series about Y (CTF, dose-limited noise)
    and reconstructed by weighted back-projection, so it has a missing wedge and a
    realistically low SNR. Outputs: the tomograms, their noise-free grand models and
    class masks (same tsIds), and the true particle positions as coordinates on the
    tomograms (group id = class id of class_conversion_table.txt); the SHREC files of
    each phantom are in extra/<tsId>/. Use them to test a pipeline against known ground
    truth, as DUAL training data, or as labelled maps for "dual - simulate tomograms".
    """

    _label = 'simulate phantoms'
    _devStatus = BETA
    _possibleOutputs = {
        OUT_TOMOGRAMS: SetOfTomograms,
        OUT_GRAND_MODELS: SetOfTomograms,
        OUT_CLASS_MASKS: SetOfTomoMasks,
        OUT_COORDINATES: SetOfCoordinates3D,
    }
    stepsExecutionMode = STEPS_PARALLEL

    def getOutputContrast(self):
        """The simulator writes density contrast: dense = bright."""
        return 'bright'

    def _defineParams(self, form):
        form.addSection(label='Phantoms')
        form.addParam(
            'numberOfPhantoms',
            params.IntParam,
            default=2,
            validators=[params.Positive],
            label='Number of phantoms',
        )
        form.addParam(
            'seed',
            params.IntParam,
            default=0,
            label='Random seed',
            help='Phantom i is simulated with seed + i: same seed, same phantoms.',
        )
        line = form.addLine('Size (voxels)', help='Z is the slab thickness direction (beam axis).')
        line.addParam('sizeX', params.IntParam, default=PHANTOM.shape[2], label='X')
        line.addParam('sizeY', params.IntParam, default=PHANTOM.shape[1], label='Y')
        line.addParam('sizeZ', params.IntParam, default=PHANTOM.shape[0], label='Z')
        form.addParam(
            'voxelSize',
            params.FloatParam,
            default=PHANTOM.voxel_size,
            validators=[params.Positive],
            label='Voxel size (A)',
        )

        form.addSection(label='Acquisition')
        line = form.addLine('Tilt range (deg)')
        line.addParam('tiltMin', params.FloatParam, default=PHANTOM.tilt_range[0], label='min')
        line.addParam('tiltMax', params.FloatParam, default=PHANTOM.tilt_range[1], label='max')
        form.addParam(
            'tiltStep',
            params.FloatParam,
            default=PHANTOM.tilt_step,
            validators=[params.Positive],
            label='Tilt step (deg)',
        )
        form.addParam(
            'defocus',
            params.FloatParam,
            default=PHANTOM.defocus,
            label='Defocus (um)',
            help='Underfocus is positive.',
        )
        form.addParam(
            'dose',
            params.FloatParam,
            default=PHANTOM.dose,
            validators=[params.Positive],
            label='Total dose (e/A^2)',
            help='Spread evenly over the tilts.',
        )
        form.addParam('voltage', params.FloatParam, default=PHANTOM.voltage, label='Voltage (kV)')
        form.addParam('sphericalAberration', params.FloatParam, default=PHANTOM.cs, label='Cs (mm)')
        form.addParam(
            'amplitudeContrast',
            params.FloatParam,
            default=PHANTOM.amplitude_contrast,
            label='Amplitude contrast',
        )
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- STEPS ------------------------------------
    def _insertAllSteps(self):
        steps = [
            self._insertFunctionStep(self.simulateStep, index, prerequisites=[], needsGPU=False)
            for index in range(self.numberOfPhantoms.get())
        ]
        self._insertFunctionStep(self.createOutputStep, prerequisites=steps, needsGPU=False)

    def getTsId(self, index):
        return 'TS_%02d' % (self.seed.get() + index)

    def _phantomDir(self, index):
        return self._getExtraPath(self.getTsId(index))

    def simulateStep(self, index):
        job = dict(
            self._phantomSettings(),
            outdir=os.path.abspath(self._phantomDir(index)),
            seed=self.seed.get() + index,
            halves=True,  # the tomograms' even/odd halves (ProtDualTrain's noise model)
        )
        self.runEngineJob('phantom', job, 'phantom_%s' % self.getTsId(index))

    def _phantomSettings(self):
        """The engine's phantom options set in the form."""
        return {
            'shape': [self.sizeZ.get(), self.sizeY.get(), self.sizeX.get()],
            'voxel_size': self.voxelSize.get(),
            'tilt_range': [self.tiltMin.get(), self.tiltMax.get()],
            'tilt_step': self.tiltStep.get(),
            'defocus': self.defocus.get(),
            'dose': self.dose.get(),
            'voltage': self.voltage.get(),
            'cs': self.sphericalAberration.get(),
            'amplitude_contrast': self.amplitudeContrast.get(),
        }

    def _acquisition(self):
        acq = TomoAcquisition(
            angleMin=self.tiltMin.get(), angleMax=self.tiltMax.get(), step=self.tiltStep.get()
        )
        acq.setVoltage(self.voltage.get())
        acq.setSphericalAberration(self.sphericalAberration.get())
        acq.setAmplitudeContrast(self.amplitudeContrast.get())
        acq.setAccumDose(self.dose.get())
        acq.setTiltAxisAngle(0.0)  # tilt axis along Y
        return acq

    def _newSet(self, suffix):
        outSet = self._createSetOfTomograms(suffix)
        outSet.setSamplingRate(self.voxelSize.get())
        outSet.setAcquisition(self._acquisition())
        return outSet

    def createOutputStep(self):
        tomograms, grandModels = self._newSet('Phantoms'), self._newSet('GrandModels')
        classMasks = SetOfTomoMasks.create(self._getPath(), prefix='ClassMasks')
        classMasks.setSamplingRate(self.voxelSize.get())
        for index in range(self.numberOfPhantoms.get()):
            for outSet, name in (
                (tomograms, 'reconstruction.mrc'),
                (grandModels, 'grandmodel.mrc'),
            ):
                item = self._phantomFile(index, name)
                if outSet is tomograms:  # Scipion's order of half maps: odd, even
                    item.setHalfMaps(
                        [
                            os.path.join(self._phantomDir(index), 'reconstruction_%s.mrc' % half)
                            for half in ('odd', 'even')
                        ]
                    )
                outSet.append(item)
            mask = TomoMask()
            mask.copyInfo(self._phantomFile(index, 'reconstruction.mrc'))
            mask.setFileName(os.path.join(self._phantomDir(index), 'class_mask.mrc'))
            mask.setVolName(os.path.join(self._phantomDir(index), 'reconstruction.mrc'))
            classMasks.append(mask)
        self._defineOutputs(
            **{OUT_TOMOGRAMS: tomograms, OUT_GRAND_MODELS: grandModels, OUT_CLASS_MASKS: classMasks}
        )
        self._defineOutputs(**{OUT_COORDINATES: self._trueCoordinates(tomograms)})

    def _phantomFile(self, index, name):
        """A volume of phantom `index` as a Tomogram (its tsId, voxel size, acquisition)."""
        tomo = Tomogram(location=os.path.join(self._phantomDir(index), name))
        tomo.setSamplingRate(self.voxelSize.get())
        tomo.setTsId(self.getTsId(index))
        tomo.setAcquisition(self._acquisition())
        tomo.setOrigin()  # centred, in A
        return tomo

    def _trueCoordinates(self, tomograms):
        """The macromolecules of particle_locations.txt (voxels of the tomogram's grid,
        0-based: Scipion's BOTTOM_LEFT_CORNER) as coordinates on the tomograms."""
        coords = self._createSetOfCoordinates3D(tomograms)
        coords.setSamplingRate(self.voxelSize.get())
        coords.setBoxSize(defaultBoxSize(engine.PHANTOM_PARTICLE_BOX, self.voxelSize.get()))
        byTsId = {tomo.getTsId(): tomo.clone() for tomo in tomograms}
        for index in range(self.numberOfPhantoms.get()):
            tomo, folder = byTsId[self.getTsId(index)], self._phantomDir(index)
            classIds = self._classIds(folder)
            for particle in engine.read_particle_locations(
                os.path.join(folder, 'particle_locations.txt')
            ):
                if particle.name in engine.PHANTOM_CONTEXT_CLASSES:
                    continue  # vesicles and fiducials are not particles to average
                coord = Coordinate3D()
                coord.setVolume(tomo)
                coord.setPosition(particle.x, particle.y, particle.z, BOTTOM_LEFT_CORNER)
                coord.setGroupId(classIds[particle.name])
                coords.append(coord)
        return coords

    @staticmethod
    def _classIds(folder):
        """{class name: id} of the phantom's class_conversion_table.txt."""
        with open(os.path.join(folder, 'class_conversion_table.txt')) as f:
            rows = [line.split() for line in f if line.strip()]
        return {name: int(value) for name, value in rows}

    # --------------------------- INFO ------------------------------------
    def _validate(self):
        errors = []
        error = engine.check_values('phantom', **self._phantomSettings())
        if error:
            errors.append(sentence(error))
        if self.tiltMin.get() >= self.tiltMax.get():
            errors.append('The minimum tilt must be below the maximum tilt.')
        if self.tiltMin.get() <= -90 or self.tiltMax.get() >= 90:
            errors.append('Tilt angles must lie strictly between -90 and 90 degrees.')
        # The largest particle class is ~31 nm across and must fit in the slab.
        voxel = self.voxelSize.get()
        if self.sizeZ.get() * voxel < 400 or min(self.sizeX.get(), self.sizeY.get()) * voxel < 640:
            errors.append(
                'The phantom is too small to hold its particles: it needs at '
                'least 400 A in Z and 640 A in X and Y (now %d x %d x %d voxels '
                'of %.2f A).' % (self.sizeX.get(), self.sizeY.get(), self.sizeZ.get(), voxel)
            )
        return errors

    def _summary(self):
        if not self.isFinished():
            return ['Simulating %d phantom(s).' % self.numberOfPhantoms.get()]
        return [
            '%d phantom tomogram(s) of %d x %d x %d voxels at %.2f A/voxel, '
            'tilts %g..%g step %g, with their grand models. Ground-truth masks and '
            'particle lists: %s'
            % (
                self.numberOfPhantoms.get(),
                self.sizeX.get(),
                self.sizeY.get(),
                self.sizeZ.get(),
                self.voxelSize.get(),
                self.tiltMin.get(),
                self.tiltMax.get(),
                self.tiltStep.get(),
                self._getExtraPath(),
            )
        ]

    def _methods(self):
        return [
            'We simulated %d phantom tomograms (%d x %d x %d voxels, %.2f A/voxel) with '
            'the DUAL plugin\'s physics simulator [Zeng2023DUAL]: a tilt series from %g to '
            '%g degrees every %g degrees with a CTF at %g um defocus (%g kV, Cs %g mm) '
            'and a total dose of %g e/A^2, reconstructed by weighted back-projection.'
            % (
                self.numberOfPhantoms.get(),
                self.sizeX.get(),
                self.sizeY.get(),
                self.sizeZ.get(),
                self.voxelSize.get(),
                self.tiltMin.get(),
                self.tiltMax.get(),
                self.tiltStep.get(),
                self.defocus.get(),
                self.voltage.get(),
                self.sphericalAberration.get(),
                self.dose.get(),
            )
        ]

    def _citations(self):
        return ['Zeng2023DUAL', 'Gubins2021SHREC']
