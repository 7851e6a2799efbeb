"""ProtDualImportModel on a model trained outside Scipion with the engine's own CLI."""

import filecmp
import os

from pyworkflow.plugin import Domain
from pyworkflow.tests import setupTestProject
from tomo.tests.test_base_centralized_layer import TestBaseCentralizedLayer

from dual.constants import DUAL_ENV_ACTIVATION
from dual.objects import DualModel
from dual.protocols import ProtDualImportModel
from dual.protocols.protocol_import_model import ImportModelOutputs
from dual.tests.engine_env import runEngine
from dual.tests.phantoms import makePhantoms

Plugin = Domain.getPlugin('dual').Plugin


def trainWithEngine(outdir, noisy, clean, iterations):
    """`dual-engine train` as a user would run it by hand (tiny model, CPU)."""
    runEngine(
        'train',
        outdir,
        '--noisy',
        *noisy,
        '--clean',
        *clean,
        '--iterations',
        iterations,
        '--subvolume-size',
        16,
        '--unet-width',
        4,
        '--unet-depth',
        2,
        '--code-size',
        4,
        '--noise-width',
        4,
        '--disc-width',
        4,
        '--batch-size',
        2,
        '--voxel-size',
        12,
        '--device',
        'cpu',
        '--threads',
        1,
    )
    return os.path.join(outdir, 'model.pt')


class TestDualImportModel(TestBaseCentralizedLayer):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        phantoms = makePhantoms(cls.getOutputPath('phantoms'), seeds=(0, 1))
        cls.noisy = [os.path.join(phantoms['TS_00'], 'reconstruction.mrc')]
        clean = [os.path.join(phantoms['TS_01'], 'grandmodel.mrc')]
        cls.modelFile = trainWithEngine(
            cls.getOutputPath('engine_training'), cls.noisy, clean, iterations=3
        )

    def importModel(self, **values):
        prot = self.newProtocol(ProtDualImportModel, modelFile=self.modelFile, **values)
        self.launchProtocol(prot)
        return prot, getattr(prot, ImportModelOutputs.model.name)

    def test_import_copies_the_model_and_reads_its_settings(self):
        prot, model = self.importModel()
        self.assertIsInstance(model, DualModel)
        self.assertEqual(
            (model.getVoxelSize(), model.getSubvolumeSize(), model.getIterations()), (12.0, 16, 3)
        )
        self.assertFalse(os.path.islink(model.getPath()))
        self.assertTrue(filecmp.cmp(model.getPath(), self.modelFile, shallow=False))
        self.assertEqual(model.getTrainingInfo()['noisy_volumes'], self.noisy)
        self.assertIn('trained for 3 iterations at 12.00 A/voxel', ' '.join(prot.summary()))

    def test_import_can_link_instead(self):
        _, model = self.importModel(copyFile=False)
        self.assertTrue(os.path.islink(model.getPath()))
        self.assertEqual(os.path.realpath(model.getPath()), os.path.realpath(self.modelFile))

    def test_a_file_that_is_not_a_model_fails_clearly(self):
        bogus = self.getOutputPath('not_a_model.pt')
        with open(bogus, 'w') as f:
            f.write('not a model')
        prot = self.newProtocol(ProtDualImportModel, modelFile=bogus)
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        logs = ''.join(open(path).read() for path in (prot.getStdoutLog(), prot.getStderrLog()))
        self.assertIn('is not a DUAL model file', logs)
        self.assertIsNone(getattr(prot, ImportModelOutputs.model.name, None))

    def test_validate_rejects_a_missing_file(self):
        prot = self.newProtocol(ProtDualImportModel, modelFile='/no/such/model.pt')
        self.assertTrue(any('does not exist' in e for e in prot.validate()))

    def test_validate_rejects_a_missing_engine(self):
        saved = Plugin.getVar(DUAL_ENV_ACTIVATION)
        Plugin._vars[DUAL_ENV_ACTIVATION] = 'source /no/such/venv/bin/activate'
        try:
            prot = self.newProtocol(ProtDualImportModel, modelFile=self.modelFile)
            self.assertTrue(any('The DUAL engine does not run' in e for e in prot.validate()))
        finally:
            Plugin._vars[DUAL_ENV_ACTIVATION] = saved
