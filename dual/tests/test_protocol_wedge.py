"""ProtDualWedge on phantoms tilted -50..70: a tiny model trained in the run, then
reused by a second run; outputs keep the input's metadata and its measured Fourier
coefficients; the form rejects what the engine cannot do. Compensation quality is
tested in the engine's tests and measured in bench/."""

import json

import matplotlib.pyplot as plt
import mrcfile
import numpy as np

from dual.protocols import ProtDualPhantom, ProtDualWedge
from dual.protocols.protocol_phantom import OUT_TOMOGRAMS
from dual.protocols.protocol_wedge import RANGE_ESTIMATED, RANGE_GIVEN, WedgeOutputs
from dual.tests.phantoms import SMALL_VOXEL_SIZE
from dual.tests.workflow import PHANTOM_DIMENSIONS, TINY_TRAINING, X, Y, Z, DualWorkflowTest
from dual.viewers import DualTrainingViewer, DualWedgeViewer

TILT_RANGE = (-50.0, 70.0)


def measuredCoefficientsKept(inPath, outPath, tiltRange, transition=5.0):
    """Largest relative change of the Fourier coefficients measured by a tilt series
    about Y over `tiltRange` (more than `transition` degrees outside the cone)."""
    with mrcfile.open(inPath) as raw, mrcfile.open(outPath) as out:
        a, b = np.fft.rfftn(raw.data.astype(np.float64)), np.fft.rfftn(out.data.astype(np.float64))
    nz, _, nx = a.shape[0], a.shape[1], (a.shape[2] - 1) * 2
    kz, kx = np.fft.fftfreq(nz)[:, None, None], np.fft.rfftfreq(nx)[None, None, :]
    angle = (np.degrees(np.arctan2(-kz, kx)) + 90) % 180 - 90
    measured = (angle >= tiltRange[0]) & (angle <= tiltRange[1])
    measured = np.broadcast_to(measured, a.shape)
    return float(np.abs(a[measured] - b[measured]).max() / np.abs(a).max())


class TestDualWedge(DualWorkflowTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        phantoms = cls.newProtocol(
            ProtDualPhantom,
            numberOfPhantoms=2,
            seed=5,
            sizeX=X,
            sizeY=Y,
            sizeZ=Z,
            voxelSize=SMALL_VOXEL_SIZE,
            tiltMin=TILT_RANGE[0],
            tiltMax=TILT_RANGE[1],
        )
        cls.launchProtocol(phantoms)
        cls.asymmetric = getattr(phantoms, OUT_TOMOGRAMS)
        # Tilt range from the tomograms' acquisition; the model is trained in the run.
        cls.wedge = cls.newWedge(numberOfThreads=2)
        cls.launchProtocol(cls.wedge)
        cls.model = getattr(cls.wedge, WedgeOutputs.model.name)
        cls.output = getattr(cls.wedge, WedgeOutputs.tomograms.name)

    @classmethod
    def newWedge(cls, tomograms=None, model=None, **values):
        settings = {k: v for k, v in TINY_TRAINING.items()}
        settings.update(values)
        prot = cls.newProtocol(ProtDualWedge, **settings)
        prot.inputTomograms.set(cls.asymmetric if tomograms is None else tomograms)
        if model is not None:
            prot.useModel.set(True)
            prot.inputModel.set(model)
        return prot

    def test_trained_model_is_a_wedge_model_with_the_acquisition_range(self):
        self.assertEqual(self.model.getTask(), 'wedge')
        self.assertEqual(self.model.getTiltRange(), TILT_RANGE)
        self.assertEqual(self.model.getIterations(), TINY_TRAINING['iterations'])
        with open(self.wedge._getExtraPath('wedge_train.json')) as f:
            job = json.load(f)
        self.assertEqual(
            (job['tilt_range'], job['tilt_axis'], job['device']), (list(TILT_RANGE), 'y', 'cpu')
        )
        self.assertIn('missing wedge -50..70 deg', ' '.join(self.wedge.summary()))

    def test_outputs_keep_metadata_and_measured_coefficients(self):
        first = self.asymmetric.getFirstItem()
        self.checkTomograms(
            self.output,
            expectedSetSize=2,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=PHANTOM_DIMENSIONS,
            expectedOriginShifts=first.getOrigin().getShifts(),
            testSetAcqObj=self.asymmetric.getAcquisition(),
            testAcqObj=first.getAcquisition(),
        )
        inputs = {t.getTsId(): t.getFileName() for t in self.asymmetric}
        self.assertEqual(sorted(t.getTsId() for t in self.output), sorted(inputs))
        for tomo in self.output:
            with mrcfile.open(tomo.getFileName()) as out, mrcfile.open(
                inputs[tomo.getTsId()]
            ) as raw:
                self.assertTrue(np.all(np.isfinite(out.data)))
                self.assertFalse(np.allclose(out.data, raw.data))  # the cone was filled
                self.assertAlmostEqual(float(out.voxel_size.x), SMALL_VOXEL_SIZE, places=3)
            self.assertLess(
                measuredCoefficientsKept(inputs[tomo.getTsId()], tomo.getFileName(), TILT_RANGE),
                1e-3,
            )
        self.assertIn('We filled the missing wedge of 2 tomograms', ' '.join(self.wedge.methods()))

    def test_reusing_the_model_with_a_given_range(self):
        reuse = self.newWedge(
            model=self.model,
            tiltRangeSource=RANGE_GIVEN,
            tiltMin=TILT_RANGE[0],
            tiltMax=TILT_RANGE[1],
        )
        self.launchProtocol(reuse)
        output = getattr(reuse, WedgeOutputs.tomograms.name)
        self.assertEqual(output.getSize(), 2)
        self.assertIsNone(getattr(reuse, WedgeOutputs.model.name, None))
        # Same model, same range: the same result as the run that trained it.
        ours = {t.getTsId(): t.getFileName() for t in self.output}
        for tomo in output:
            with mrcfile.open(tomo.getFileName()) as a, mrcfile.open(ours[tomo.getTsId()]) as b:
                self.assertTrue(np.allclose(a.data, b.data, atol=1e-4))

    def test_viewers_draw(self):
        viewer = DualWedgeViewer(project=self.proj, protocol=self.wedge)
        viewer.setProtocol(self.wedge)
        figure = viewer._showBeforeAfter()[0].getFigure()
        self.assertEqual(len(figure.axes), 8)
        plt.close(figure)
        curves = DualTrainingViewer(project=self.proj)._visualize(self.wedge)[0].getFigure()
        self.assertGreater(len(curves.axes), 0)
        plt.close(curves)

    # --------------------------- form checks -----------------------------
    def assertError(self, prot, text):
        errors = prot.validate()
        self.assertTrue(any(text in e for e in errors), 'no error with %r in %s' % (text, errors))

    def test_validate(self):
        self.assertEqual(self.newWedge().validate(), [])
        self.assertEqual(self.newWedge(tiltRangeSource=RANGE_ESTIMATED).validate(), [])
        self.assertError(
            self.newWedge(tiltRangeSource=RANGE_GIVEN, tiltMin=-40.0, tiltMax=40.0),
            'needs min <= -45 and max >= 45',
        )
        self.assertError(
            self.newWedge(tiltRangeSource=RANGE_GIVEN, tiltMin=30.0, tiltMax=-30.0), 'must satisfy'
        )
        self.assertError(self.newWedge(subvolumeSize=20), 'multiple of 8')
        prot = self.newWedge()
        prot.useModel.set(True)
        self.assertError(prot, 'Choose the missing-wedge model')

    def test_validate_rejects_a_denoising_model(self):
        _, denoiser = self.runTraining()
        self.assertError(self.newWedge(model=denoiser), 'trained for the "denoise" task')
