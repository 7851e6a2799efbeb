"""ProtDualPick on phantoms with known particles (the real engine, no mocks): the output
SetOfCoordinates3D is what tomo expects, equals the engine's tables, finds the
particles, is handed correctly to original tomograms at another voxel size, and
chains through tomo's export to RELION STAR and Dynamo tables; the form rejects bad
input; the picks plot draws.

Data: two 48x128x128 phantoms at 10 A holding only "tetramer" particles (~14 nm),
without vesicles or gold, so that one diameter fits every particle. Their
reconstructions have dense = bright (the simulator's convention), hence polarity
bright; their negatives are the "dark" (raw-like) tomograms. The "denoised"
tomograms are the reconstructions binned 2x (2x2x2 means) and written at 20 A/voxel.
"""

import json
import os

import mrcfile
import numpy as np
from matplotlib.figure import Figure
from pyworkflow.tests import setupTestProject
from pwem.objects import Transform
from tomo.constants import BOTTOM_LEFT_CORNER, SCIPION
from tomo.objects import Coordinate3D, Tomogram
from tomo.protocols import ProtImportTomograms, ProtImportTomomasks
from tomo.protocols.protocol_export_coords import (
    EXPORT_TO_DYNAMO,
    EXPORT_TO_STAR,
    ProtExportCoordinates3D,
)
from tomo.tests.test_base_centralized_layer import TestBaseCentralizedLayer
from tomo.utils import existsPlugin

from dual.protocols import ProtDualDenoise, ProtDualPhantom, ProtDualPick
from dual.protocols.protocol_phantom import OUT_TOMOGRAMS
from dual.contract import engine
from dual.convert import convertPositions, defaultBoxSize
from dual.protocols.protocol_pick import (
    POLARITY_AUTO,
    POLARITY_BRIGHT,
    SELECT_THRESHOLD,
    PickOutputs,
)
from dual.tests.engine_env import engineCall
from dual.tests.phantoms import makePhantoms
from dual.viewers import DualPicksViewer
from dual.viewers.viewer_picks import plotPicks

SHAPE = (48, 128, 128)  # Z Y X
VOXEL = 10.0
BINNED_VOXEL = 2 * VOXEL
DIAMETER = 140.0  # A, the tetramers' largest extent
BOX = 14  # DIAMETER at 10 A/px, already even
TS_IDS = ('TS_00', 'TS_01')
PHANTOM_OPTIONS = ('--classes', 'tetramer', '--vesicles', '0', '--fiducials', '0')


def matchPicks(picks, truth):
    """The engine's one-to-one matching of picks to particle centres (within a radius)."""
    return engineCall('metrics.match_picks', picks.tolist(), truth.tolist(), DIAMETER / 2 / VOXEL)


def bin2(volume):
    """2x2x2 block means of a [z, y, x] volume with even sizes."""
    z, y, x = volume.shape
    return volume.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))


class TestDualPick(TestBaseCentralizedLayer):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        phantoms = makePhantoms(
            cls.getOutputPath('phantoms'),
            seeds=(0, 1),
            shape=SHAPE,
            voxelSize=VOXEL,
            extra=PHANTOM_OPTIONS,
        )
        cls.truth = {}
        exclude = engineCall('metrics.DEFAULT_EXCLUDE')
        rawDir, binnedDir = cls.getOutputPath('raw'), cls.getOutputPath('binned')
        darkDir = cls.getOutputPath('dark')  # raw-like: dense = dark
        for folder in (rawDir, binnedDir, darkDir):
            os.makedirs(folder, exist_ok=True)
        for tsId, folder in phantoms.items():
            particles = engineCall(
                'io.read_particle_locations', os.path.join(folder, 'particle_locations.txt')
            )
            cls.truth[tsId] = np.array(
                [(p['x'], p['y'], p['z']) for p in particles if p['name'] not in exclude]
            )
            raw = os.path.join(rawDir, tsId + '.mrc')
            if not os.path.exists(raw):
                os.symlink(os.path.join(folder, 'reconstruction.mrc'), raw)
            with mrcfile.open(raw) as mrc:
                binned = bin2(np.asarray(mrc.data, dtype=np.float32))
                with mrcfile.new(os.path.join(darkDir, tsId + '.mrc'), overwrite=True) as dark:
                    dark.set_data(-np.asarray(mrc.data, dtype=np.float32))
                    dark.voxel_size = VOXEL
            with mrcfile.new(os.path.join(binnedDir, tsId + '.mrc'), overwrite=True) as mrc:
                mrc.set_data(binned.astype(np.float32))
                mrc.voxel_size = BINNED_VOXEL

        cls.raw = cls.importTomograms(rawDir, '*.mrc', VOXEL)
        cls.binned = cls.importTomograms(binnedDir, '*.mrc', BINNED_VOXEL)
        cls.dark = cls.importTomograms(darkDir, '*.mrc', VOXEL)
        cls.rawPick = cls.newPick(cls.raw, numberOfThreads=3)  # both tomograms at once
        cls.launchProtocol(cls.rawPick)
        cls.binnedPick = cls.newPick(cls.binned, originals=cls.raw)
        cls.launchProtocol(cls.binnedPick)

    @classmethod
    def importTomograms(cls, folder, pattern, samplingRate):
        prot = cls.newProtocol(
            ProtImportTomograms, filesPath=folder, filesPattern=pattern, samplingRate=samplingRate
        )
        cls.launchProtocol(prot)
        return prot.Tomograms

    @classmethod
    def newPick(cls, tomograms, originals=None, masks=None, **values):
        values = dict(
            dict(particleDiameter=DIAMETER, polarity=POLARITY_BRIGHT, numberOfPicks=300), **values
        )
        prot = cls.newProtocol(ProtDualPick, **values)
        prot.inputTomograms.set(tomograms)
        if originals is not None:
            prot.originalTomograms.set(originals)
        if masks is not None:
            prot.inputMasks.set(masks)
        return prot

    # ------------------------------------------------------------ helpers
    @staticmethod
    def outputOf(prot):
        return getattr(prot, PickOutputs.coordinates.name)

    @staticmethod
    def enginePicks(prot, tsId):
        """The engine's table of tsId: (xyz in picked voxels, scores)."""
        return engine.read_picks_table(prot._getExtraPath(tsId, '%s_picks.tsv' % tsId))

    @staticmethod
    def scipionPicks(coords):
        """{tsId: (xyz BOTTOM_LEFT_CORNER px of the precedent, scores)}, in id order."""
        picks = {}
        # Cloned first: a query on the coordinates can end an open iteration of the set.
        for tomo in [t.clone() for t in coords.getPrecedents()]:
            items = [
                (c.getPosition(BOTTOM_LEFT_CORNER), c.getScore())
                for c in coords.iterCoordinates(volume=tomo)
            ]
            picks[tomo.getTsId()] = (
                np.array([i[0] for i in items]).reshape(-1, 3),
                np.array([i[1] for i in items]),
            )
        return picks

    def assertPicksEqual(self, actual, expected, tolerance, what):
        actual = np.asarray(actual).reshape(-1, 3)
        self.assertEqual(actual.shape, expected.shape, what)
        if len(expected):
            error = np.abs(actual - expected).max()
            self.assertLessEqual(error, tolerance, '%s: %.4f px apart' % (what, error))

    # ------------------------------------------------------------ tests
    def test_coordinates_are_what_tomo_expects(self):
        coords = self.outputOf(self.rawPick)
        total = sum(len(self.enginePicks(self.rawPick, t)[0]) for t in TS_IDS)
        self.assertGreater(total, 100)
        self.checkCoordinates(
            coords, expectedSetSize=total, expectedBoxSize=BOX, expectedSRate=VOXEL
        )
        self.assertEqual(coords.getPrecedents().getObjId(), self.raw.getObjId())
        self.assertEqual(sorted(coords.getTSIds()), list(TS_IDS))
        self.assertTrue(coords.isStreamClosed())
        # One engine job per tomogram, with the Scipion voxel size and our options.
        with open(self.rawPick._getExtraPath('pick_TS_00.json')) as f:
            job = json.load(f)
        self.assertEqual(
            (job['diameter'], job['voxel_size'], job['polarity'], job['top']),
            (DIAMETER, VOXEL, 'bright', 300),
        )
        summary = ' '.join(self.rawPick.summary())
        self.assertIn('%d coordinates in 2 tomogram(s); box %d px' % (total, BOX), summary)
        self.assertIn('bright contrast', summary)
        self.assertIn('Difference-of-Gaussians', ' '.join(self.rawPick.methods()))

    def test_coordinates_equal_the_engine_tables(self):
        picks = self.scipionPicks(self.outputOf(self.rawPick))
        for tsId in TS_IDS:
            xyz, scores = self.enginePicks(self.rawPick, tsId)
            self.assertPicksEqual(picks[tsId][0], xyz, 0.01, tsId)
            np.testing.assert_allclose(picks[tsId][1], scores, rtol=1e-6)
            self.assertTrue(np.all(np.diff(scores) <= 0))  # best first

    def test_picks_find_the_particles(self):
        picks = self.scipionPicks(self.outputOf(self.rawPick))
        for tsId in TS_IDS:
            m = matchPicks(picks[tsId][0], self.truth[tsId])
            print(
                tsId,
                'precision %.2f recall %.2f (%d picks, %d particles)'
                % (m['precision'], m['recall'], m['n_picks'], m['n_truth']),
            )
            self.assertGreaterEqual(m['precision'], 0.85, m)
            self.assertGreaterEqual(m['recall'], 0.55, m)
            self.assertLess(m['mean_distance_voxels'], 2.5, m)

    def test_binned_picks_are_handed_to_the_originals(self):
        """Picked at 20 A/px, the coordinates refer to the 10 A/px originals: positions
        are the engine's (binned voxels) times 2 (both origins centred), the set has
        the originals' sampling rate and box size, and the picks hit the particles."""
        coords = self.outputOf(self.binnedPick)
        total = sum(len(self.enginePicks(self.binnedPick, t)[0]) for t in TS_IDS)
        self.checkCoordinates(
            coords, expectedSetSize=total, expectedBoxSize=BOX, expectedSRate=VOXEL
        )
        self.assertEqual(coords.getPrecedents().getObjId(), self.raw.getObjId())
        picks = self.scipionPicks(coords)
        for tsId in TS_IDS:
            xyz, scores = self.enginePicks(self.binnedPick, tsId)
            self.assertGreater(len(xyz), 50)
            self.assertPicksEqual(picks[tsId][0], 2 * xyz, 0.02, tsId)
            np.testing.assert_allclose(picks[tsId][1], scores, rtol=1e-6)
            m = matchPicks(picks[tsId][0], self.truth[tsId])
            self.assertGreaterEqual(m['precision'], 0.85, m)
            self.assertGreaterEqual(m['recall'], 0.45, m)
        self.assertIn('refer to the original tomograms', ' '.join(self.binnedPick.summary()))
        with open(self.binnedPick._getExtraPath('pick_TS_00.json')) as f:
            self.assertEqual(json.load(f)['voxel_size'], BINNED_VOXEL)

    def test_conversion_goes_through_origins(self):
        """Any origins: the converted coordinate is the same physical point (Scipion's
        stored position times the sampling rate) as the picked one."""
        picked, original = Tomogram(), Tomogram()
        picked.setSamplingRate(BINNED_VOXEL)
        original.setSamplingRate(VOXEL)
        for tomo, shifts in (
            (picked, (-700.0, -610.0, -230.0)),
            (original, (-640.0, -640.0, -240.0)),
        ):
            origin = Transform()
            origin.setShifts(*shifts)
            tomo.setOrigin(origin)
            tomo.setTsId('TS_00')
        xyz = np.array([[10.0, 20.5, 3.0], [0.0, 0.0, 0.0]])
        converted = convertPositions(xyz, picked, original)
        for p, q in zip(xyz, converted):
            physical = []
            for tomo, position in ((picked, p), (original, q)):
                coord = Coordinate3D()
                coord.setVolume(tomo)
                coord.setPosition(*position, BOTTOM_LEFT_CORNER)
                physical.append(np.array(coord.getPosition(SCIPION)) * tomo.getSamplingRate())
            np.testing.assert_allclose(physical[0], physical[1], atol=1e-9)
        np.testing.assert_allclose(convertPositions(xyz, original, original), xyz)
        self.assertEqual(defaultBoxSize(140, 10), 14)
        self.assertEqual(defaultBoxSize(141, 10), 16)
        self.assertEqual(defaultBoxSize(150, 10), 16)

    def test_export_to_relion_and_dynamo(self):
        """tomo's export of our coordinates, read back, gives the engine's picks.

        RELION (reliontomo's writer): rlnCoordinateX/Y/Z = BOTTOM_LEFT_CORNER pixels,
        0-based, as the engine's tables. Dynamo (tomo's writer): columns 24-26 =
        BOTTOM_LEFT_CORNER pixels, 0-based too (the engine's own .tbl adds 1, Dynamo's
        convention), hence one_based=False.
        """
        # scripts/setup.sh installs both plugins: their absence is a failure, not a skip.
        self.assertTrue(existsPlugin('reliontomo') and existsPlugin('dynamo'))
        coords = self.outputOf(self.rawPick)
        choices = ProtExportCoordinates3D._getExportChoices()
        exports = {}
        for fmt in (EXPORT_TO_STAR, EXPORT_TO_DYNAMO):
            prot = self.newProtocol(ProtExportCoordinates3D, outputFormat=choices.index(fmt))
            prot.inputCoordinates.set(coords)
            self.launchProtocol(prot)
            exports[fmt] = prot._getExportPath()

        xyz, _, names = engineCall(
            'export.read_relion_star', os.path.join(exports[EXPORT_TO_STAR], 'coords.star')
        )
        xyz, names = np.array(xyz), np.array(names)
        self.assertEqual(sorted(set(names)), list(TS_IDS))
        for tsId in TS_IDS:
            engine, _ = self.enginePicks(self.rawPick, tsId)
            self.assertPicksEqual(xyz[names == tsId], engine, 0.01, 'STAR %s' % tsId)

            tblXyz, _, _ = engineCall(
                'export.read_dynamo_tbl',
                os.path.join(exports[EXPORT_TO_DYNAMO], tsId + '.tbl'),
                one_based=False,
            )
            self.assertPicksEqual(tblXyz, engine, 0.01, 'tbl %s' % tsId)
        # The engine's own Dynamo table is 1-based: the same picks, read back.
        own, _, _ = engineCall(
            'export.read_dynamo_tbl', self.rawPick._getExtraPath('TS_00', 'TS_00.tbl')
        )
        self.assertPicksEqual(own, self.enginePicks(self.rawPick, 'TS_00')[0], 0.01, 'own tbl')

    def test_masks_restrict_the_picks(self):
        folder = self.getOutputPath('masks_binned')
        os.makedirs(folder, exist_ok=True)
        z, y, x = (n // 2 for n in SHAPE)
        half = np.zeros((z, y, x), dtype=np.int8)
        half[:, :, : x // 2] = 1
        for tsId in TS_IDS:
            with mrcfile.new(os.path.join(folder, tsId + '.mrc'), overwrite=True) as mrc:
                mrc.set_data(half)
                mrc.voxel_size = BINNED_VOXEL
        importMasks = self.newProtocol(
            ProtImportTomomasks, filesPath=folder, filesPattern='*.mrc', samplingRate=BINNED_VOXEL
        )
        importMasks.inputTomos.set(self.binned)
        self.launchProtocol(importMasks)
        masks = getattr(importMasks, ProtImportTomomasks._possibleOutputs.tomomasks.name)

        # Masks of the binned size cannot restrict the raw tomograms.
        errors = self.newPick(self.raw, masks=masks).validate()
        self.assertTrue(
            any('a mask must have the size of its picked tomogram' in e for e in errors), errors
        )

        prot = self.newPick(
            self.binned, masks=masks, selection=SELECT_THRESHOLD, scoreThreshold=0.0
        )
        self.launchProtocol(prot)
        for tsId in TS_IDS:
            xyz, _ = self.enginePicks(prot, tsId)
            self.assertGreater(len(xyz), 10)
            self.assertLessEqual(xyz[:, 0].max(), x // 2 - 0.5)
        with open(prot._getExtraPath('pick_TS_00.json')) as f:
            job = json.load(f)
        self.assertEqual(job['threshold'], 0.0)
        self.assertNotIn('top', job)

    def test_validate_rejects_bad_input(self):
        def errorsOf(**values):
            originals = values.pop('originals', None)
            return ' | '.join(
                self.newPick(
                    values.pop('tomograms', self.raw), originals=originals, **values
                ).validate()
            )

        self.assertEqual(errorsOf(), '')
        self.assertIn('Diameter must be > 0', errorsOf(particleDiameter=0))
        self.assertIn(
            'must span at least 2 voxels', errorsOf(tomograms=self.binned, particleDiameter=30)
        )
        self.assertIn('Min_distance must be >= 0', errorsOf(minDistance=-5))
        self.assertIn('box size must be a positive', errorsOf(boxSize=0))
        self.assertIn('Top must be >= 1', errorsOf(numberOfPicks=0))
        # Originals that miss a tsId.
        folder = self.getOutputPath('one_original')
        os.makedirs(folder, exist_ok=True)
        link = os.path.join(folder, 'TS_00.mrc')
        if not os.path.exists(link):
            os.symlink(os.path.realpath(self.getOutputPath('raw', 'TS_00.mrc')), link)
        oneOriginal = self.importTomograms(folder, '*.mrc', VOXEL)
        errors = errorsOf(tomograms=self.binned, originals=oneOriginal)
        self.assertIn(
            'Original tomograms: no tomogram with the tsId of 1 picked tomogram(s): TS_01', errors
        )

    def test_polarity_auto_is_measured_on_each_tomogram(self):
        """auto: the engine measures the contrast of each tomogram; the log says what it
        found. Dark (raw-like, inverted phantoms) and bright tomograms, one run each."""
        for tomograms, expected in ((self.dark, 'dark'), (self.raw, 'bright')):
            prot = self.newPick(tomograms, polarity=POLARITY_AUTO)
            self.launchProtocol(prot)
            self.assertEqual(prot.usedPolarity.get(), expected)
            self.assertIn('%s (auto: measured) contrast' % expected, ' '.join(prot.summary()))
            with open(prot.getLogPaths()[0]) as f:
                log = f.read()
            picks = self.scipionPicks(self.outputOf(prot))
            for tsId in TS_IDS:
                self.assertRegex(log, '%s: %s contrast \\(auto: skewness [+-]' % (tsId, expected))
                m = matchPicks(picks[tsId][0], self.truth[tsId])
                self.assertGreaterEqual(m['precision'], 0.85, m)

    def test_polarity_auto_fallback_comes_from_the_producer(self):
        """Where a tomogram does not show its contrast, auto takes what the producing
        protocol declares: bright for DUAL's denoiser and phantoms, dark otherwise."""
        self.assertEqual(self.newPick(self.raw, polarity=POLARITY_AUTO)._fallbackPolarity(), 'dark')
        denoise = self.newProtocol(ProtDualDenoise)
        prot = self.newPick(self.raw, polarity=POLARITY_AUTO)
        prot.inputTomograms.set(denoise)
        prot.inputTomograms.setExtended('tomograms')
        self.assertEqual(prot._fallbackPolarity(), 'bright')
        phantom = self.newProtocol(
            ProtDualPhantom, numberOfPhantoms=1, sizeX=96, sizeY=96, sizeZ=48, voxelSize=VOXEL
        )
        prot = self.newPick(self.raw, polarity=POLARITY_AUTO)
        prot.inputTomograms.set(phantom)
        prot.inputTomograms.setExtended(OUT_TOMOGRAMS)
        self.assertEqual(prot._fallbackPolarity(), 'bright')

    def test_plot_draws_picks_coloured_by_score(self):
        volume = np.zeros((20, 40, 50), dtype=np.float32)
        xyz = np.array([[10, 10, 10], [30, 20, 12.5], [40, 30, 2]])  # the last is off-slab
        scores = np.array([0.3, 0.1, 0.2])
        figure = plotPicks(volume, xyz, scores, sliceIndex=10, thickness=3, radius=4)
        self.assertIsInstance(figure, Figure)
        circles = figure.axes[0].patches
        self.assertEqual(len(circles), 2)
        # Drawn worst first; the full circle at the slice, a smaller one 2.5 voxels off.
        self.assertAlmostEqual(circles[0].get_radius(), np.sqrt(16 - 2.5**2))
        self.assertAlmostEqual(circles[1].get_radius(), 4.0)
        self.assertNotEqual(circles[0].get_edgecolor(), circles[1].get_edgecolor())
        self.assertIn('2 of 3 picks', figure.axes[0].get_title())

    def test_viewer_shows_picks(self):
        viewer = DualPicksViewer(project=self.proj, protocol=self.binnedPick)
        viewer.setProtocol(self.binnedPick)
        for volume in (0, 1):  # picked (binned) tomogram, then the originals
            viewer.volume.set(volume)
            views = viewer._showPicks()
            self.assertEqual(len(views), 1)
            axes = views[0].getFigure().axes[0]
            self.assertGreater(len(axes.patches), 0)
            expected = SHAPE[1:] if volume else tuple(n // 2 for n in SHAPE[1:])
            self.assertEqual(axes.images[0].get_array().shape, expected)
