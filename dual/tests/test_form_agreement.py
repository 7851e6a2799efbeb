"""The forms refuse exactly what the engine refuses: grids of values through a form's
validate() and through the engine's own checks (the engine's contract.Job, what the
command line and job files go through before any work), side by side."""

import itertools

from dual.contract import engine, optionField, sentence
from dual.objects import DualModel
from dual.protocols import ProtDualDenoise, ProtDualPick, ProtDualWedge
from dual.protocols.protocol_pick import SELECT_THRESHOLD
from dual.protocols.protocol_wedge import RANGE_GIVEN
from dual.tests.workflow import TINY_TRAINING, DualWorkflowTest


def engineError(command, values, extra=None):
    """The engine's message for a job, or None when it accepts it."""
    try:
        engine.Job(command, values)
        if extra:
            extra()
    except engine.InputError as err:
        return str(err)
    return None


class TestFormsAgreeWithTheEngine(DualWorkflowTest):
    def formErrors(self, prot):
        return [e for e in prot.validate() if 'engine' not in e.lower()]

    def assertAgree(self, prot, command, values, extra=None):
        formErrors = self.formErrors(prot)
        engine = engineError(command, values, extra)
        label = '%s %s: form %s, engine %s' % (command, values, formErrors, engine)
        self.assertEqual(bool(formErrors), engine is not None, label)
        if engine is not None:  # the form says it with the engine's own words
            self.assertTrue(any(engine.lower() in e.lower() for e in formErrors), label)

    def wedgeForm(self, tmin, tmax):
        prot = self.newProtocol(
            ProtDualWedge, tiltRangeSource=RANGE_GIVEN, tiltMin=tmin, tiltMax=tmax, **TINY_TRAINING
        )
        prot.inputTomograms.set(self.tomograms)
        return prot

    def test_tilt_ranges(self):
        base = dict(outdir='o', tomograms=['t.mrc'])
        grid = [
            (float(a), float(b)) for a, b in itertools.product(range(-85, 5, 10), range(-5, 90, 10))
        ]
        for tmin, tmax in grid + [(-40.0, 60.0), (-30.0, 60.0), (-60.0, 40.0), (-50.0, 70.0)]:
            self.assertAgree(
                self.wedgeForm(tmin, tmax), 'wedge-train', dict(base, tilt_range=[tmin, tmax])
            )
        # The ranges a user met in the form that only the engine refused before.
        for bad in [(-40.0, 60.0), (-30.0, 60.0), (-60.0, 40.0)]:
            self.assertTrue(self.formErrors(self.wedgeForm(*bad)))

    def test_training_settings(self):
        base = dict(outdir='o', noisy=['n.mrc'], clean=['c.mrc'])
        cases = (
            [dict(subvolumeSize=s) for s in (8, 12, 16, 20, 24, 30, 32)]
            + [dict(batchSize=b) for b in (1, 2, 3)]
            + [dict(unetDepth=d) for d in (1, 2, 3, 4)]
            + [dict(iterations=i) for i in (1, 5)]
            + [dict(lambdaKl=w) for w in (-0.1, 0.0, 0.1)]
            + [dict(lambdaAdv=w) for w in (-1.0, 1.0)]
            + [dict(noisyContrast=c) for c in range(4)]
            + [dict(lambdaPolarity=w) for w in (-1.0, 0.0, 10.0)]
            + [dict(lambdaSpectrum=w) for w in (-1.0, 0.0, 1.0)]
            + [dict(noiseScale=w) for w in (-1.0, 0.0, 2.0)]
            + [dict(lrDecay=f) for f in (-0.1, 0.0, 0.5, 1.0, 1.5)]
            + [dict(discLrFactor=f) for f in (-1.0, 0.0, 0.5)]
            + [dict(weightAverage=d) for d in (-0.1, 0.0, 0.995, 1.0)]
            + [dict(snapshotEvery=n) for n in (-1, 0, 100)]
        )
        engineNames = {
            'subvolumeSize': 'subvolume_size',
            'batchSize': 'batch_size',
            'unetDepth': 'unet_depth',
            'iterations': 'iterations',
            'lambdaKl': 'lambda_kl',
            'lambdaAdv': 'lambda_adv',
            'noisyContrast': 'noisy_contrast',
            'lambdaPolarity': 'lambda_polarity',
            'lambdaSpectrum': 'lambda_spectrum',
            'noiseScale': 'noise_scale',
            'lrDecay': 'lr_decay',
            'discLrFactor': 'disc_lr_factor',
            'weightAverage': 'weight_average',
            'snapshotEvery': 'snapshot_every',
        }
        for case in cases:
            prot = self.newTraining(**case)
            ((name, value),) = case.items()
            if name == 'noisyContrast':
                value = engine.CONTRASTS[value]
            self.assertAgree(prot, 'train', dict(base, **{engineNames[name]: value}))

    def test_pick_diameters(self):
        rate = self.tomograms.getSamplingRate()
        for diameter, threshold in itertools.product(
            (-5.0, 0.0, 1.5 * rate, 2 * rate, 300.0), (None, 0.1)
        ):
            prot = self.newProtocol(ProtDualPick, particleDiameter=diameter)
            values = dict(tomogram='t.mrc', outdir='o', diameter=diameter, top=500)
            if threshold is not None:
                prot.selection.set(SELECT_THRESHOLD)
                prot.scoreThreshold.set(threshold)
                values = dict(values, top=None, threshold=threshold)
            prot.inputTomograms.set(self.tomograms)
            self.assertAgree(
                prot,
                'pick',
                {k: v for k, v in values.items() if v is not None},
                extra=lambda: engine.check_diameter(diameter, rate),
            )

    def test_model_voxel_sizes_and_subvolumes(self):
        """What a model can be applied to: the voxel-size ratio and the subvolume fit."""
        modelFile = self.getOutputPath('model.pt')
        open(modelFile, 'w').close()  # validate() only asks that the file exists
        rate = self.tomograms.getSamplingRate()
        tomograms = list(self.tomograms.iterItems())
        for modelVoxel, subvolume in itertools.product(
            (rate / 3, rate / 2, rate * 0.7, rate, rate * 1.9, rate * 2.5), (16, 32, 64, 128)
        ):
            prot = self.newProtocol(ProtDualDenoise, useGpu=False)
            prot.inputModel.set(
                DualModel(
                    path=modelFile, voxelSize=modelVoxel, subvolumeSize=subvolume, iterations=1000
                )
            )
            prot.inputTomograms.set(self.tomograms)

            def engineChecks():
                engine.check_voxel_size_ratio(rate, modelVoxel, 'The input volumes')
                for tomo in tomograms:
                    engine.check_fits_subvolume(
                        tomo.getTsId(), tomo.getDim(), rate, modelVoxel, subvolume
                    )

            values = dict(model=modelFile, inputs=['t.mrc'], outdir='o')
            self.assertAgree(prot, 'denoise', values, extra=engineChecks)

    def test_flip_average(self):
        """The forms' flipAverage is the engine's flip_average of their command: its
        default (off for denoise, on for the wedge) and help, and each value the form can
        take goes into a job the engine accepts."""
        self.assertIs(optionField('denoise', 'flip_average').default, False)
        self.assertIs(optionField('wedge', 'flip_average').default, True)
        for cls, command, values in (
            (ProtDualDenoise, 'denoise', dict(model='m.pt', inputs=['t.mrc'], outdir='o')),
            (ProtDualWedge, 'wedge', dict(model='m.pt', inputs=['t.mrc'], outdir='o')),
        ):
            field = optionField(command, 'flip_average')
            prot = self.newProtocol(cls)
            param = prot.getParam('flipAverage')
            self.assertIs(prot.flipAverage.get(), field.default, cls.__name__)
            self.assertIn(sentence(field.metadata['help']), param.help.get(), cls.__name__)
            self.assertIn(str(engine.FLIP_AVERAGE_COUNT), param.help.get(), cls.__name__)
            for value in (False, True):
                prot = self.newProtocol(cls, flipAverage=value, useGpu=False)
                self.assertIsNone(
                    engineError(command, dict(values, flip_average=prot.flipAverage.get()))
                )
