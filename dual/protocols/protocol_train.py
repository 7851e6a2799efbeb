import os
import re
from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow import BETA
from pwem.objects import Volume
from pyworkflow.utils import Message

from dual.constants import TRAINING_DIR
from dual.contract import engine, sentence
from dual.convert import formatDuration, readTrainingLog
from dual.objects import DualModel
from dual.protocols.protocol_base import ProtDualBase, itemKey

NOT_CONTINUING = 'not continueTraining'
DEFAULTS = engine.DualConfig()  # the engine's defaults, shown in the forms


class TrainOutputs(Enum):
    model = DualModel


def formName(setting):
    """The form parameter of an engine setting: lambda_rec -> lambdaRec."""
    return re.sub(r'_(\w)', lambda m: m.group(1).upper(), setting)


def engineName(name):
    """The engine setting of a form parameter: lambdaRec -> lambda_rec."""
    return re.sub(r'([A-Z])', lambda m: '_' + m.group(1).lower(), name)


def defineTrainingParams(form, condition, freshCondition, simulation=True):
    """The 'Training' and 'Model' form sections (shared with "dual - missing wedge").
    condition: when the iteration and logging settings show; freshCondition: when the
    network settings show (only for a model trained from scratch); simulation: whether
    the settings of the simulation path show (not for the wedge task, whose model does
    not simulate: the engine keeps the paper's there). Each parameter is named after its
    engine setting (formName) and takes the engine's default."""
    form.addSection(label='Training')
    form.addParam(
        'iterations',
        params.IntParam,
        default=DEFAULTS.iterations,
        validators=[params.Positive],
        condition=condition,
        label='Iterations',
        help='Training iterations of this run (added to the model\'s when '
        'continuing). Each iteration updates the discriminators and '
        'then the generators on one batch.',
    )
    form.addParam(
        'batchSize',
        params.IntParam,
        default=DEFAULTS.batch_size,
        validators=[params.GE(engine.MIN_BATCH)],
        condition=freshCondition,
        label='Batch size',
        help='Subvolumes per domain per iteration (and per GPU). At least %d: '
        'the noise-code KL term needs a batch covariance.' % engine.MIN_BATCH,
    )
    form.addParam(
        'seed',
        params.IntParam,
        default=DEFAULTS.seed,
        condition=freshCondition,
        label='Random seed',
        help='Initial weights and subvolume sampling; the same seed and data '
        'give the same model on one device.',
    )
    form.addParam(
        'checkpointEvery',
        params.IntParam,
        default=DEFAULTS.checkpoint_every,
        validators=[params.Positive],
        expertLevel=params.LEVEL_ADVANCED,
        condition=condition,
        label='Checkpoint every (iterations)',
        help='An interrupted run continues from its last checkpoint.',
    )
    form.addParam(
        'logEvery',
        params.IntParam,
        default=DEFAULTS.log_every,
        validators=[params.Positive],
        expertLevel=params.LEVEL_ADVANCED,
        condition=condition,
        label='Log every (iterations)',
        help='Iterations between progress lines (losses, ETA) and points of the training curves.',
    )
    form.addParam(
        'snapshotEvery',
        params.IntParam,
        default=DEFAULTS.snapshot_every,
        expertLevel=params.LEVEL_ADVANCED,
        condition=condition,
        label='Keep a snapshot every (iterations)',
        help='Model files of intermediate iterations, kept in the training folder\'s '
        '%s/ (0: none).' % engine.SNAPSHOT_DIR,
    )

    form.addSection(label='Model')
    form.addParam(
        'voxelSize',
        params.FloatParam,
        default=DEFAULTS.voxel_size,
        validators=[params.Positive],
        condition=freshCondition,
        label='Working voxel size (A)',
        help='Both domains are resampled to this voxel size for training, and '
        'every tomogram the model processes later too (the paper: 10 A). '
        'Choose it close to the voxel size of the tomograms to denoise.',
    )
    form.addParam(
        'subvolumeSize',
        params.IntParam,
        default=DEFAULTS.subvolume_size,
        validators=[params.GE(engine.SUBVOLUME_MULTIPLE)],
        condition=freshCondition,
        label='Subvolume size (voxels)',
        help='Side of the cubic training subvolumes at the working voxel '
        'size, a multiple of %d (the paper: 32).' % engine.SUBVOLUME_MULTIPLE,
    )
    form.addParam(
        'noisyContrast',
        params.EnumParam,
        choices=list(engine.CONTRASTS),
        default=engine.CONTRASTS.index(DEFAULTS.noisy_contrast),
        display=params.EnumParam.DISPLAY_HLIST,
        condition=freshCondition,
        label='Particle contrast of the noisy tomograms',
        help='Against the clean volumes. same: particles look alike in both '
        '(e.g. phantoms, or tomograms with inverted contrast against '
        'density maps). inverted: dark particles in raw reconstructions '
        'against bright density maps. free: no constraint, as in the '
        'paper (the output may come out with inverted contrast). auto: '
        'estimated from both inputs when training starts (free when '
        'unclear; the log says what was chosen).',
    )
    form.addParam(
        'codeSize',
        params.IntParam,
        default=DEFAULTS.code_size,
        validators=[params.Positive],
        condition=freshCondition,
        label='Noise code size',
        help='Dimension K of the code the noise decoder turns into noise.',
    )
    if simulation:
        form.addParam(
            'noiseScale',
            params.FloatParam,
            default=DEFAULTS.noise_scale,
            condition=freshCondition,
            expertLevel=params.LEVEL_ADVANCED,
            label='Noise level of the simulations',
            help='Standard deviation of the noise volumes the noise decoder adds to the '
            'clean maps (standardised) before the structural generator: 0 leaves it to '
            'training, as in the paper. Left free, training shrinks the noise and the '
            'simulations come out with too little of it away from the structures.',
        )
    line = form.addLine(
        'U-Net width and depth',
        condition=freshCondition,
        expertLevel=params.LEVEL_ADVANCED,
        help='Channels of the first level and number of poolings of '
        'the denoiser and structural generator.',
    )
    line.addParam(
        'unetWidth',
        params.IntParam,
        default=DEFAULTS.unet_width,
        validators=[params.Positive],
        label='width',
    )
    line.addParam(
        'unetDepth',
        params.IntParam,
        default=DEFAULTS.unet_depth,
        validators=[params.Positive],
        label='depth',
    )
    line = form.addLine(
        'Other widths',
        condition=freshCondition,
        expertLevel=params.LEVEL_ADVANCED,
        help='Channels of the noise encoder/decoder and discriminators.',
    )
    line.addParam(
        'noiseWidth',
        params.IntParam,
        default=DEFAULTS.noise_width,
        validators=[params.Positive],
        label='noise nets',
    )
    line.addParam(
        'discWidth',
        params.IntParam,
        default=DEFAULTS.disc_width,
        validators=[params.Positive],
        label='discriminators',
    )
    line = form.addLine(
        'Loss weights',
        condition=freshCondition,
        expertLevel=params.LEVEL_ADVANCED,
        help='L = w_rec L_rec + w_adv L_adv + w_KL L_KL (the paper: 1, 1, 0.1), plus, '
        'not in the paper, the contrast anchor and, for models that simulate, the '
        'simulations\' mean power spectrum against the noisy tomograms\' (missing '
        'wedge, CTF, noise colour).',
    )
    line.addParam(
        'lambdaRec', params.FloatParam, default=DEFAULTS.lambda_rec, label='reconstruction'
    )
    line.addParam('lambdaAdv', params.FloatParam, default=DEFAULTS.lambda_adv, label='adversarial')
    line.addParam('lambdaKl', params.FloatParam, default=DEFAULTS.lambda_kl, label='KL')
    if simulation:
        line.addParam(
            'lambdaSpectrum',
            params.FloatParam,
            default=DEFAULTS.lambda_spectrum,
            label='simulation spectrum',
        )
    line.addParam(
        'lambdaPolarity',
        params.FloatParam,
        default=DEFAULTS.lambda_polarity,
        label='contrast anchor',
    )
    optimiserSettings = [
        ('lr', 'Learning rate (AdamW)', None),
        (
            'discLrFactor',
            'Discriminators\' learning rate (x the above)',
            'Slower discriminators keep the adversarial pressure from pushing the '
            'generators away from a good solution late in training (0.5, measured on '
            'the benchmark; 1: the paper).',
        ),
        (
            'lrDecay',
            'Learning-rate decay (fraction of the run)',
            'Over this last fraction of the iterations the learning rate falls '
            'linearly to zero, so the final model is not a random point of the '
            'GAN\'s oscillation. 0: constant, as the paper.',
        ),
        (
            'weightAverage',
            'Weight average (decay)',
            'The model uses a moving average of the generators\' weights. Its decay '
            'grows with the iteration t as (1 + t) / (10 + t) up to this value, so the '
            'average spans about the last tenth of a run (about 45 iterations of 400) '
            'until the cap is reached (0.995: after about 1800 iterations, then the '
            'last 200). 0: the last weights, as the paper.',
        ),
    ]
    for name, label, helpText in optimiserSettings:
        form.addParam(
            name,
            params.FloatParam,
            default=getattr(DEFAULTS, engineName(name)),
            condition=freshCondition,
            expertLevel=params.LEVEL_ADVANCED,
            label=label,
            help=helpText,
        )


def trainingSettings(protocol, fresh):
    """{engine setting: form value} of the DualConfig settings a training form sets:
    all of them for a fresh model, only the schedule (iterations, intervals) when
    continuing one. A setting without a form parameter keeps the engine's default."""
    settings = {}
    for field in engine.settable_config_fields():
        role = field.metadata.get('role')
        param = getattr(protocol, formName(field.name), None)
        if param is None or role == 'task' or (not fresh and role != 'schedule'):
            continue
        value = param.get()
        if field.metadata.get('choices') and isinstance(value, int):  # an EnumParam
            value = field.metadata['choices'][value]
        settings[field.name] = value
    return settings


def trainingErrors(protocol, fresh, command='train'):
    """The engine's refusals of the form's training settings (a list of messages)."""
    settings = trainingSettings(protocol, fresh)
    error = engine.check_values(command, **settings)
    if error is None and fresh:
        try:
            engine.DualConfig(**settings)
        except engine.InputError as err:
            error = str(err)
    return [sentence(error)] if error else []


# the training summary's 'noise_share', in words
NOISE_SHARE_SOURCES = {
    'even/odd halves': "measured on the noisy tomograms' even/odd halves",
    'learned simulator': "the learned simulator's (the tomograms carry no even/odd halves)",
}


def trainingJob(protocol, outdir, gpus, fresh, iterations=None):
    """The part of a training job that "dual - train" and "dual - missing wedge" share:
    output folder, settings, resume and compute resources."""
    job = dict(
        trainingSettings(protocol, fresh),
        outdir=os.path.abspath(outdir),
        resume=True,  # a no-op without a checkpoint, i.e. on a fresh run
        device=protocol._engineDevice(gpus),
        processes=max(1, len(gpus)),
        threads=protocol._engineThreads(),
    )
    if iterations is not None:
        job['iterations'] = iterations
    return job


class ProtDualTrain(ProtDualBase):
    """Trains DUAL on unpaired noisy tomograms and clean volumes (no pairs, no labels).

    DUAL learns at once a denoiser (noisy -> clean) and a simulator (clean -> noisy:
    learned noise plus the structural distortions of the real data, CTF and missing
    wedge), from random subvolumes of both domains brought to one working voxel size.
    The clean domain can be grand models (e.g. from "dual - simulate phantoms" or maps
    built from atomic models) or high-SNR tomograms.

    Progress (losses and ETA) is written to the log every few iterations and a
    checkpoint is saved regularly: "Continue" resumes an interrupted run from its last
    checkpoint, and continuing a finished run with more iterations trains it further.
    A finished model can also be trained on, with other data, by a new run that
    continues from it.
    """

    _label = 'train'
    _devStatus = BETA
    _possibleOutputs = TrainOutputs

    # --------------------------- form ------------------------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam(
            'inputTomograms',
            params.PointerParam,
            pointerClass='SetOfTomograms',
            important=True,
            label='Noisy tomograms',
            help='Experimental (or simulated) tomograms: the noisy domain. Where every '
            'one carries its even/odd half tomograms (reconstructed from the even and '
            'the odd frames, as for cryoCARE), the noise model of simulation measures '
            'on them how much of each frequency is structure: simulations that are '
            'much harder to tell from the real tomograms (see the README).',
        )
        form.addParam(
            'cleanVolumes',
            params.PointerParam,
            pointerClass='SetOfTomograms,SetOfVolumes',
            important=True,
            label='Clean volumes',
            help='Noise-free density maps (grand models) or high-SNR tomograms: '
            'the clean domain. They need not show the same specimens as the '
            'noisy tomograms, but should hold similar structures.',
        )
        form.addParam(
            'continueTraining',
            params.BooleanParam,
            default=False,
            label='Continue from an earlier model?',
            help='Yes: start from the weights and iteration count of a DUAL '
            'model; its network and training settings are kept.',
        )
        form.addParam(
            'inputModel',
            params.PointerParam,
            pointerClass='DualModel',
            condition='continueTraining',
            label='Model to continue from',
        )

        defineTrainingParams(form, condition='True', freshCondition=NOT_CONTINUING)

        self._defineGpuParams(form)
        form.addParallelSection(threads=4, mpi=0)

    # --------------------------- steps -----------------------------------
    def _insertAllSteps(self):
        # The target iteration is an argument of the last two steps: continuing a finished
        # run with more iterations re-runs them, and training resumes from its checkpoint.
        target = self._targetIterations()
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.trainStep, target, needsGPU=self.usesGpu())
        self._insertFunctionStep(self.createOutputStep, target, needsGPU=False)

    def _domains(self):
        """(engine name prefix, input set) of the two domains."""
        return ('noisy', self.inputTomograms.get()), ('clean', self.cleanVolumes.get())

    def _domainInputName(self, prefix, item):
        return '%s_%s' % (prefix, itemKey(item))

    def _noisyHalves(self):
        """[(item key, its two half files)] of the noisy tomograms, in the set's order,
        when every one has two half maps; else None."""
        halves = [
            (itemKey(item), list(item.getHalfMaps(asList=True)))
            for item in self.inputTomograms.get().iterItems()
        ]
        return halves if halves and all(len(files) == 2 for _, files in halves) else None

    @staticmethod
    def _halfInputName(key, number):
        return 'noisy_%s_half%d' % (key, number)

    def convertInputStep(self):
        for prefix, inputSet in self._domains():
            for item in inputSet.iterItems():
                self._engineInputFile(item, self._domainInputName(prefix, item))
        for key, files in self._noisyHalves() or []:
            for number, path in enumerate(files, 1):
                self._engineInputFile(Volume(location=path), self._halfInputName(key, number))

    def _targetIterations(self):
        start = self.inputModel.get().getIterations() if self.continueTraining else 0
        return start + self.iterations.get()

    def _trainingDir(self):
        return self._getExtraPath(TRAINING_DIR)

    def trainStep(self, targetIterations):
        gpus = self._stepGpus()
        job = trainingJob(
            self,
            self._trainingDir(),
            gpus,
            fresh=not self.continueTraining,
            iterations=targetIterations,
        )
        for prefix, inputSet in self._domains():
            job[prefix] = [
                self._engineInputPath(self._domainInputName(prefix, item))
                for item in inputSet.iterItems()
            ]
            job['%s_voxel_size' % prefix] = inputSet.getSamplingRate()
        halves = self._noisyHalves()
        if halves:
            job['noisy_halves'] = [
                self._engineInputPath(self._halfInputName(key, number))
                for key, _ in halves
                for number in (1, 2)
            ]
        if self.continueTraining:
            job['init_model'] = os.path.abspath(self.inputModel.get().getPath())
        self.runEngineJob('train', job, 'train', useGpu=bool(gpus))

    def createOutputStep(self, targetIterations):
        model = self._dualModelFromFile(os.path.join(self._trainingDir(), engine.MODEL_FILE))
        self._defineOutputs(**{TrainOutputs.model.name: model})
        self._defineSourceRelation(self.inputTomograms, model)
        self._defineSourceRelation(self.cleanVolumes, model)
        if self.continueTraining:
            self._defineSourceRelation(self.inputModel, model)

    def getTrainingLogFile(self):
        """The engine's training log (JSON lines), read by the summary and the viewer."""
        return os.path.join(self._trainingDir(), engine.TRAINING_LOG)

    # --------------------------- info ------------------------------------
    def _workingGeometry(self):
        """(working voxel size, subvolume size) the run trains at, or None if unknown."""
        if not self.continueTraining:
            return self.voxelSize.get(), self.subvolumeSize.get()
        model = self.inputModel.get()
        return (model.getVoxelSize(), model.getSubvolumeSize()) if model else None

    def _validate(self):
        # A missing input or model is reported by pyworkflow ("*Noisy tomograms* cannot
        # be EMPTY."); the checks below that need it are skipped.
        errors = self._validateEngine() + self._gpuErrors()
        labels = {'noisy': 'Noisy tomograms', 'clean': 'Clean volumes'}
        for prefix, inputSet in self._domains():
            errors += self._setErrors(inputSet, labels[prefix])
        model = self.inputModel.get() if self.continueTraining else None
        if model is not None and not os.path.exists(model.getPath()):
            errors.append('The model file %s does not exist (moved or deleted?).' % model.getPath())
        errors += trainingErrors(self, fresh=not self.continueTraining)
        geometry = self._workingGeometry()
        if errors or geometry is None or any(s is None for _, s in self._domains()):
            return errors
        voxelSize, subvolumeSize = geometry
        for prefix, inputSet in self._domains():
            errors += self._tooSmallErrors(inputSet, labels[prefix], voxelSize, subvolumeSize)
        return errors

    def _warnings(self):
        warnings = []
        geometry = self._workingGeometry()
        for label, inputSet in (
            ('noisy tomograms', self.inputTomograms.get()),
            ('clean volumes', self.cleanVolumes.get()),
        ):
            if geometry is None or inputSet is None or not inputSet.getSamplingRate():
                continue
            ratio = self._voxelSizeRatio(inputSet.getSamplingRate(), geometry[0])
            if ratio > engine.MAX_VOXEL_SIZE_RATIO:
                warnings.append(
                    'The %s (%.2f A/px) are resampled %.1fx to the working voxel '
                    'size of %.2f A.' % (label, inputSet.getSamplingRate(), ratio, geometry[0])
                )
        tomograms = self.inputTomograms.get()
        if tomograms is not None and self._noisyHalves() is None:
            withHalves = sum(1 for t in tomograms.iterItems() if t.hasHalfMaps())
            if withHalves:
                warnings.append(
                    'Only %d of the %d noisy tomograms carry even/odd halves: the noise '
                    'model of simulation uses none of them.' % (withHalves, tomograms.getSize())
                )
        if not self.usesGpu():
            warnings.append('Training on the CPU is very slow: use it for small tests only.')
        if self.continueTraining:
            warnings.append(
                'The network and training settings of the model you continue '
                'from are kept; only the iterations and the log and checkpoint '
                'intervals of this form apply.'
            )
        return warnings

    def _summary(self):
        model = getattr(self, TrainOutputs.model.name, None)
        if model is not None:
            lines = [
                'DUAL model trained for %d iterations at %.2f A/voxel on %d^3 subvolumes.'
                % (model.getIterations(), model.getVoxelSize(), model.getSubvolumeSize())
            ]
            info = model.getTrainingInfo()
            losses = info.get('final_losses') or {}
            if losses:
                lines.append(
                    'Final losses: ' + ', '.join('%s %.3f' % (k, v) for k, v in losses.items())
                )
            source = NOISE_SHARE_SOURCES.get(info.get('noise_share'))
            if source:
                lines.append('Noise model of simulation: share of structure %s.' % source)
            return lines
        records = readTrainingLog(self.getTrainingLogFile())
        if not records:
            return []
        last = records[-1]
        return [
            'Training: iteration %d of %d, loss %.3f, %s left (estimated).'
            % (
                last['iteration'],
                last['iterations'],
                last['loss'],
                formatDuration(last['eta_seconds']),
            )
        ]

    def _methods(self):
        noisy, clean = self.inputTomograms.get(), self.cleanVolumes.get()
        if noisy is None or clean is None:
            return []
        text = (
            'We trained DUAL [Zeng2023DUAL] on %d noisy tomograms (%.2f A/voxel) and %d '
            'clean volumes (%.2f A/voxel), unpaired, '
            % (noisy.getSize(), noisy.getSamplingRate(), clean.getSize(), clean.getSamplingRate())
        )
        if self.continueTraining:
            model = self.inputModel.get()
            return [
                text + 'continuing a model trained for %d iterations at %.2f A/voxel on '
                '%d^3 subvolumes for %d more iterations.'
                % (
                    model.getIterations(),
                    model.getVoxelSize(),
                    model.getSubvolumeSize(),
                    self.iterations.get(),
                )
            ]
        return [
            text + 'both resampled to %.2f A/voxel, for %d iterations with batches of %d '
            '%d^3-voxel subvolumes per domain (U-Nets of width %d and depth %d, noise code '
            'of dimension %d; loss weights %g (reconstruction), %g (adversarial) and %g '
            '(KL); AdamW with learning rate %g; random seed %d).'
            % (
                self.voxelSize.get(),
                self.iterations.get(),
                self.batchSize.get(),
                self.subvolumeSize.get(),
                self.unetWidth.get(),
                self.unetDepth.get(),
                self.codeSize.get(),
                self.lambdaRec.get(),
                self.lambdaAdv.get(),
                self.lambdaKl.get(),
                self.lr.get(),
                self.seed.get(),
            )
        ]

    def _citations(self):
        return ['Zeng2023DUAL']
