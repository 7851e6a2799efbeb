"""The Plugin class: the engine command line and the installation recipe."""

import os
import sys
import unittest

import pwem
from pyworkflow.plugin import Domain
from scipion.install.funcs import Environment

# Through the Domain, as Scipion loads it: that registers the plugin's variables.
Plugin = Domain.getPlugin('dual').Plugin
from dual.constants import (  # noqa: E402 (after the Domain has loaded the plugin)
    DUAL_ENV_ACTIVATION,
    DUAL_ENV_FLAG,
    DUAL_INSTALLED_FLAG,
    DUAL_TORCH_BUILD,
    ENGINE_SOURCE,
    ENGINE_VERSION,
    TORCH_VERSION,
)


class RestoresActivation(unittest.TestCase):
    """Tests that change DUAL_ENV_ACTIVATION put it back."""

    def setUp(self):
        self.saved = Plugin.getVar(DUAL_ENV_ACTIVATION)

    def tearDown(self):
        Plugin._vars[DUAL_ENV_ACTIVATION] = self.saved


class TestEngineCommand(RestoresActivation):
    def test_empty_activation_runs_current_python(self):
        Plugin._vars[DUAL_ENV_ACTIVATION] = ''
        self.assertEqual(Plugin.getEngineProgram(), '%s -m dual_engine' % sys.executable)

    def test_venv_activation(self):
        Plugin._vars[DUAL_ENV_ACTIVATION] = 'source /opt/venv/bin/activate'
        self.assertEqual(
            Plugin.getEngineProgram(), 'source /opt/venv/bin/activate && python -m dual_engine'
        )

    def test_conda_activation_initialises_conda(self):
        Plugin._vars[DUAL_ENV_ACTIVATION] = 'conda activate dual-x'
        program = Plugin.getEngineProgram()
        self.assertIn('conda activate dual-x && python -m dual_engine', program)
        self.assertTrue(program.startswith(Plugin.getCondaActivationCmd()))

    def test_gpu_ids_only_when_asked(self):
        self.assertIn('CUDA_VISIBLE_DEVICES=%(GPU)s', Plugin.getEngineProgram(useGpu=True))
        self.assertNotIn('CUDA_VISIBLE_DEVICES', Plugin.getEngineProgram(useGpu=False))

    def test_environ_drops_scipion_pythonpath(self):
        os.environ['PYTHONPATH'] = '/scipion/site-packages'
        try:
            self.assertNotIn('PYTHONPATH', Plugin.getEnviron())
        finally:
            del os.environ['PYTHONPATH']


class TestInstallRecipe(unittest.TestCase):
    """defineBinaries is a recipe for scipion-app's installer: it must never fail."""

    def recipe(self, cudaLib):
        saved = pwem.Config.CUDA_LIB
        pwem.Config.CUDA_LIB = cudaLib
        try:
            env = Environment(args=['--show'])
            Plugin.defineBinaries(env)
        finally:
            pwem.Config.CUDA_LIB = saved
        target = env._targetDict['dual-%s' % ENGINE_VERSION]
        return target, ' '.join(str(c._cmd) for c in target._commandList)

    def test_two_flagged_stages_install_the_vendored_engine(self):
        target, commands = self.recipe('/nonexistent')
        self.assertTrue(target._default)
        flags = [c._targets for c in target._commandList]
        self.assertIn(DUAL_ENV_FLAG, str(flags))
        self.assertIn(DUAL_INSTALLED_FLAG, str(flags))
        self.assertIn('%s && touch' % ENGINE_SOURCE, commands)
        self.assertTrue(os.path.exists(os.path.join(ENGINE_SOURCE, 'pyproject.toml')))

    def test_torch_build_follows_cuda_major(self):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            lib = os.path.join(tmp, 'cuda-13.0', 'lib64')
            os.makedirs(lib)
            self.assertIn('whl/cu130', self.recipe(lib)[1])
        self.assertIn('whl/cu126', self.recipe('/no/cuda/here')[1])

    def test_torch_build_variable_wins(self):
        saved = Plugin._vars.get(DUAL_TORCH_BUILD)
        Plugin._vars[DUAL_TORCH_BUILD] = 'cu128'
        try:
            self.assertIn('whl/cu128', self.recipe('/no/cuda/here')[1])
        finally:
            Plugin._vars[DUAL_TORCH_BUILD] = saved

    def test_torch_is_the_tested_version_from_conda_forge(self):
        commands = self.recipe('/nonexistent')[1]
        checkout = os.path.dirname(os.path.dirname(ENGINE_SOURCE))
        with open(os.path.join(checkout, 'scripts', 'setup.sh')) as f:
            self.assertIn('torch==%s' % TORCH_VERSION, f.read())
        self.assertIn('pip install torch==%s ' % TORCH_VERSION, commands)
        self.assertIn('--override-channels -c conda-forge', commands)

    def test_checkout_installs_the_engine_editable(self):
        # The tests run from a checkout (setup.sh installs the plugin editable).
        self.assertTrue(Plugin.engineIsInCheckout())
        self.assertIn('pip install -e %s' % ENGINE_SOURCE, self.recipe('/nonexistent')[1])


class TestInstallationCheck(RestoresActivation):
    def test_default_environment_needs_installb(self):
        from dual.constants import DUAL_DEFAULT_ACTIVATION

        Plugin._vars[DUAL_ENV_ACTIVATION] = DUAL_DEFAULT_ACTIVATION
        errors = Plugin.validateInstallation()
        self.assertTrue(errors and 'DUAL_HOME' in ' '.join(errors), errors)

    def test_own_environment_needs_no_dual_home(self):
        Plugin._vars[DUAL_ENV_ACTIVATION] = 'source /opt/venv/bin/activate'
        self.assertEqual(Plugin.validateInstallation(), [])


class TestProtocolsTree(unittest.TestCase):
    """protocols.conf must parse as pyworkflow reads it, and list every protocol."""

    def test_every_protocol_is_in_the_gui_tree(self):
        import configparser
        import json
        import dual.protocols
        from pyworkflow.protocol import Protocol

        parser = configparser.ConfigParser()
        parser.optionxform = str
        parser.read(os.path.join(os.path.dirname(dual.protocols.__file__), '..', 'protocols.conf'))
        listed = set()

        def collect(items):
            for item in items:
                if item.get('tag') == 'protocol':
                    listed.add(item['value'])
                collect(item.get('children', []))

        collect(json.loads(parser['PROTOCOLS']['Tomography']))
        exported = {
            name
            for name, obj in vars(dual.protocols).items()
            if isinstance(obj, type) and issubclass(obj, Protocol)
        }
        self.assertTrue(exported)
        self.assertEqual(listed, exported)


class TestDenoisedContrast(unittest.TestCase):
    """A denoiser whose training anchored the contrast declares its output bright; one
    that left it free declares nothing (its output may come out inverted)."""

    def test_declared_only_when_anchored(self):
        from dual.objects import DualModel
        from dual.protocols.protocol_denoise import DENOISED_CONTRAST, denoisedContrast

        for contrast, expected in (
            ('same', DENOISED_CONTRAST),
            ('inverted', DENOISED_CONTRAST),
            ('free', None),
        ):
            model = DualModel()
            model.setConfig({'task': 'denoise', 'noisy_contrast': contrast})
            self.assertEqual(denoisedContrast(model), expected, contrast)
        self.assertEqual(denoisedContrast(None), DENOISED_CONTRAST)
