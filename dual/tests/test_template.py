"""The workflow template dual/templates/denoise_pick.json.template: Scipion finds it,
its fields parse and fill as `scipion3 template` fills them, every protocol class,
parameter and input it names exists, and a project made from it runs headless from
import to picks (the real engine, tiny data, CPU).

Data: phantoms made by the engine, 48x96x96 voxels at 10 A: reconstructions of seeds
0 and 1 are the noisy tomograms, grand models of seeds 2 and 3 the clean maps
(unpaired, as in real use). The template's network is shrunk after loading, as a
user would edit the boxes, so that training takes seconds.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import unittest

import pyworkflow as pw
from pyworkflow.plugin import Domain
from pyworkflow.project import Manager
from pyworkflow.template import TemplateList
from tomo.tests.test_base_centralized_layer import TestBaseCentralizedLayer

from dual.contract import engine
from dual.convert import readTrainingLog
from dual.objects import DualModel
from dual.protocols.protocol_pick import PickOutputs
from dual.templates import DENOISE_PICK, templateNames, templatePath
from dual.templates.runner import (
    createProject,
    fillTemplate,
    loadTemplate,
    runWorkflow,
    templateAliases,
)
from dual.tests.phantoms import SMALL_SHAPE, SMALL_VOXEL_SIZE, makePhantoms
from dual.tests.workflow import TINY_TRAINING

Z, Y, X = SMALL_SHAPE
DIMENSIONS = [X, Y, Z]
NOISY_IDS, CLEAN_IDS = ('TS_00', 'TS_01'), ('TS_02', 'TS_03')
DIAMETER = 140.0  # A: the largest phantom classes are 140-280 A
BOX = 14  # DIAMETER at 10 A/px
PICKS = 20
# Template object ids, in the template's order.
IMPORT_NOISY, IMPORT_CLEAN, TRAIN, DENOISE, SIMULATE, PICK = '1', '2', '3', '4', '5', '6'
LABELS = {
    IMPORT_NOISY: 'import noisy tomograms',
    IMPORT_CLEAN: 'import clean maps',
    TRAIN: 'dual - train',
    DENOISE: 'dual - denoise',
    SIMULATE: 'dual - simulate tomograms',
    PICK: 'dual - pick particles',
}
FIELDS = {
    'tiltMin',
    'tiltMax',
    'voltage',
    'sphericalAberration',
    'noisyPath',
    'noisyPattern',
    'noisySamplingRate',
    'cleanPath',
    'cleanPattern',
    'cleanSamplingRate',
    'workingVoxelSize',
    'iterations',
    'useGpu',
    'particleDiameter',
    'picksPerTomogram',
}


def phantomFolders():
    """(noisy folder, clean folder): engine phantoms, one sub-folder per tsId, made
    once in the test data folder."""
    root = os.path.join(pw.Config.SCIPION_TESTS, 'dual_template_phantoms')
    noisy, clean = os.path.join(root, 'noisy'), os.path.join(root, 'clean')
    makePhantoms(noisy, seeds=(0, 1))
    makePhantoms(clean, seeds=(2, 3))
    return noisy, clean


def fieldValues(noisy, clean):
    """Every field of the template, as the test fills it."""
    return dict(
        noisyPath=noisy,
        noisyPattern='{TS}/reconstruction.mrc',
        noisySamplingRate=SMALL_VOXEL_SIZE,
        tiltMin=-60,
        tiltMax=60,
        voltage=300,
        sphericalAberration=2.7,
        cleanPath=clean,
        cleanPattern='{TS}/grandmodel.mrc',
        cleanSamplingRate=SMALL_VOXEL_SIZE,
        workingVoxelSize=SMALL_VOXEL_SIZE,
        iterations=TINY_TRAINING['iterations'],
        useGpu=False,
        particleDiameter=DIAMETER,
        picksPerTomogram=PICKS,
    )


class TestDualTemplateFile(unittest.TestCase):
    """The template file itself (nothing runs)."""

    def test_scipion_finds_the_template(self):
        # What `scipion3 template` and the GUI's template list ask every plugin for.
        plugin = Domain.getPluginModule('dual')._pluginInstance
        self.assertEqual([t.getObjId() for t in plugin.getTemplates()], ['dual-' + DENOISE_PICK])
        found = TemplateList()
        found.addPluginTemplates('dual-' + DENOISE_PICK)
        self.assertEqual(len(found.templates), 1)
        self.assertEqual(templateNames(), [DENOISE_PICK])
        self.assertTrue(found.templates[0].description.startswith('DUAL denoise and pick:'))

    def test_fields(self):
        template = loadTemplate()
        self.assertEqual(set(templateAliases(template)), FIELDS)
        titles = [f.getTitle() for f in template.getParams().values()]
        self.assertEqual(len(titles), 17)  # useGpu is a field of 3 boxes
        # The template's defaults are the engine's.
        self.assertEqual(
            templateAliases(template)['iterations'], str(engine.DualConfig().iterations)
        )
        self.assertEqual(templateAliases(template)['picksPerTomogram'], str(engine.DEFAULT_TOP))
        # Unset folders do not validate: the user must give them.
        with self.assertRaisesRegex(ValueError, 'noisyPath'):
            fillTemplate(loadTemplate(), cleanPath=os.getcwd())
        with self.assertRaisesRegex(ValueError, 'Unknown template field'):
            fillTemplate(loadTemplate(), noisyPath=os.getcwd(), cleanPath=os.getcwd(), diameter=100)
        with self.assertRaisesRegex(ValueError, 'iterations'):
            fillTemplate(loadTemplate(), iterations='many')

    def test_filled_template_is_a_valid_workflow(self):
        """Every class, parameter and input the workflow names exists: loadProtocols
        silently ignores parameters a protocol does not have."""
        template = fillTemplate(loadTemplate(), **fieldValues(os.getcwd(), os.getcwd()))
        template._replaceFields()
        workflow = json.loads(''.join(template.getContent()))
        protocols = Domain.getProtocols()
        classById = {entry['object.id']: protocols[entry['object.className']] for entry in workflow}
        for entry in workflow:
            prot = classById[entry['object.id']]()
            params = dict(prot.iterDefinitionAttributes())
            for key, value in entry.items():
                if key.startswith(('object.', '_')) or key in ('runName', 'runMode'):
                    continue
                self.assertIn(key, params, '%s has no parameter %s' % (type(prot).__name__, key))
                if params[key].isPointer() and value:
                    # "<object.id>.<output>": an output the source box can produce.
                    sourceId, output = value.split('.', 1)
                    possible = classById[sourceId]._possibleOutputs
                    names = possible.keys() if isinstance(possible, dict) else possible.__members__
                    self.assertIn(output, names, '%s: %s' % (entry['object.label'], key))
        self.assertEqual([e['object.label'] for e in workflow], list(LABELS.values()))
        # The DUAL boxes set their fields, inputs and resources only: every other
        # setting is the form's default, which is the engine's (one place).
        resources = {'useGpu', 'gpuList', 'numberOfThreads', 'runMode'}
        fields = {'iterations', 'voxelSize', 'particleDiameter', 'numberOfPicks'}
        for entry in workflow:
            if entry['object.className'].startswith('ProtDual'):
                params = dict(classById[entry['object.id']]().iterDefinitionAttributes())
                settings = {
                    k for k in entry if not k.startswith('object.') and not params[k].isPointer()
                }
                self.assertLessEqual(settings, resources | fields, entry['object.label'])

    def test_command_line_fills_every_field(self):
        """`scipion3 template FILE alias=value ... --nogui` skips the form only when the
        arguments fill every field; these do."""
        from scipion.scripts.kickoff import assignAllParams  # scipion-app: setup installs it

        noisy, clean = phantomFolders()
        template = loadTemplate()
        args = [
            '%s=%s' % (k, str(v).lower() if isinstance(v, bool) else v)
            for k, v in fieldValues(noisy, clean).items()
        ]
        self.assertTrue(assignAllParams(args, template))
        self.assertEqual(
            template.getParams()['Picking: particle diameter (A)'].getValue(), str(DIAMETER)
        )
        self.assertTrue(templatePath().endswith('denoise_pick.json.template'))


class TestDualTemplateRunner(TestBaseCentralizedLayer):
    """dual.templates.runner, what the demo uses: a project with the template's boxes
    and labels, its imports run one at a time."""

    def test_project_from_the_template(self):
        noisy, clean = phantomFolders()
        project, protocols = createProject(
            'TestDualTemplateRunner', loadTemplate(), **fieldValues(noisy, clean)
        )
        self.assertEqual({k: p.getObjLabel() for k, p in protocols.items()}, LABELS)
        imports = [protocols[IMPORT_CLEAN], protocols[IMPORT_NOISY]]
        finished = runWorkflow(project, imports, report=None)
        self.assertEqual([p.getObjId() for p in finished], [p.getObjId() for p in imports])
        self.assertTrue(all(p.isFinished() for p in finished))
        self.assertEqual(sorted(finished[1].Tomograms.getTSIds()), list(NOISY_IDS))


class TestDualTemplateRun(TestBaseCentralizedLayer):
    """A project made from the template and scheduled exactly as `scipion3 template`
    does (scipion-app's kickoff.py): pyworkflow's create.py makes the project from the
    filled workflow file, then pyworkflow's schedule.py schedules it, both in their own
    processes. The template has two root boxes (the imports); every box must still run
    once (dual.pwcompat)."""

    TIMEOUT = 900  # s: the schedulers sleep 15-120 s between their checks

    @classmethod
    def setUpClass(cls):
        noisy, clean = phantomFolders()
        template = fillTemplate(loadTemplate(), **fieldValues(noisy, clean))
        with contextlib.redirect_stdout(io.StringIO()):
            workflow = template.createTemplateFile()
        scripts = os.path.join(os.path.dirname(pw.__file__), 'project', 'scripts')
        name = cls.__name__
        subprocess.run(
            [sys.executable, os.path.join(scripts, 'create.py'), name, workflow, '-', 'test'],
            check=True,
            capture_output=True,
        )
        os.remove(workflow)
        cls.proj = Manager().loadProject(name)
        cls.outputPath = cls.proj.path
        os.chdir(cls.proj.path)  # protocols resolve their files from the project folder
        cls.protocols = cls.boxes(cls.proj)
        # Shrink the network and share the 2 cores, as a user would edit the boxes.
        train = cls.protocols[TRAIN]
        for name_, value in TINY_TRAINING.items():
            getattr(train, name_).set(value)
        cls.protocols[DENOISE].numberOfThreads.set(3)  # both tomograms at once
        cls.protocols[SIMULATE].numberOfThreads.set(3)
        for prot in cls.protocols.values():
            cls.proj.saveProtocol(prot)
        cls.scheduler = subprocess.run(
            [sys.executable, os.path.join(scripts, 'schedule.py'), name],
            capture_output=True,
            text=True,
        )
        cls.runs = cls.waitForAll(name)

    @staticmethod
    def boxes(project):
        """{template object id: protocol}: the project's boxes, made in the template's order."""
        runs = sorted(project.getRuns(), key=lambda p: p.getObjId())
        return dict(zip(LABELS, runs))

    @classmethod
    def waitForAll(cls, name):
        """{template object id: protocol} once every box has stopped (or on timeout)."""
        start = time.time()
        while True:
            time.sleep(10)
            runs = cls.boxes(Manager().loadProject(name))
            if all(not p.isActive() for p in runs.values()):
                return runs
            if time.time() - start > cls.TIMEOUT:
                return runs

    def test_project_opens_in_the_view_listing_the_boxes(self):
        self.assertEqual(self.proj.getProtocolView(), 'Tomography')

    def test_each_box_ran_once_with_its_label(self):
        self.assertEqual(self.scheduler.returncode, 0, self.scheduler.stderr)
        for key, prot in self.runs.items():
            self.assertEqual(prot.getObjLabel(), LABELS[key])
            self.assertTrue(prot.isFinished(), '%s: %s' % (LABELS[key], prot.getStatus()))
            with open(prot.getLogPaths()[0]) as f:
                log = f.read()
            starts = log.count('RUNNING PROTOCOL') + log.count('RESUMING PROTOCOL')
            self.assertEqual(starts, 1, '%s started %d times' % (LABELS[key], starts))
            self.assertNotIn('PROTOCOL FAILED', log, LABELS[key])
        # One training: every logged iteration once.
        records = readTrainingLog(self.runs[TRAIN].getTrainingLogFile())
        iterations = [r['iteration'] for r in records]
        self.assertEqual(iterations, sorted(set(iterations)))

    def output(self, key, name):
        out = getattr(self.runs[key], name, None)
        self.assertIsNotNone(out, '%s has no output %s' % (LABELS[key], name))
        return out

    def test_imports(self):
        for key, tsIds in ((IMPORT_NOISY, NOISY_IDS), (IMPORT_CLEAN, CLEAN_IDS)):
            tomos = self.output(key, 'Tomograms')
            self.checkTomograms(
                tomos,
                expectedSetSize=2,
                expectedSRate=SMALL_VOXEL_SIZE,
                expectedDimensions=DIMENSIONS,
            )
            self.assertEqual(sorted(tomos.getTSIds()), list(tsIds))

    def test_training_settings_come_from_fields_and_edits(self):
        model = self.output(TRAIN, 'model')
        self.assertIsInstance(model, DualModel)
        self.assertTrue(os.path.exists(model.getPath()))
        self.assertEqual(
            (model.getIterations(), model.getVoxelSize(), model.getSubvolumeSize()),
            (TINY_TRAINING['iterations'], SMALL_VOXEL_SIZE, TINY_TRAINING['subvolumeSize']),
        )
        self.assertFalse(self.runs[TRAIN].useGpu.get())

    def test_denoised_tomograms_match_the_noisy_ones(self):
        denoised = self.output(DENOISE, 'tomograms')
        self.checkTomograms(
            denoised,
            expectedSetSize=2,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=DIMENSIONS,
        )
        self.assertEqual(sorted(denoised.getTSIds()), list(NOISY_IDS))

    def test_simulated_tomograms_come_from_the_clean_maps(self):
        simulated = self.output(SIMULATE, 'tomograms')
        self.checkTomograms(
            simulated,
            expectedSetSize=2,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=DIMENSIONS,
        )
        self.assertEqual(sorted(simulated.getTSIds()), [t + '_sim00' for t in CLEAN_IDS])

    def test_picks_refer_to_the_imported_tomograms(self):
        pick = self.runs[PICK]
        coords = self.output(PICK, PickOutputs.coordinates.name)
        tables = {t: engine.read_picks_table(pick.getPicksFile(t))[0] for t in NOISY_IDS}
        self.assertTrue(all(0 < len(xyz) <= PICKS for xyz in tables.values()), tables)
        self.checkCoordinates(
            coords,
            expectedSetSize=sum(map(len, tables.values())),
            expectedBoxSize=BOX,
            expectedSRate=SMALL_VOXEL_SIZE,
        )
        # On the imported tomograms (their files), not the denoised ones.
        self.assertEqual(
            sorted(t.getFileName() for t in coords.getPrecedents()),
            sorted(t.getFileName() for t in self.output(IMPORT_NOISY, 'Tomograms')),
        )
        self.assertEqual(sorted(coords.getTSIds()), list(NOISY_IDS))
        # 'auto' measured the contrast of each denoised tomogram and said so. Not
        # necessarily bright: the tiny model's output can come out inverted (seen: DoG
        # skewness -5 and -6.5, and dark picks matched the particles with precision
        # 0.45 / 0.30 against 0.05 for bright), which the producer's declared contrast
        # would have got wrong.
        used = pick.usedPolarity.get()
        self.assertIn(used, ('bright', 'dark'))
        with open(pick.getLogPaths()[0]) as f:
            log = f.read()
        for tsId in NOISY_IDS:
            self.assertIn('%s: %s contrast (auto: skewness' % (tsId, used), log)
