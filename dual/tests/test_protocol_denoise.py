"""ProtDualDenoise with a tiny model trained on phantoms: output tomograms keep the
input's metadata; the form rejects bad inputs; the viewer draws. The tiny model does
not denoise well: quality is not tested here."""

import json
import os

import matplotlib.pyplot as plt
import mrcfile
import numpy as np
from pyworkflow.plugin import Domain

from dual.constants import DUAL_ENV_ACTIVATION
from dual.contract import engine
from dual.objects import DualModel
from dual.protocols import ProtDualDenoise
from dual.protocols.protocol_denoise import DenoiseOutputs
from dual.tests.workflow import DualWorkflowTest, unsavedTomogramSet
from dual.viewers import DualDenoiseViewer

Plugin = Domain.getPlugin('dual').Plugin


class TestDualDenoise(DualWorkflowTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.train, cls.model = cls.runTraining()
        cls.denoise = cls.newDenoise(numberOfThreads=3)  # two tomograms at a time
        cls.launchProtocol(cls.denoise)
        cls.denoised = getattr(cls.denoise, DenoiseOutputs.tomograms.name)

    @classmethod
    def newDenoise(cls, model=None, tomograms=None, **values):
        prot = cls.newProtocol(ProtDualDenoise, **dict(dict(useGpu=False), **values))
        prot.inputModel.set(cls.model if model is None else model)
        prot.inputTomograms.set(cls.tomograms if tomograms is None else tomograms)
        return prot

    def test_denoised_tomograms_keep_the_input_metadata(self):
        self.assertRegistered(self.denoised, self.tomograms)
        inputs = {t.getTsId(): t.clone() for t in self.tomograms}
        for tomo in self.denoised:
            original = inputs[tomo.getTsId()]
            self.assertEqual(
                tomo.getAcquisition().getAngleMax(), original.getAcquisition().getAngleMax()
            )
            with mrcfile.open(tomo.getFileName()) as out, mrcfile.open(
                original.getFileName()
            ) as raw:
                self.assertEqual(out.data.dtype, np.float32)
                self.assertTrue(np.all(np.isfinite(out.data)))
                self.assertFalse(np.allclose(out.data, raw.data))  # the network ran
        # One engine job per tomogram, on the CPU, with the Scipion voxel size.
        with open(self.denoise._getExtraPath('denoise_TS_00.json')) as f:
            job = json.load(f)
        self.assertEqual((job['device'], job['voxel_size'], job['tile']), ('cpu', 10.0, 160))
        self.assertIn('2 of 2 tomograms denoised', ' '.join(self.denoise.summary()))
        self.assertIn('We denoised 2 tomograms', ' '.join(self.denoise.methods()))

    def test_flip_average_keeps_the_grid_and_changes_the_output(self):
        """Averaged over the wedge-preserving flips: the input's shape, sampling rate and
        tsIds, another (averaged) denoised tomogram than the plain run's."""
        prot = self.newDenoise(flipAverage=True)
        self.launchProtocol(prot)
        averaged = getattr(prot, DenoiseOutputs.tomograms.name)
        self.assertRegistered(averaged, self.tomograms)
        plain = {t.getTsId(): t.getFileName() for t in self.denoised}
        for tomo in averaged:
            with mrcfile.open(tomo.getFileName()) as a, mrcfile.open(plain[tomo.getTsId()]) as b:
                self.assertEqual(a.data.shape, b.data.shape)
                self.assertTrue(np.all(np.isfinite(a.data)))
                self.assertFalse(np.allclose(a.data, b.data, atol=1e-4))
        for run, expected in ((prot, True), (self.denoise, False)):
            with open(run._getExtraPath('denoise_TS_00.json')) as f:
                self.assertIs(json.load(f)['flip_average'], expected)
        flips = 'averaged over the %d flips' % engine.FLIP_AVERAGE_COUNT
        self.assertIn(flips, ' '.join(prot.methods()))
        self.assertNotIn('flips', ' '.join(self.denoise.methods()))

    def test_denoised_tomograms_do_not_carry_the_input_half_maps(self):
        """Input tomograms with even/odd half maps: the denoised ones have none (the
        halves are the raw ones; an even/odd tool would pair them with a volume they
        were not made from)."""
        withHalves = self.phantoms._createSetOfTomograms('WithHalves')
        withHalves.copyInfo(self.tomograms)
        for tomo in self.tomograms:
            tomo = tomo.clone()
            tomo.cleanObjId()
            tomo.setHalfMaps([tomo.getFileName(), tomo.getFileName()])  # stand-ins
            withHalves.append(tomo)
        withHalves.write()
        self.phantoms._defineOutputs(withHalves=withHalves)
        self.proj._storeProtocol(self.phantoms)
        self.assertTrue(self.phantoms.withHalves.hasOddEven())

        prot = self.newDenoise(numberOfThreads=1)
        prot.inputTomograms.set(self.phantoms)
        prot.inputTomograms.setExtended('withHalves')
        self.launchProtocol(prot)
        denoised = getattr(prot, DenoiseOutputs.tomograms.name)
        self.assertEqual(denoised.getSize(), 2)
        self.assertFalse(denoised.hasOddEven())
        for tomo in denoised:
            self.assertFalse(tomo.hasHalfMaps(), tomo.getHalfMaps())

    def test_output_header_sampling_rate_is_enforced(self):
        path = self.getOutputPath('wrong_header.mrc')
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(np.zeros((8, 8, 8), dtype=np.float32))
            mrc.voxel_size = 1.0
        ProtDualDenoise._setHeaderSamplingRate(path, 13.68)
        with mrcfile.open(path) as mrc:
            self.assertAlmostEqual(float(mrc.voxel_size.x), 13.68, places=2)

    def test_viewer_draws_before_and_after(self):
        viewer = DualDenoiseViewer(project=self.proj, protocol=self.denoise)
        viewer.setProtocol(self.denoise)
        views = viewer._showBeforeAfter()
        self.assertEqual(len(views), 1)
        figure = views[0].getFigure()
        self.assertEqual(len(figure.axes), 8)  # 2 rows: slices XY, XZ and their spectra
        plt.close(figure)

    def test_viewer_moves_through_the_volume_and_hands_it_to_the_tomo_viewer(self):
        viewer = DualDenoiseViewer(project=self.proj, protocol=self.denoise)
        viewer.setProtocol(self.denoise)
        viewer.zPercent.set(0.0)  # the first XY slice, the last XZ slice
        viewer.yPercent.set(100.0)
        tsId = viewer._chosenTsId()
        figure = viewer._showBeforeAfter()[0].getFigure()
        with mrcfile.open(self.denoise.getInputFile(tsId), permissive=True) as mrc:
            raw = np.asarray(mrc.data)
        xy, xz = (figure.axes[i].images[0].get_array() for i in (0, 1))
        np.testing.assert_array_equal(xy, raw[0])
        np.testing.assert_array_equal(xz, raw[:, -1, :])
        self.assertIn('z = 0 of', figure.axes[0].get_xlabel())
        plt.close(figure)
        views = viewer._showInTomoViewer()
        self.assertEqual(type(views[0]).__name__, 'TomoObjectDialogView')
        self.assertEqual(views[0]._setOfObjects.getObjId(), self.denoised.getObjId())

    def test_cpu_threads_are_shared_by_the_tomograms_run_at_once(self):
        # threads T: T - 1 tomograms at a time (one if T = 1), T // that many threads each
        for threads, perTomogram in ((1, 1), (2, 2), (3, 1), (8, 1)):
            self.assertEqual(self.newDenoise(numberOfThreads=threads)._engineThreads(), perTomogram)
        self.assertEqual(self.newTraining(numberOfThreads=4)._engineThreads(), 4)

    # --------------------------- form checks -----------------------------
    def assertError(self, prot, text):
        errors = prot.validate()
        self.assertTrue(any(text in e for e in errors), 'no error with %r in %s' % (text, errors))

    def modelLike(self, **changes):
        """A DualModel like the trained one, with some values changed."""
        values = dict(
            path=self.model.getPath(),
            voxelSize=self.model.getVoxelSize(),
            subvolumeSize=self.model.getSubvolumeSize(),
            iterations=self.model.getIterations(),
        )
        values.update(changes)
        return DualModel(**values)

    def test_validate_accepts_the_phantoms(self):
        self.assertEqual(self.newDenoise().validate(), [])

    def test_validate_rejects_a_model_at_another_voxel_size(self):
        self.assertError(
            self.newDenoise(self.modelLike(voxelSize=25.0)),
            'but the model works at 25 A/voxel, 2.5x apart',
        )

    def test_validate_rejects_volumes_smaller_than_a_subvolume(self):
        self.assertError(
            self.newDenoise(self.modelLike(subvolumeSize=64)), 'smaller than the 64^3 subvolumes'
        )

    def test_validate_rejects_a_missing_model_file(self):
        self.assertError(
            self.newDenoise(self.modelLike(path='/no/such/model.pt')), 'does not exist'
        )

    def test_validate_rejects_an_empty_set(self):
        empty = unsavedTomogramSet(self.getOutputPath('empty.sqlite'))
        self.assertError(self.newDenoise(tomograms=empty), 'Input volumes: the set is empty')

    def test_validate_rejects_a_missing_engine(self):
        saved = Plugin.getVar(DUAL_ENV_ACTIVATION)
        Plugin._vars[DUAL_ENV_ACTIVATION] = 'source /no/such/venv/bin/activate'
        try:
            self.assertError(self.newDenoise(), 'The DUAL engine does not run')
        finally:
            Plugin._vars[DUAL_ENV_ACTIVATION] = saved

    def test_warnings_flag_an_undertrained_model(self):
        warnings = ' '.join(self.newDenoise().warnings())
        self.assertIn('trained for only 4 iterations', warnings)
        self.assertIn('CPU', warnings)
        self.assertTrue(os.path.exists(self.model.getPath()))
