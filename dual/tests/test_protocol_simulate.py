"""ProtDualSimulate with a tiny model trained on phantoms: synthetic tomograms from the
grand models with their class masks and true coordinates (the phantom protocol's
outputs) registered to them, reproducible per seed; maps given as volumes; form
checks; viewers."""

import os

import matplotlib.pyplot as plt
import mrcfile
import numpy as np
from pwem.protocols import ProtImportVolumes
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import SetOfCoordinates3D, SetOfTomoMasks

from dual.contract import engine
from dual.objects import DualModel
from dual.protocols import ProtDualSimulate
from dual.protocols.protocol_simulate import SimulateOutputs
from dual.tests.phantoms import SMALL_VOXEL_SIZE
from dual.tests.workflow import PHANTOM_DIMENSIONS, DualWorkflowTest
from dual.viewers import DualSimulateViewer


def readData(tomo):
    with mrcfile.open(tomo.getFileName()) as mrc:
        return np.array(mrc.data)


def byTsId(outSet):
    return {item.getTsId(): item.clone() for item in outSet}


class TestDualSimulate(DualWorkflowTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.train, cls.model = cls.runTraining()
        cls.simulate = cls.newSimulate(
            labels=cls.classMasks,
            coordinates=cls.trueCoordinates,
            variants=2,
            seed=3,
            numberOfThreads=3,
        )
        cls.launchProtocol(cls.simulate)
        cls.synthetic = byTsId(getattr(cls.simulate, SimulateOutputs.tomograms.name))

    @classmethod
    def newSimulate(cls, maps=None, labels=None, coordinates=None, **values):
        prot = cls.newProtocol(ProtDualSimulate, **dict(dict(useGpu=False), **values))
        prot.inputModel.set(cls.model)
        prot.inputMaps.set(cls.grandModels if maps is None else maps)
        if labels is not None:
            prot.inputLabels.set(labels)
        if coordinates is not None:
            prot.inputCoordinates.set(coordinates)
        return prot

    def test_synthetic_tomograms_per_map_and_variant(self):
        outSet = getattr(self.simulate, SimulateOutputs.tomograms.name)
        grandModel = self.grandModels.getFirstItem()
        self.checkTomograms(
            outSet,
            expectedSetSize=4,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=PHANTOM_DIMENSIONS,
            expectedOriginShifts=grandModel.getOrigin().getShifts(),
            testAcqObj=grandModel.getAcquisition(),
        )
        self.assertEqual(
            sorted(self.synthetic), ['TS_00_sim00', 'TS_00_sim01', 'TS_01_sim00', 'TS_01_sim01']
        )
        # Each variant and each map has its own noise.
        data = {tsId: readData(tomo) for tsId, tomo in self.synthetic.items()}
        self.assertFalse(np.allclose(data['TS_00_sim00'], data['TS_00_sim01']))
        self.assertTrue(all(np.all(np.isfinite(d)) for d in data.values()))
        self.assertIn(
            '4 synthetic tomograms (2 per map, seed 3, fitted noise) from 2 maps',
            ' '.join(self.simulate.summary()),
        )
        self.assertIn('We simulated 4 tomograms', ' '.join(self.simulate.methods()))
        self.assertIn('with the fitted noise model', ' '.join(self.simulate.methods()))
        self.assertIn(
            "maps' label masks and particle coordinates were carried over",
            ' '.join(self.simulate.methods()),
        )

    def test_label_masks_follow_the_synthetic_tomograms(self):
        masks = getattr(self.simulate, SimulateOutputs.labels.name)
        self.assertIsInstance(masks, SetOfTomoMasks)
        self.checkTomoMasks(
            masks,
            expectedSetSize=4,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=PHANTOM_DIMENSIONS,
        )
        inputMasks = byTsId(self.classMasks)
        for mask in masks:
            tsId = mask.getTsId()
            # Linked to its synthetic tomogram, holding its map's labels.
            self.assertEqual(mask.getVolName(), self.synthetic[tsId].getFileName())
            np.testing.assert_array_equal(
                readData(mask), readData(inputMasks[tsId.split('_sim')[0]])
            )

    def test_coordinates_follow_the_synthetic_tomograms(self):
        coords = getattr(self.simulate, SimulateOutputs.coordinates.name)
        self.assertIsInstance(coords, SetOfCoordinates3D)
        self.assertEqual(coords.getSamplingRate(), SMALL_VOXEL_SIZE)
        self.assertEqual(coords.getBoxSize(), self.trueCoordinates.getBoxSize())
        self.assertEqual(
            sorted(t.getTsId() for t in coords.getPrecedents()), sorted(self.synthetic)
        )
        truth = {}
        for coord in self.trueCoordinates.iterCoordinates():
            truth.setdefault(coord.getTomoId(), []).append(
                (coord.getPosition(BOTTOM_LEFT_CORNER), coord.getGroupId())
            )
        self.assertEqual(coords.getSize(), 2 * sum(len(v) for v in truth.values()))
        masks = {
            m.getTsId(): readData(m) for m in getattr(self.simulate, SimulateOutputs.labels.name)
        }
        for tsId, tomo in self.synthetic.items():
            points = [
                (c.getPosition(BOTTOM_LEFT_CORNER), c.getGroupId())
                for c in coords.iterCoordinates(volume=tomo)
            ]
            source = truth[tsId.split('_sim')[0]]
            self.assertEqual(len(points), len(source))
            for (xyz, group), (trueXyz, trueGroup) in zip(points, source):
                np.testing.assert_allclose(xyz, trueXyz, atol=1e-6)
                self.assertEqual(group, trueGroup)
                # Registered to the synthetic tomogram's labels: the class mask at
                # the coordinate is the coordinate's class.
                x, y, z = (int(round(v)) for v in xyz)
                self.assertEqual(masks[tsId][z, y, x], group)
        self.assertIn('coordinates follow their maps', ' '.join(self.simulate.summary()))

    def test_same_seed_reproduces_another_seed_differs(self):
        again = self.newSimulate(variants=1, seed=3)
        other = self.newSimulate(variants=1, seed=4)
        learned = self.newSimulate(
            variants=1, seed=3, noiseModel=engine.NOISE_MODELS.index('learned')
        )
        for prot in (again, other, learned):
            self.launchProtocol(prot)
            self.assertIsNone(getattr(prot, SimulateOutputs.labels.name, None))
            self.assertIsNone(getattr(prot, SimulateOutputs.coordinates.name, None))
        reference = readData(self.synthetic['TS_01_sim00'])
        np.testing.assert_array_equal(
            readData(byTsId(getattr(again, SimulateOutputs.tomograms.name))['TS_01_sim00']),
            reference,
        )
        self.assertFalse(
            np.allclose(
                readData(byTsId(getattr(other, SimulateOutputs.tomograms.name))['TS_01_sim00']),
                reference,
            )
        )
        # The paper's noise model: another tomogram of the same map, said so.
        self.assertFalse(
            np.allclose(
                readData(byTsId(getattr(learned, SimulateOutputs.tomograms.name))['TS_01_sim00']),
                reference,
            )
        )
        self.assertIn('seed 3, learned noise', ' '.join(learned.summary()))
        self.assertIn('noise codes were drawn', ' '.join(learned.methods()))

    def test_maps_given_as_volumes(self):
        volumes = self.newProtocol(
            ProtImportVolumes,
            filesPath=os.path.abspath(self.phantoms._getExtraPath()),
            filesPattern='*/grandmodel.mrc',
            samplingRate=SMALL_VOXEL_SIZE,
        )
        self.launchProtocol(volumes)
        prot = self.newSimulate(maps=volumes.outputVolumes)
        self.assertEqual(prot.validate(), [])
        self.launchProtocol(prot)
        outSet = getattr(prot, SimulateOutputs.tomograms.name)
        self.checkTomograms(
            outSet,
            expectedSetSize=2,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=PHANTOM_DIMENSIONS,
        )
        self.assertEqual(sorted(t.getTsId() for t in outSet), ['vol001_sim00', 'vol002_sim00'])
        # Label masks and coordinates are matched by tsId, which plain volumes lack.
        self.assertError(
            self.newSimulate(maps=volumes.outputVolumes, labels=self.classMasks),
            'give the maps as tomograms',
        )
        self.assertError(
            self.newSimulate(maps=volumes.outputVolumes, coordinates=self.trueCoordinates),
            'Particle coordinates are matched to the maps by tsId',
        )

    def test_viewers_draw(self):
        viewer = DualSimulateViewer(project=self.proj, protocol=self.simulate)
        viewer.setProtocol(self.simulate)
        views = viewer._showMapVsSynthetic()
        self.assertEqual(len(views[0].getFigure().axes), 8)
        views += viewer._showRealVsSynthetic()
        self.assertEqual([len(v.getFigure().axes) for v in views], [8, 8, 2])
        for view in views:
            plt.close(view.getFigure())

    # --------------------------- form checks -----------------------------
    def assertError(self, prot, text):
        errors = prot.validate()
        self.assertTrue(any(text in e for e in errors), 'no error with %r in %s' % (text, errors))

    def test_validate_accepts_maps_with_labels(self):
        self.assertEqual(self.newSimulate(labels=self.classMasks).validate(), [])

    def test_validate_rejects_maps_without_a_mask(self):
        # The class masks are matched to the grand models; the tomograms are at the same
        # tsIds, so mismatch the labels by giving one mask set that lacks a tsId.
        partial = SetOfTomoMasks(filename=self.getOutputPath('partial_masks.sqlite'))
        partial.copyInfo(self.classMasks)
        mask = self.classMasks.getFirstItem().clone()
        mask.cleanObjId()
        partial.append(mask)
        self.assertError(self.newSimulate(labels=partial), 'there is no mask with tsId TS_01')

    def test_validate_rejects_a_model_at_another_voxel_size(self):
        prot = self.newSimulate()
        prot.inputModel.set(
            DualModel(path=self.model.getPath(), voxelSize=4.0, subvolumeSize=16, iterations=4)
        )
        self.assertError(prot, '2.5x apart')

    def test_validate_rejects_the_fitted_noise_of_an_older_model(self):
        # The trained model has both noise models; one from an earlier version (no
        # 'noise_models' in its training summary) only the learned one.
        self.assertEqual(self.model.getNoiseModels(), list(engine.NOISE_MODELS))
        older = DualModel(
            path=self.model.getPath(),
            voxelSize=self.model.getVoxelSize(),
            subvolumeSize=self.model.getSubvolumeSize(),
            iterations=self.model.getIterations(),
        )
        fitted = self.newSimulate()
        fitted.inputModel.set(older)
        self.assertError(fitted, 'no fitted noise model')
        learned = self.newSimulate(noiseModel=engine.NOISE_MODELS.index('learned'))
        learned.inputModel.set(older)
        self.assertEqual(learned.validate(), [])
