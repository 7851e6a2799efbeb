"""ProtDualTrain on phantoms: the model output, continuing from a model, resuming a
run in Continue mode, and the form's checks. The real engine trains (tiny, on CPU)."""

import json
import os

import matplotlib.pyplot as plt
from pyworkflow.plugin import Domain

from dual.constants import DUAL_ENV_ACTIVATION
from dual.contract import engine
from dual.convert import LOSS_KEYS, SIGNAL_KEYS, readTrainingLog
from dual.objects import DualModel
from dual.tests.workflow import DualWorkflowTest, unsavedTomogramSet
from dual.viewers import DualTrainingViewer

Plugin = Domain.getPlugin('dual').Plugin


def readJob(prot, name):
    with open(prot._getExtraPath('%s.json' % name)) as f:
        return json.load(f)


def logIterations(prot):
    return [r['iteration'] for r in readTrainingLog(prot.getTrainingLogFile())]


class TestDualTrain(DualWorkflowTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.train, cls.model = cls.runTraining()

    # --------------------------- runs ------------------------------------
    def test_training_outputs_a_model(self):
        model = self.model
        self.assertIsInstance(model, DualModel)
        self.assertEqual(model.getPath(), self.train._getExtraPath('training', engine.MODEL_FILE))
        self.assertTrue(os.path.exists(model.getPath()))
        # The values come from the model file, read by the engine.
        self.assertEqual(
            (model.getVoxelSize(), model.getSubvolumeSize(), model.getIterations()), (10.0, 16, 4)
        )
        info = model.getTrainingInfo()
        self.assertEqual(set(info['final_losses']), set(LOSS_KEYS))
        self.assertEqual(len(info['noisy_volumes']), 2)
        self.assertEqual(info['device'], 'cpu')
        # Progress: one log record per iteration, with losses and ETA.
        records = readTrainingLog(self.train.getTrainingLogFile())
        self.assertEqual([r['iteration'] for r in records], [1, 2, 3, 4])
        self.assertTrue(all('eta_seconds' in r and 'loss' in r for r in records))
        # The job file can re-run the training by hand.
        job = readJob(self.train, 'train')
        self.assertEqual((job['device'], job['processes'], job['resume']), ('cpu', 1, True))
        self.assertEqual((job['subvolume_size'], job['unet_width']), (16, 4))
        self.assertIn('DUAL model trained for 4 iterations', ' '.join(self.train.summary()))
        # The phantoms carry even/odd halves: the noise model measured its share on them,
        # each tomogram's two halves linked in the tomograms' order.
        self.assertEqual(info['noise_share'], 'even/odd halves')
        self.assertEqual(len(job['noisy_halves']), 4)
        for tomogram, pair in zip(job['noisy'], (job['noisy_halves'][:2], job['noisy_halves'][2:])):
            tsId = os.path.basename(os.path.dirname(os.path.realpath(tomogram)))
            self.assertEqual(
                {os.path.basename(os.path.dirname(os.path.realpath(h))) for h in pair}, {tsId}
            )
        self.assertIn(
            "measured on the noisy tomograms' even/odd halves", ' '.join(self.train.summary())
        )
        self.assertIn('We trained DUAL', ' '.join(self.train.methods()))

    def test_without_halves_the_learned_simulator_gives_the_share(self):
        prot = self.newTraining(iterations=1)
        prot.inputTomograms.set(self.grandModels)  # a set without half maps
        self.launchProtocol(prot)
        info = getattr(prot, 'model').getTrainingInfo()
        self.assertEqual(info['noise_share'], 'learned simulator')
        self.assertNotIn('noisy_halves', readJob(prot, 'train'))

    def test_continue_from_model_counts_on(self):
        prot, model = self.runTraining(
            self.model, continueTraining=True, iterations=3, subvolumeSize=24
        )  # ignored: the model's settings win
        self.assertEqual(model.getIterations(), 7)
        self.assertEqual(model.getSubvolumeSize(), 16)
        # The new run's log starts where the first model stopped.
        self.assertEqual(logIterations(prot), [5, 6, 7])
        self.assertNotIn('subvolume_size', readJob(prot, 'train'))

    def test_continue_mode_resumes_from_checkpoint(self):
        prot, model = self.runTraining(iterations=2)
        self.assertEqual(logIterations(prot), [1, 2])
        # Continue (not Restart) with more iterations: the train step runs again and the
        # engine resumes from extra/training/checkpoint.pt instead of starting over.
        prot.iterations.set(4)
        self.launchProtocol(prot)
        model = getattr(prot, 'model')
        self.assertEqual(model.getIterations(), 4)
        self.assertEqual(logIterations(prot), [1, 2, 3, 4])
        with open(prot.getStdoutLog()) as f:
            self.assertIn('Continuing from iteration 2 (checkpoint)', f.read())

    def test_viewer_draws_the_training_curves(self):
        views = DualTrainingViewer(project=self.proj)._visualize(self.train)
        figure = views[0].getFigure()
        self.assertEqual(len(figure.axes), len(LOSS_KEYS + SIGNAL_KEYS))  # all in the log
        self.assertEqual(list(figure.axes[0].lines[0].get_xdata()), [1, 2, 3, 4])
        plt.close(figure)

    # --------------------------- form checks -----------------------------
    def assertError(self, prot, text):
        errors = prot.validate()
        self.assertTrue(any(text in e for e in errors), 'no error with %r in %s' % (text, errors))

    def test_validate_accepts_the_phantoms(self):
        self.assertEqual(self.newTraining().validate(), [])

    def test_validate_rejects_an_empty_set(self):
        prot = self.newTraining()
        prot.inputTomograms.set(unsavedTomogramSet(self.getOutputPath('empty.sqlite')))
        self.assertError(prot, 'Noisy tomograms: the set is empty')

    def test_validate_rejects_a_missing_sampling_rate(self):
        prot = self.newTraining()
        tomograms = unsavedTomogramSet(
            self.getOutputPath('no_rate.sqlite'), items=self.tomograms, samplingRate=0
        )
        prot.cleanVolumes.set(tomograms)
        self.assertError(prot, 'Clean volumes: the sampling rate is not set')

    def test_validate_rejects_volumes_smaller_than_a_subvolume(self):
        # 48 voxels of 10 A across in Z, 64^3 subvolumes of 10 A.
        self.assertError(self.newTraining(subvolumeSize=64), 'smaller than the 64^3 subvolumes')
        # The same phantoms at a 25 A working voxel size are 19 voxels thick.
        self.assertError(
            self.newTraining(voxelSize=25.0, subvolumeSize=24), 'only 19 voxels across'
        )

    def test_validate_rejects_a_subvolume_not_multiple_of_8(self):
        self.assertError(self.newTraining(subvolumeSize=20), 'multiple of 8')

    def test_validate_continuing_needs_an_existing_model(self):
        # pyworkflow's message for the empty input, and no second one for it.
        self.assertEqual(
            self.newTraining(continueTraining=True).validate(),
            ['*Model to continue from* cannot be EMPTY.'],
        )
        prot = self.newTraining(continueTraining=True)
        prot.inputModel.set(
            DualModel(path='/no/such/model.pt', voxelSize=10.0, subvolumeSize=16, iterations=4)
        )
        self.assertError(prot, 'does not exist')

    def test_validate_rejects_a_missing_engine(self):
        saved = Plugin.getVar(DUAL_ENV_ACTIVATION)
        Plugin._vars[DUAL_ENV_ACTIVATION] = 'source /no/such/venv/bin/activate'
        try:
            self.assertError(self.newTraining(), 'The DUAL engine does not run')
        finally:
            Plugin._vars[DUAL_ENV_ACTIVATION] = saved

    def test_warnings(self):
        warnings = ' '.join(self.newTraining(voxelSize=25.0).warnings())
        self.assertIn('CPU', warnings)
        self.assertIn('resampled 2.5x', warnings)
        self.assertNotIn('even/odd', warnings)
        # halves on some tomograms only: none are used, and the form says so
        mixed = unsavedTomogramSet(self.getOutputPath('mixed.sqlite'))
        for number, item in enumerate(self.tomograms):
            tomo = item.clone()
            tomo.cleanObjId()
            if number:
                tomo.setHalfMaps([])
            mixed.append(tomo)
        prot = self.newTraining()
        prot.inputTomograms.set(mixed)
        self.assertIn(
            'Only 1 of the 2 noisy tomograms carry even/odd halves', ' '.join(prot.warnings())
        )
