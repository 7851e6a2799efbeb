"""The small workflow the protocol tests build on: phantoms -> tiny training -> ...

Everything runs for real (engine included) on CPU, at sizes that take seconds.
"""

from pyworkflow.tests import setupTestProject
from tomo.objects import SetOfTomograms
from tomo.tests.test_base_centralized_layer import TestBaseCentralizedLayer

from dual.protocols import ProtDualPhantom, ProtDualTrain
from dual.protocols.protocol_phantom import (
    OUT_CLASS_MASKS,
    OUT_COORDINATES,
    OUT_GRAND_MODELS,
    OUT_TOMOGRAMS,
)
from dual.protocols.protocol_train import TrainOutputs
from dual.tests.phantoms import SMALL_SHAPE, SMALL_VOXEL_SIZE

# A DUAL model small enough to train for a few iterations in seconds on a CPU.
TINY_TRAINING = dict(
    subvolumeSize=16,
    unetWidth=4,
    unetDepth=2,
    codeSize=4,
    noiseWidth=4,
    discWidth=4,
    batchSize=2,
    iterations=4,
    logEvery=1,
    checkpointEvery=2,
    useGpu=False,
    numberOfThreads=1,
)

Z, Y, X = SMALL_SHAPE
PHANTOM_DIMENSIONS = [X, Y, Z]


class DualWorkflowTest(TestBaseCentralizedLayer):
    """A test project with two phantoms (tomograms TS_00, TS_01, their grand models,
    class masks and true coordinates)."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.phantoms = cls.newProtocol(
            ProtDualPhantom,
            numberOfPhantoms=2,
            seed=0,
            sizeX=X,
            sizeY=Y,
            sizeZ=Z,
            voxelSize=SMALL_VOXEL_SIZE,
        )
        cls.launchProtocol(cls.phantoms)
        cls.tomograms = getattr(cls.phantoms, OUT_TOMOGRAMS)
        cls.grandModels = getattr(cls.phantoms, OUT_GRAND_MODELS)
        cls.classMasks = getattr(cls.phantoms, OUT_CLASS_MASKS)
        cls.trueCoordinates = getattr(cls.phantoms, OUT_COORDINATES)

    def assertRegistered(self, output, inputs):
        """The tomograms of `output` lie on the grid of those of `inputs` (two
        phantoms): shape, sampling rate (object and MRC header), origin, acquisition
        and tsIds."""
        first = inputs.getFirstItem()
        self.checkTomograms(
            output,
            expectedSetSize=2,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=PHANTOM_DIMENSIONS,
            expectedOriginShifts=first.getOrigin().getShifts(),
            testSetAcqObj=inputs.getAcquisition(),
            testAcqObj=first.getAcquisition(),
        )
        self.assertEqual(sorted(t.getTsId() for t in output), sorted(t.getTsId() for t in inputs))

    @classmethod
    def newTraining(cls, inputModel=None, **changes):
        """ProtDualTrain (tiny) on the phantoms (noisy) and their grand models (clean)."""
        prot = cls.newProtocol(ProtDualTrain, **dict(TINY_TRAINING, **changes))
        prot.inputTomograms.set(cls.tomograms)
        prot.cleanVolumes.set(cls.grandModels)
        if inputModel is not None:
            prot.inputModel.set(inputModel)
        return prot

    @classmethod
    def runTraining(cls, inputModel=None, **changes):
        """Run newTraining(...); returns (protocol, its DualModel)."""
        prot = cls.newTraining(inputModel, **changes)
        cls.launchProtocol(prot)
        return prot, getattr(prot, TrainOutputs.model.name)


def unsavedTomogramSet(path, items=(), samplingRate=None):
    """An unsaved SetOfTomograms (for form checks): copies of `items`, with
    `samplingRate` (None: the items' own) on the set and its items."""
    outSet = SetOfTomograms(filename=path)
    for item in items:
        tomo = item.clone()
        tomo.cleanObjId()
        if samplingRate is not None:
            tomo.setSamplingRate(samplingRate)
        outSet.append(tomo)
    rate = (
        samplingRate if samplingRate is not None else (items.getSamplingRate() if items else 10.0)
    )
    outSet.setSamplingRate(rate)
    return outSet
