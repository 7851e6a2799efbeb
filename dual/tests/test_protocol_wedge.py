"""ProtDualWedge on phantoms tilted -50..70: a tiny model trained in the run, then
reused by a second run; outputs keep the input's metadata and its measured Fourier
coefficients; denoising first (with a tiny denoiser) gives what compensating "dual -
denoise" outputs gives; the form rejects what the engine cannot do. Compensation quality
is tested in the engine's tests and measured in bench/."""

import json
import os

import matplotlib.pyplot as plt
import mrcfile
import numpy as np

from dual.contract import engine
from dual.protocols import ProtDualDenoise, ProtDualPhantom, ProtDualWedge
from dual.protocols.protocol_denoise import DenoiseOutputs
from dual.protocols.protocol_phantom import OUT_TOMOGRAMS
from dual.protocols.protocol_wedge import (
    DENOISED_DIR,
    RANGE_ESTIMATED,
    RANGE_GIVEN,
    WedgeOutputs,
)
from dual.tests.phantoms import SMALL_VOXEL_SIZE
from dual.tests.workflow import TINY_TRAINING, X, Y, Z, DualWorkflowTest
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
        cls._denoiser = None

    @classmethod
    def denoiser(cls):
        """A tiny denoising model (trained on the first call)."""
        if cls._denoiser is None:
            cls._denoiser = cls.runTraining()[1]
        return cls._denoiser

    @classmethod
    def newWedge(cls, tomograms=None, model=None, denoiser=None, **values):
        settings = {k: v for k, v in TINY_TRAINING.items()}
        settings.update(values)
        prot = cls.newProtocol(ProtDualWedge, **settings)
        prot.inputTomograms.set(cls.asymmetric if tomograms is None else tomograms)
        if model is not None:
            prot.useModel.set(True)
            prot.inputModel.set(model)
        if denoiser is not None:
            prot.denoisingModel.set(denoiser)
        return prot

    @staticmethod
    def readJob(prot, name):
        with open(prot._getExtraPath('%s.json' % name)) as f:
            return json.load(f)

    def test_trained_model_is_a_wedge_model_with_the_acquisition_range(self):
        self.assertEqual(self.model.getTask(), 'wedge')
        self.assertEqual(self.model.getTiltRange(), TILT_RANGE)
        self.assertEqual(self.model.getIterations(), TINY_TRAINING['iterations'])
        job = self.readJob(self.wedge, 'wedge_train')
        self.assertEqual(
            (job['tilt_range'], job['tilt_axis'], job['device']), (list(TILT_RANGE), 'y', 'cpu')
        )
        self.assertIn('missing wedge -50..70 deg', ' '.join(self.wedge.summary()))

    def test_outputs_keep_metadata_and_measured_coefficients(self):
        self.assertRegistered(self.output, self.asymmetric)
        inputs = {t.getTsId(): t.getFileName() for t in self.asymmetric}
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

    def test_denoising_first_trains_on_and_compensates_the_denoised_tomograms(self):
        prot = self.newWedge(denoiser=self.denoiser(), flipAverage=True, numberOfThreads=3)
        self.launchProtocol(prot)
        output = getattr(prot, WedgeOutputs.tomograms.name)
        self.assertRegistered(output, self.asymmetric)
        self.assertEqual(getattr(prot, WedgeOutputs.model.name).getTask(), 'wedge')
        names = sorted(t.getTsId() for t in self.asymmetric)
        denoised = {name: prot._denoisedFile(name) for name in names}
        # Each tomogram denoised by the engine (flips averaged), then the wedge model
        # trained on the denoised tomograms and applied to them (flips averaged).
        self.assertEqual(
            sorted(os.listdir(prot._getExtraPath(DENOISED_DIR))),
            sorted(os.path.basename(path) for path in denoised.values()),
        )
        job = self.readJob(prot, 'denoise_%s' % names[0])
        self.assertEqual(job['model'], os.path.abspath(self.denoiser().getPath()))
        self.assertIs(job['flip_average'], True)
        self.assertEqual(
            self.readJob(prot, 'wedge_train')['tomograms'],
            [os.path.abspath(denoised[name]) for name in names],
        )
        job = self.readJob(prot, 'wedge_%s' % names[0])
        self.assertEqual(job['inputs'], [os.path.abspath(denoised[names[0]])])
        self.assertIs(job['flip_average'], True)
        raw = {t.getTsId(): t.getFileName() for t in self.asymmetric}
        for tomo in output:
            inPath = denoised[tomo.getTsId()]
            self.assertEqual(prot.getInputFile(tomo.getTsId()), inPath)  # the viewers'
            with mrcfile.open(tomo.getFileName()) as out, mrcfile.open(inPath) as den, mrcfile.open(
                raw[tomo.getTsId()]
            ) as noisy:
                self.assertAlmostEqual(float(den.voxel_size.x), SMALL_VOXEL_SIZE, places=3)
                self.assertTrue(np.all(np.isfinite(out.data)))
                self.assertFalse(np.allclose(out.data, den.data))  # the cone was filled
                self.assertFalse(np.allclose(den.data, noisy.data))  # the denoiser ran
            # The denoised tomogram's measured coefficients are kept, not the raw one's.
            self.assertLess(measuredCoefficientsKept(inPath, tomo.getFileName(), TILT_RANGE), 1e-3)
            self.assertGreater(
                measuredCoefficientsKept(raw[tomo.getTsId()], tomo.getFileName(), TILT_RANGE),
                1e-2,
            )
        denoiseContrast = self.newProtocol(ProtDualDenoise).getOutputContrast()
        self.assertEqual(prot.getOutputContrast(), denoiseContrast)
        self.assertIn('Denoised first with', ' '.join(prot.summary()))
        methods = ' '.join(prot.methods())
        self.assertIn('first denoised with DUAL', methods)
        self.assertIn('averaged over the %d flips' % engine.FLIP_AVERAGE_COUNT, methods)
        self.assertNotIn('first denoised', ' '.join(self.wedge.methods()))
        # The wedge's default averages over the flips too (the engine's default).
        self.assertIn(
            'averaged over the %d flips' % engine.FLIP_AVERAGE_COUNT, ' '.join(self.wedge.methods())
        )

    def test_denoising_first_equals_compensating_denoise_outputs(self):
        """Raw tomograms and a denoising model, or the tomograms "dual - denoise" made
        with it: the same compensated tomograms, with the denoised contrast."""
        denoise = self.newProtocol(ProtDualDenoise, useGpu=False, flipAverage=True)
        denoise.inputModel.set(self.denoiser())
        denoise.inputTomograms.set(self.asymmetric)
        self.launchProtocol(denoise)
        fromDenoise = self.newWedge(
            tomograms=getattr(denoise, DenoiseOutputs.tomograms.name),
            model=self.model,
            flipAverage=True,
        )
        self.launchProtocol(fromDenoise)
        together = self.newWedge(model=self.model, denoiser=self.denoiser(), flipAverage=True)
        self.launchProtocol(together)
        outputs = [getattr(p, WedgeOutputs.tomograms.name) for p in (fromDenoise, together)]
        for output in outputs:
            self.assertRegistered(output, self.asymmetric)
        theirs = {t.getTsId(): t.getFileName() for t in outputs[0]}
        for tomo in outputs[1]:
            with mrcfile.open(tomo.getFileName()) as a, mrcfile.open(theirs[tomo.getTsId()]) as b:
                self.assertTrue(np.allclose(a.data, b.data, atol=1e-4))
        self.assertEqual(fromDenoise.getOutputContrast(), denoise.getOutputContrast())
        self.assertEqual(together.getOutputContrast(), denoise.getOutputContrast())

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
        self.assertError(self.newWedge(model=self.denoiser()), 'trained for the "denoise" task')

    def test_validate_denoising_model(self):
        self.assertEqual(self.newWedge(denoiser=self.denoiser()).validate(), [])
        self.assertEqual(self.newWedge(model=self.model, denoiser=self.denoiser()).validate(), [])
        # Flips about the denoiser's tilt axis (Y) do not keep a wedge about X.
        tiltX = dict(denoiser=self.denoiser(), tiltAxis=1)
        self.assertIn(
            'The denoising model was trained for tilt axis Y, the tomograms\' is X',
            ' '.join(self.newWedge(flipAverage=True, **tiltX).warnings()),
        )
        self.assertNotIn(
            'tilt axis Y', ' '.join(self.newWedge(flipAverage=False, **tiltX).warnings())
        )
        self.assertNotIn(
            'tilt axis Y',
            ' '.join(self.newWedge(denoiser=self.denoiser(), flipAverage=True).warnings()),
        )
        # A wedge model given as the denoising model: refused, before any work.
        for prot in (
            self.newWedge(denoiser=self.model),
            self.newWedge(self.asymmetric, self.model, self.model),
        ):
            self.assertError(
                prot,
                '"Denoise first with": the model was trained for the "wedge" task; it needs '
                'a model trained for "denoise"',
            )
