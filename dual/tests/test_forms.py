"""What a user meets in the forms before anything runs: one message per missing value,
no tab empty at expert level Normal, the tile-size rule of the engine's contract, and
"Use GPU = Yes" checked against this machine's GPUs."""

import json

import pyworkflow.protocol.params as params

import dual.protocols
from dual.contract import engine
from dual.objects import DualModel
from dual.protocols import (
    ProtDualDenoise,
    ProtDualPick,
    ProtDualSimulate,
    ProtDualTrain,
    ProtDualWedge,
)
from dual.protocols.protocol_base import ProtDualBase, gpuErrors, localGpuIds
from dual.protocols.protocol_pick import SELECT_THRESHOLD
from dual.tests.workflow import TINY_TRAINING, DualWorkflowTest

PROTOCOLS = [
    cls
    for cls in vars(dual.protocols).values()
    if isinstance(cls, type) and issubclass(cls, ProtDualBase) and cls._label
]


class TestDualForms(DualWorkflowTest):
    def model(self, **config):
        """A DualModel whose file exists (validate() only asks that it does)."""
        path = self.getOutputPath('model.pt')
        open(path, 'w').close()
        return DualModel(
            path=path,
            voxelSize=10.0,
            subvolumeSize=16,
            iterations=1000,
            config=json.dumps(config),
        )

    # --------------------------- missing values --------------------------
    def test_one_message_per_missing_input(self):
        """pyworkflow says "*Label* cannot be EMPTY." for a required input; the
        protocols' own checks add nothing for the same input."""
        for cls in PROTOCOLS:
            prot = self.newProtocol(cls)
            if prot.hasAttribute(params.USE_GPU):
                prot.useGpu.set(False)
            errors = prot.validate()
            required = [
                param.label.get()
                for name, param in prot.getDefinition().iterParams()
                if isinstance(param, params.PointerParam)
                and not param.allowsNull
                and prot.evalParamCondition(name)
            ]
            expected = ['*%s* cannot be EMPTY.' % label for label in required]
            if cls is ProtDualDenoise or cls is ProtDualSimulate:
                self.assertEqual(errors, expected, cls.__name__)
            else:  # other values may be missing too, each said once
                self.assertEqual(errors[: len(expected)], expected, cls.__name__)
                self.assertEqual(len(errors), len(set(errors)), cls.__name__)
            self.assertFalse([e for e in errors if 'validation failed' in e], errors)
        self.assertEqual(
            self.newProtocol(ProtDualTrain, useGpu=False).validate(),
            ['*Noisy tomograms* cannot be EMPTY.', '*Clean volumes* cannot be EMPTY.'],
        )
        # Continuing without a model: one message.
        errors = self.newTraining(continueTraining=True).validate()
        self.assertEqual(errors, ['*Model to continue from* cannot be EMPTY.'])

    def test_one_message_for_a_missing_diameter_or_threshold(self):
        pick = self.newProtocol(ProtDualPick)
        pick.inputTomograms.set(self.tomograms)
        self.assertEqual(
            pick.validate(),
            [
                'Give the particle diameter (A), the particle\'s largest extent '
                '(e.g. ~280 for ribosomes).'
            ],
        )
        pick.particleDiameter.set(140.0)
        self.assertEqual(pick.validate(), [])
        pick.selection.set(SELECT_THRESHOLD)
        pick.scoreThreshold.set(None)
        self.assertEqual(pick.validate(), ['Give a score threshold.'])

    # --------------------------- tabs ------------------------------------
    def test_no_tab_is_empty_at_expert_level_normal(self):
        for cls in PROTOCOLS:
            prot = cls()
            for section in prot.getDefinition().iterSections():
                if section.getLabel() in ('General', params.PARALLELIZATION):
                    continue
                shown = [
                    name
                    for name, param in section.iterParams()
                    if param.expertLevel.get() == params.LEVEL_NORMAL
                    and prot.evalParamCondition(name)
                ]
                self.assertTrue(shown, '%s: tab %s' % (cls.__name__, section.getLabel()))
        wedge = ProtDualWedge()
        self.assertNotIn('Run', [s.getLabel() for s in wedge.getDefinition().iterSections()])
        self.assertIsNotNone(wedge.getParam('tileSize'))  # in its Input tab, Advanced

    # --------------------------- tile size -------------------------------
    def test_tile_size_rule_is_the_engines(self):
        # A U-Net of depth 2 with transposed upsampling (the default model's Dn): 24
        # voxels at each face of a tile are discarded; 28 with trilinear upsampling.
        self.assertEqual(engine.min_useful_tile(2, 'transposed'), 96)
        self.assertAlmostEqual(engine.tile_kept_fraction(64, 2, 'transposed'), (16 / 64) ** 3)
        # 28-voxel borders grow a 64 tile to 72 (a core of 4 steps of 4 voxels)
        self.assertAlmostEqual(engine.tile_kept_fraction(64, 2, 'linear'), (16 / 72) ** 3)
        self.assertIsNone(engine.tile_warning(engine.DEFAULT_TILE, 2, 'linear'))
        self.assertEqual(engine.min_useful_tile(3, 'transposed'), 224)

        def tileWarnings(prot):
            return [w for w in prot.warnings() if 'tile size' in w.lower()]

        denoise = self.newProtocol(ProtDualDenoise, useGpu=False, tileSize=64)
        denoise.inputModel.set(self.model(unet_depth=2, task='denoise'))
        denoise.inputTomograms.set(self.tomograms)
        self.assertEqual(denoise.validate(), [])  # accepted: the result is the same
        (warning,) = tileWarnings(denoise)
        self.assertIn('A tile size of 64 keeps only the central 16^3 voxels', warning)
        self.assertIn('use at least 96', warning)
        denoise.tileSize.set(96)
        self.assertEqual(tileWarnings(denoise), [])
        # That model predates the upsampling setting (transposed, as it was); a model
        # with trilinear upsampling reaches 3 voxels further (rounded up: 4).
        denoise.inputModel.set(self.model(unet_depth=2, task='denoise', upsampling='linear'))
        self.assertIn('use at least 112', tileWarnings(denoise)[0])
        # A model whose Gs (simulate) upsamples linearly and whose Dn (denoise) does not.
        model = self.model(unet_depth=2, task='denoise', upsampling='linear-simulator')
        denoise.inputModel.set(model)
        self.assertEqual(tileWarnings(denoise), [])
        simulate = self.newProtocol(ProtDualSimulate, useGpu=False, tileSize=96)
        simulate.inputModel.set(model)
        self.assertIn('use at least 112', simulate._tileWarnings()[0])
        # The model's depth sets the borders: depth 3 wastes the default tile too.
        denoise.tileSize.set(engine.DEFAULT_TILE)
        denoise.inputModel.set(self.model(unet_depth=3, task='denoise'))
        self.assertIn('use at least 224', tileWarnings(denoise)[0])
        # A missing-wedge run that trains its model: the form's depth.
        wedge = self.newProtocol(ProtDualWedge, **dict(TINY_TRAINING, tileSize=64))
        wedge.inputTomograms.set(self.tomograms)
        self.assertIn('use at least 96', tileWarnings(wedge)[0])
        wedge.tileSize.set(engine.DEFAULT_TILE)
        self.assertEqual(tileWarnings(wedge), [])

    # --------------------------- GPUs ------------------------------------
    def test_use_gpu_is_checked_against_this_machine(self):
        """On this machine, without torch: no GPU (the CPU test machines) refuses "Use
        GPU = Yes"; with GPUs, ids it lacks are refused."""
        available = localGpuIds()

        def gpuMessages(**values):
            prot = self.newTraining(**values)
            return [e for e in prot.validate() if 'GPU' in e]

        self.assertEqual(gpuMessages(useGpu=False), [])
        if available == []:
            (error,) = gpuMessages(useGpu=True, gpuList='0')
            self.assertIn('this machine has no GPU', error)
            self.assertIn('choose "Use GPU = No"', error)
            # The same for the protocols that apply a model.
            denoise = self.newProtocol(ProtDualDenoise, useGpu=True)
            denoise.inputModel.set(self.model(unet_depth=2, task='denoise'))
            denoise.inputTomograms.set(self.tomograms)
            self.assertEqual([e for e in denoise.validate() if 'GPU' in e], [error])
        elif available is not None:
            self.assertEqual(gpuMessages(useGpu=True, gpuList=str(available[0])), [])
            (error,) = gpuMessages(useGpu=True, gpuList=str(max(available) + 1))
            self.assertIn('fix the GPU ids', error)
        # Through a queue or on another host the GPUs are not this machine's.
        prot = self.newTraining(useGpu=True, gpuList='99')
        prot._useQueue.set(True)
        self.assertEqual([e for e in prot.validate() if 'GPU' in e], [])
        prot = self.newTraining(useGpu=True, gpuList='99', hostName='cluster')
        self.assertEqual([e for e in prot.validate() if 'GPU' in e], [])

    def test_gpu_messages(self):
        self.assertEqual(gpuErrors([0], None), [])  # unknown (ROCm): nothing refused
        self.assertEqual(gpuErrors([0, 1], [0, 1, 2]), [])
        self.assertIn('choose "Use GPU = No"', gpuErrors([0], [])[0])
        self.assertEqual(
            gpuErrors([1, 2], [0, 1]),
            [
                'GPU IDs "1 2": this machine has no GPU 2 (it has GPUs 0, 1): fix the GPU '
                'ids, or choose "Use GPU = No" to run on the CPU.'
            ],
        )
        self.assertIn('without GPU IDs: give some of GPU 0', gpuErrors([], [0])[0])
