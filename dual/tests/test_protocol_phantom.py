"""Foundation tests: phantoms imported into a Scipion project, and the engine run
from a protocol through Plugin.runEngine (no mocks: the real engine runs)."""

import os

import mrcfile
import numpy as np
from pyworkflow.tests import setupTestProject
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.protocols import ProtImportTomograms
from tomo.tests.test_base_centralized_layer import TestBaseCentralizedLayer

from dual.protocols import ProtDualPhantom
from dual.contract import engine
from dual.protocols.protocol_phantom import (
    OUT_CLASS_MASKS,
    OUT_COORDINATES,
    OUT_GRAND_MODELS,
    OUT_TOMOGRAMS,
)
from dual.tests.phantoms import makePhantoms, SMALL_SHAPE, SMALL_VOXEL_SIZE


class TestDualPhantom(TestBaseCentralizedLayer):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.phantomDir = cls.getOutputPath('phantoms')
        cls.phantoms = makePhantoms(cls.phantomDir, seeds=(0, 1))

    def test_import_phantom_tomograms(self):
        """tomo's own import protocol reads the engine's reconstructions and headers."""
        prot = self.newProtocol(
            ProtImportTomograms,
            filesPath=self.phantomDir,
            filesPattern='*/reconstruction.mrc',
            samplingRate=SMALL_VOXEL_SIZE,
        )
        self.launchProtocol(prot)
        z, y, x = SMALL_SHAPE
        self.checkTomograms(
            prot.Tomograms,
            expectedSetSize=2,
            expectedSRate=SMALL_VOXEL_SIZE,
            expectedDimensions=[x, y, z],
        )

    def test_phantom_protocol_runs_engine(self):
        """ProtDualPhantom calls the engine through Plugin.runEngine and a job file."""
        z, y, x = SMALL_SHAPE
        prot = self.newProtocol(
            ProtDualPhantom,
            numberOfPhantoms=2,
            seed=3,
            sizeX=x,
            sizeY=y,
            sizeZ=z,
            voxelSize=12.0,
            tiltMin=-50,
            tiltMax=70,
            tiltStep=4,
            numberOfThreads=3,
        )
        self.launchProtocol(prot)
        for name in (OUT_TOMOGRAMS, OUT_GRAND_MODELS):
            outSet = getattr(prot, name)
            withHalves = name == OUT_TOMOGRAMS  # each tomogram's even/odd halves
            self.checkTomograms(
                outSet,
                expectedSetSize=2,
                expectedSRate=12.0,
                expectedDimensions=[x, y, z],
                hasOddEven=withHalves,
                hasHalves=withHalves,
            )
            self.assertEqual(sorted(t.getTsId() for t in outSet), ['TS_03', 'TS_04'])
        # The halves (checked to exist above) lie on their tomogram's grid.
        for tomo in getattr(prot, OUT_TOMOGRAMS):
            halves = list(tomo.getHalfMaps(asList=True))
            self.assertEqual(
                [os.path.basename(h) for h in halves],
                ['reconstruction_odd.mrc', 'reconstruction_even.mrc'],
            )
            for half in halves:
                with mrcfile.open(half, header_only=True) as h:
                    self.assertEqual((int(h.header.nx), int(h.header.nz)), (x, z))
                    self.assertAlmostEqual(float(h.voxel_size.x), 12.0, places=3)
        tomo = getattr(prot, OUT_TOMOGRAMS).getFirstItem()
        acq = tomo.getAcquisition()
        self.assertEqual((acq.getAngleMin(), acq.getAngleMax(), acq.getStep()), (-50, 70, 4))
        # The tomogram carries the grand model's signal, weakly: a low-SNR phantom.
        model = getattr(prot, OUT_GRAND_MODELS)[tomo.getObjId()]
        with mrcfile.open(tomo.getFileName()) as t, mrcfile.open(model.getFileName()) as m:
            r = np.corrcoef(t.data.ravel(), m.data.ravel())[0, 1]
        self.assertGreater(r, 0.0)
        self.assertLess(r, 0.6)
        # Class masks and true coordinates on the tomograms, registered to each other:
        # the mask at each coordinate is the coordinate's class.
        masks = {m.getTsId(): m.clone() for m in getattr(prot, OUT_CLASS_MASKS)}
        self.checkTomoMasks(
            getattr(prot, OUT_CLASS_MASKS),
            expectedSetSize=2,
            expectedSRate=12.0,
            expectedDimensions=[x, y, z],
        )
        coords = getattr(prot, OUT_COORDINATES)
        self.assertEqual(coords.getSamplingRate(), 12.0)
        self.assertEqual(coords.getBoxSize(), 28)  # 320 A at 12 A/px, even
        tomograms = {t.getTsId(): t.clone() for t in getattr(prot, OUT_TOMOGRAMS)}
        for tsId in ('TS_03', 'TS_04'):
            with mrcfile.open(masks[tsId].getFileName()) as m:
                classMask = np.array(m.data)
            folder = prot._getExtraPath(tsId)
            particles = [
                p
                for p in engine.read_particle_locations(
                    os.path.join(folder, 'particle_locations.txt')
                )
                if p.name not in engine.PHANTOM_CONTEXT_CLASSES
            ]
            # (iterCoordinates reuses one object: read each while iterating)
            points = [
                (c.getPosition(BOTTOM_LEFT_CORNER), c.getGroupId())
                for c in coords.iterCoordinates(volume=tomograms[tsId])
            ]
            self.assertGreater(len(points), 0)
            self.assertEqual(
                sorted(xyz for xyz, _ in points), sorted((p.x, p.y, p.z) for p in particles)
            )
            for xyz, group in points:
                px, py, pz = (int(round(v)) for v in xyz)
                self.assertEqual(classMask[pz, py, px], group)
        # The engine's job file is left for the user to re-run the step by hand.
        self.assertTrue(os.path.exists(prot._getExtraPath('phantom_TS_03.json')))

    def test_validate_rejects_bad_tilts(self):
        prot = self.newProtocol(ProtDualPhantom, tiltMin=30, tiltMax=-30)
        errors = prot.validate()
        self.assertTrue(any('minimum tilt' in e for e in errors), errors)
