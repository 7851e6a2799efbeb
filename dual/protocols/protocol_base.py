"""What the DUAL protocols share: the engine call through a job file, the compute
resources (GPUs or CPU threads), engine input files, model files and input checks;
and the base of the two protocols that apply a trained model (denoise, simulate)."""

import json
import os
import re
import shutil
import subprocess

import mrcfile
import pyworkflow.protocol.params as params
import pyworkflow.utils as pwutils
from pwem.convert.headers import setMRCSamplingRate
from pwem.emlib.image import ImageHandler
from pwem.protocols import EMProtocol
from pyworkflow.object import Set
from pyworkflow.protocol import STEPS_PARALLEL, Protocol
from pyworkflow.utils import Message
from tomo.objects import SetOfTomograms, Tomogram
from tomo.protocols import ProtTomoBase

from dual import Plugin
from dual.constants import MIN_USEFUL_ITERATIONS, MODEL_INFO_FILE, MRC_EXTENSIONS
from dual.contract import engine, firstError, optionField, sentence
from dual.objects import DualModel


class ProtDualBase(EMProtocol, ProtTomoBase):
    """Base of the DUAL protocols (not shown in the GUI)."""

    _label = None

    # --------------------------- the engine ------------------------------
    def runEngineJob(self, command, job, name, useGpu=False):
        """Write `job` to extra/<name>.json and run `dual-engine COMMAND --job` on it.

        The job is checked by the engine's contract first (None values are left out),
        so a bad value fails here with the engine's message, before the engine starts.
        The job file stays in extra/: a user can re-run the step by hand with
        `python -m dual_engine COMMAND --job extra/<name>.json`.
        useGpu: restrict the engine to the step's GPUs (CUDA_VISIBLE_DEVICES).
        """
        job = engine.make_job(command, **job)
        jobFile = self._getExtraPath('%s.json' % name)
        with open(jobFile, 'w') as f:
            json.dump(job, f, indent=1)
        Plugin.runEngine(self, command, ['--job', os.path.abspath(jobFile)], useGpu=useGpu)

    def getOutputContrast(self):
        """'bright' or 'dark': the particle contrast of this protocol's output tomograms,
        None when it is not known (the picker's "auto" contrast reads it)."""
        return None

    def _validateEngine(self):
        """Errors if the engine environment does not work (see Plugin.validateEngine)."""
        return Plugin.validateEngine()

    # --------------------------- GPUs and threads -------------------------
    @staticmethod
    def _defineGpuParams(form):
        """GPU choice in the form's run section. 'Use GPU = No' runs on CPU threads."""
        form.addHidden(
            params.USE_GPU,
            params.BooleanParam,
            default=True,
            label='Use GPU',
            help='No: run on the CPU with the number of threads given below '
            '(much slower, fine for small data and tests).',
        )
        form.addHidden(
            params.GPU_LIST,
            params.StringParam,
            default='0',
            label='GPU IDs',
            help='GPUs to use, e.g. "0" or "0 1". Steps that run at the same '
            'time share them out (one GPU per tomogram when threads = '
            'GPUs + 1); a training step given several GPUs trains on all '
            'of them (DistributedDataParallel).',
        )

    def _stepGpus(self):
        """GPU ids of the running step: [] when the user chose the CPU."""
        if not self.usesGpu():
            return []
        return list(self._stepsExecutor.getGpuList() or [])

    @staticmethod
    def _engineDevice(gpus):
        """The engine's --device for a step given `gpus`. Inside the step the engine
        sees its GPUs renumbered from 0 (CUDA_VISIBLE_DEVICES), so 'cuda' suffices."""
        return 'cuda' if gpus else 'cpu'

    def _engineThreads(self):
        """CPU threads for one engine call: the protocol's threads shared among the steps
        that run at once (threads - 1 of them in parallel mode, one otherwise)."""
        threads = max(1, self.numberOfThreads.get())
        concurrent = threads - 1 if self.modeParallel() and threads > 1 else 1
        return max(1, threads // concurrent)

    def _gpuErrors(self):
        """'Use GPU = Yes' with GPU ids this machine does not have: refused by the form
        instead of failing in the step. Not checked when the protocol runs through a
        queue or on another host, whose GPUs are not this machine's."""
        if not self.usesGpu() or self.useQueue():
            return []
        host = getattr(self, 'hostName', None)
        if host is not None and host.get() not in (None, '', 'localhost'):
            return []
        try:
            ids = self.getGpuList()
        except ValueError:
            return [
                'GPU IDs "%s": give GPU numbers such as "0" or "0 1", or choose '
                '"Use GPU = No" to run on the CPU.' % self.gpuList.get()
            ]
        return gpuErrors(ids, localGpuIds())

    # --------------------------- files -----------------------------------
    def _engineInputPath(self, name):
        """extra/inputs/<name>.mrc (absolute): where the engine reads input `name`.
        Names of our own keep the engine's outputs apart when inputs share a file name."""
        return os.path.abspath(self._getExtraPath('inputs', '%s.mrc' % name))

    def _engineInputFile(self, image, name):
        """Make _engineInputPath(name) for `image`: a link to its MRC file, or an MRC
        conversion of other formats and of volumes inside a stack. Returns the path."""
        target = self._engineInputPath(name)
        pwutils.makePath(os.path.dirname(target))
        index, fileName = image.getLocation()
        fileName = fileName.split(':')[0]  # drop Scipion's format hint (file.rec:mrc)
        if os.path.splitext(fileName)[1].lower() in MRC_EXTENSIONS and (index or 1) == 1:
            pwutils.createLink(fileName, target)
        else:
            ImageHandler().convert(image, target)
        return target

    @staticmethod
    def _setHeaderSamplingRate(path, samplingRate):
        """Make sure the MRC header of an output says `samplingRate` (A/voxel)."""
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            headerRate = float(mrc.voxel_size.x)
        if abs(headerRate - samplingRate) > 1e-3:
            setMRCSamplingRate(path, samplingRate)

    def _copyWithSamplingRate(self, image, name):
        """extra/<name>.mrc: a copy of `image` (e.g. a label mask) whose header carries
        the image's sampling rate. The input's own file is never modified."""
        target = self._getExtraPath('%s.mrc' % name)
        fileName = image.getFileName().split(':')[0]
        if os.path.splitext(fileName)[1].lower() in MRC_EXTENSIONS:
            shutil.copyfile(fileName, target)
        else:
            ImageHandler().convert(image, target)
        self._setHeaderSamplingRate(target, image.getSamplingRate())
        return target

    # --------------------------- models ----------------------------------
    def _readModelInfo(self, modelPath):
        """Run `dual-engine model-info` on a model file and return what it reports:
        {'config': {voxel_size, subvolume_size, ...}, 'iteration', 'training', ...}.
        The plugin never loads a model itself (that would need torch)."""
        infoFile = os.path.abspath(self._getExtraPath(MODEL_INFO_FILE))
        self.runEngineJob(
            'model-info', {'model': os.path.abspath(modelPath), 'output': infoFile}, 'model_info'
        )
        with open(infoFile) as f:
            return json.load(f)

    def _dualModelFromFile(self, modelPath):
        """The DualModel output for an engine model file, with the file's own values."""
        info = self._readModelInfo(modelPath)
        config = info['config']
        return DualModel(
            path=modelPath,
            voxelSize=config['voxel_size'],
            subvolumeSize=config['subvolume_size'],
            iterations=info['iteration'],
            summary=json.dumps(info.get('training') or {}),
            config=json.dumps(config),
        )

    # --------------------------- input checks ----------------------------
    @staticmethod
    def _setErrors(inputSet, label):
        """An empty set, or one without a usable sampling rate. None when no set is
        selected: pyworkflow reports a missing input itself ("*Label* cannot be EMPTY."),
        so the caller stops there, without a second message for the same value."""
        if inputSet is None:
            return []
        if inputSet.getSize() == 0:
            return ['%s: the set is empty.' % label]
        if not inputSet.getSamplingRate() or inputSet.getSamplingRate() <= 0:
            return [
                '%s: the sampling rate is not set (%s A/px); fix it on import.'
                % (label, inputSet.getSamplingRate())
            ]
        return []

    @staticmethod
    def _tooSmallErrors(inputSet, label, workingVoxelSize, subvolumeSize):
        """Volumes that, brought to the working voxel size, are thinner than a subvolume
        (the engine's rule, engine.check_fits_subvolume)."""
        errors = []
        for item in inputSet.iterItems():
            error = firstError(
                engine.check_fits_subvolume,
                '%s: %s' % (label, itemKey(item)),
                item.getDim(),
                item.getSamplingRate(),
                workingVoxelSize,
                subvolumeSize,
            )
            if error:
                errors.append(error)
        return errors

    @staticmethod
    def _voxelSizeRatio(samplingRate, workingVoxelSize):
        """How far apart two voxel sizes are, as a factor >= 1."""
        return max(samplingRate, workingVoxelSize) / min(samplingRate, workingVoxelSize)


NVIDIA_PROC_GPUS = '/proc/driver/nvidia/gpus'  # one folder per GPU the driver sees
ROCM_DEVICE = '/dev/kfd'  # AMD GPUs under ROCm (PyTorch calls them "cuda" too)


def localGpuIds():
    """The ids of this machine's GPUs (`nvidia-smi -L`, else as many as the NVIDIA
    driver's /proc entries); [] when it has none; None when it cannot tell (an AMD GPU
    with ROCm). Never torch: Scipion's Python need not have it, nor a GPU driver."""
    try:
        listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        listing = None
    if listing is not None and listing.returncode == 0:
        ids = [int(n) for n in re.findall(r'^GPU (\d+):', listing.stdout, re.MULTILINE)]
        if ids:
            return ids
    if os.path.isdir(NVIDIA_PROC_GPUS) and os.listdir(NVIDIA_PROC_GPUS):
        return list(range(len(os.listdir(NVIDIA_PROC_GPUS))))
    return None if os.path.exists(ROCM_DEVICE) else []


def gpuErrors(ids, available):
    """Errors for running on GPUs `ids` on a machine with GPUs `available` (None:
    unknown, nothing is refused)."""
    if available is None:
        return []
    other = '"Use GPU = No" to run on the CPU'
    if not available:
        return [
            'Use GPU = Yes, but this machine has no GPU (nvidia-smi and the NVIDIA driver '
            'list none): choose %s, or send the protocol to a queue with GPUs.' % other
        ]
    missing = [i for i in ids if i not in available]
    if ids and not missing:
        return []
    which = (
        'GPU %d' % available[0]
        if len(available) == 1
        else 'GPUs %s' % ', '.join(map(str, available))
    )
    if not ids:
        return ['Use GPU = Yes without GPU IDs: give some of %s, or choose %s.' % (which, other)]
    return [
        'GPU IDs "%s": this machine has no GPU %s (it has %s): fix the GPU ids, or choose %s.'
        % (' '.join(map(str, ids)), ', '.join(map(str, missing)), which, other)
    ]


def producerOf(protocol, pointer):
    """The protocol that made the object `pointer` points to, or None when unknown."""
    value = pointer.getObjValue()
    if isinstance(value, Protocol):
        return value
    project = protocol.getProject()
    parentId = value.getObjParentId() if value is not None else None
    if project is None or not parentId:
        return None
    try:
        producer = project.getProtocol(parentId)
    except Exception:  # not in this project's database: unknown
        return None
    return producer if isinstance(producer, Protocol) else None


def producedContrast(protocol, pointer):
    """The particle contrast ('bright', 'dark') that the producer of `pointer`'s
    tomograms declares, None when it declares none."""
    producer = producerOf(protocol, pointer)
    getter = getattr(producer, 'getOutputContrast', None)
    return getter() if getter else None


def itemKey(item):
    """The name of an input volume in steps, files, output ids and messages: its tsId,
    or volNNN (its id) for a plain volume."""
    tsId = getattr(item, 'getTsId', lambda: None)()
    return tsId if tsId else 'vol%03d' % item.getObjId()


TASK_SOURCES = {'denoise': '"dual - train"', 'wedge': '"dual - missing wedge"'}


class ProtDualApplyModel(ProtDualBase):
    """Base of the protocols that run a trained DualModel over a set of volumes, one
    step per volume (in parallel), each output appended to the output set as soon as
    it is ready. Subclasses define the input set, the engine job and the outputs."""

    _label = None
    _modelTask = 'denoise'  # the DualModel task the protocol applies
    _network = 'denoiser'  # which of the model's U-Nets it runs (engine.NETWORKS)
    _inputName = 'inputTomograms'  # the form's pointer to the volumes to process
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inputItems = None

    # --------------------------- form ------------------------------------
    def _defineModelInput(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam(
            'inputModel',
            params.PointerParam,
            pointerClass='DualModel',
            important=True,
            label='DUAL model',
            help='A model from "dual - train" or "dual - import model".',
        )

    @classmethod
    def _defineTileParam(cls, form):
        config = engine.DualConfig()
        depth = config.unet_depth
        upsampling = engine.unet_upsampling(config.upsampling, cls._network)
        border = engine.tile_layout(
            engine.DEFAULT_TILE, engine.unet_receptive_radius(depth, upsampling), 2**depth
        )[1]
        form.addParam(
            'tileSize',
            params.IntParam,
            default=engine.DEFAULT_TILE,
            validators=[params.GE(engine.MIN_TILE)],
            expertLevel=params.LEVEL_ADVANCED,
            label='Tile size (voxels)',
            help='Volumes are processed in overlapping cubic tiles of this side, at the '
            'model\'s working voxel size. The voxels at each face of a tile (the network\'s '
            'receptive radius: %d for the default U-Net of depth %d) only give the network '
            'its view and are discarded, so small tiles waste most of their work: below %d '
            'voxels a tile keeps less than 1/8 of it, and the form warns. Smaller tiles need '
            'less memory (bench/run_speed.py measures it); the result does not depend on '
            'the tile size.' % (border, depth, engine.min_useful_tile(depth, upsampling)),
        )

    @staticmethod
    def _defineFlipParam(form, command, more=''):
        """'flipAverage': the engine's flip_average option of `command` (its default and
        help), passed to the engine's jobs as flip_average. more: what the protocol adds."""
        field = optionField(command, 'flip_average')
        form.addParam(
            'flipAverage',
            params.BooleanParam,
            default=field.default,
            expertLevel=params.LEVEL_ADVANCED,
            label='Average over wedge-preserving flips',
            help=sentence(field.metadata['help']) + more,
        )

    @classmethod
    def _defineRunParams(cls, form):
        cls._defineTileParam(form)
        ProtDualBase._defineGpuParams(form)
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- steps -----------------------------------
    def _getInputPointer(self):
        """The pointer to the set of volumes the model is applied to."""
        return getattr(self, self._inputName)

    def _getInputSet(self):
        return self._getInputPointer().get()

    def _insertAllSteps(self):
        self._initialize()
        inputSteps = {name: self._insertInputSteps(name) for name in self.inputItems}
        modelSteps = self._insertModelSteps([i for steps in inputSteps.values() for i in steps])
        outputSteps = []
        for name in self.inputItems:
            runId = self._insertFunctionStep(
                self.runModelStep,
                name,
                prerequisites=modelSteps + inputSteps[name],
                needsGPU=self.usesGpu(),
            )
            outputSteps.append(
                self._insertFunctionStep(
                    self.createOutputStep, name, prerequisites=[runId], needsGPU=False
                )
            )
        self._insertFunctionStep(self._closeOutputSet, prerequisites=outputSteps, needsGPU=False)

    def _insertInputSteps(self, name):
        """Steps that prepare input `name` before the model is made and applied to it
        (none: the model reads the input itself)."""
        return []

    def _insertModelSteps(self, inputSteps):
        """Steps that make the model before it is applied, after the steps `inputSteps`
        (none: it is an input)."""
        return []

    def _modelPath(self):
        """The model file the steps apply."""
        return self.inputModel.get().getPath()

    def _modelSource(self):
        """The model (pointer or object) the outputs derive from."""
        return self.inputModel

    def _initialize(self):
        """{name: item} of the input volumes; the name is the tsId (or volNNN)."""
        self.inputItems = {
            itemKey(item): item.clone() for item in self._getInputSet().iterItems(orderBy='id')
        }

    def _engineJob(self, name, gpus):
        """The engine job that processes input `name` (subclasses add their options)."""
        return self._inferenceJob(
            self._modelPath(), self._modelInputFile(name), self._getExtraPath(), name, gpus
        )

    def _inferenceJob(self, modelPath, inputFile, outdir, name, gpus):
        """An engine job that applies the model file `modelPath` to `inputFile` (made
        from input `name`, at its sampling rate), writing into `outdir`."""
        return {
            'model': os.path.abspath(modelPath),
            'inputs': [inputFile],
            'outdir': os.path.abspath(outdir),
            'voxel_size': self.inputItems[name].getSamplingRate(),
            'tile': self.tileSize.get(),
            'overwrite': True,  # the step's own output: a re-run replaces it
            'device': self._engineDevice(gpus),
            'threads': self._engineThreads(),
        }

    def _modelInputFile(self, name):
        """The file the model reads for input `name`: the input itself, linked (or
        converted) to _engineInputPath(name) here."""
        return self._engineInputFile(self.inputItems[name], name)

    def _engineCommand(self):
        raise NotImplementedError

    def getInputFile(self, name):
        """The MRC file the engine read for input `name` (for the viewers)."""
        return self._engineInputPath(name)

    def runModelStep(self, name):
        gpus = self._stepGpus()
        self.runEngineJob(
            self._engineCommand(),
            self._engineJob(name, gpus),
            '%s_%s' % (self._engineCommand(), name),
            useGpu=bool(gpus),
        )

    def createOutputStep(self, name):
        raise NotImplementedError

    def _getOutputSet(self, outName, setClass):
        """The streaming output set `outName`, created on first use. Call under self._lock."""
        outSet = getattr(self, outName, None)
        if outSet is not None:
            outSet.enableAppend()
            return outSet
        outSet = setClass.create(self._getPath(), prefix=outName)
        inputSet = self._getInputSet()
        if isinstance(inputSet, SetOfTomograms):
            outSet.copyInfo(inputSet)
        else:
            outSet.setSamplingRate(inputSet.getSamplingRate())
        outSet.setStreamState(Set.STREAM_OPEN)
        self._defineOutputs(**{outName: outSet})
        for source in self._outputSources():
            self._defineSourceRelation(source, outSet)
        return outSet

    def _outputSources(self):
        """The inputs (pointers or objects) the output tomograms derive from."""
        return [self._getInputPointer(), self._modelSource()]

    def _appendTomogram(self, name, outFile, outName):
        """Add the engine's output file for input tomogram `name` to the streaming set
        `outName`, with the input's sampling rate (header too), tsId, acquisition and
        origin. Not its half maps: they are the raw halves, and an even/odd tool would
        pair them with a volume they were not made from."""
        inTomo = self.inputItems[name]
        self._setHeaderSamplingRate(outFile, inTomo.getSamplingRate())
        tomo = Tomogram()
        tomo.copyInfo(inTomo)
        tomo.setHalfMaps([])
        tomo.setLocation(outFile)
        with self._lock:
            outSet = self._getOutputSet(outName, SetOfTomograms)
            self._appendToOutput(outSet, tomo)
            self._store(outSet)

    @staticmethod
    def _appendToOutput(outSet, item):
        outSet.append(item)
        outSet.write()

    # --------------------------- info ------------------------------------
    def _validate(self):
        errors = self._validateEngine() + self._gpuErrors()
        model, inputSet = self.inputModel.get(), self._getInputSet()
        errors += self._setErrors(inputSet, 'Input volumes')
        if model is None or inputSet is None or errors:
            return errors
        return self._modelErrors(model, self._modelTask, inputSet, 'Input volumes')

    def _modelErrors(self, model, task, inputSet, label, field=None):
        """What keeps `model` from being applied to `inputSet` (called `label`) for
        `task`: a missing file, another task, a voxel size too far from the model's,
        volumes thinner than its subvolumes. field: the form's label of the model, named
        in the messages (None: "The model")."""
        what = '"%s": the model' % field if field else 'The model'
        errors = []
        if not os.path.exists(model.getPath()):
            errors.append(
                '%s file %s does not exist (moved or deleted?).' % (what, model.getPath())
            )
        if model.getTask() != task:
            errors.append(
                '%s was trained for the "%s" task; %s needs a model trained for "%s" (%s).'
                % (
                    what,
                    model.getTask(),
                    'it' if field else 'this protocol',
                    task,
                    TASK_SOURCES[task],
                )
            )
        error = firstError(
            engine.check_voxel_size_ratio,
            inputSet.getSamplingRate(),
            model.getVoxelSize(),
            'The %s' % label.lower(),
        )
        if error:
            errors.append('"%s": %s' % (field, error[0].lower() + error[1:]) if field else error)
        errors += self._tooSmallErrors(
            inputSet,
            '%s (for "%s")' % (label, field) if field else label,
            model.getVoxelSize(),
            model.getSubvolumeSize(),
        )
        return errors

    @staticmethod
    def _undertrainedWarnings(model, what='The model'):
        if model is None or (model.getIterations() or 0) >= MIN_USEFUL_ITERATIONS:
            return []
        return [
            '%s was trained for only %s iterations: expect poor results (a useful '
            'model usually needs a few thousand).' % (what, model.getIterations())
        ]

    def _warnings(self):
        warnings = self._undertrainedWarnings(self.inputModel.get())
        if not self.usesGpu():
            warnings.append('Running on the CPU: this can take long for large tomograms.')
        return warnings + self._tileWarnings()

    def _unetArchitecture(self):
        """(depth, upsampling) of the U-Net the protocol applies: its tiles' borders
        follow them. A model from before a setting existed has its value
        (engine.DualConfig.from_dict); no model or unreadable settings: the defaults."""
        model = self.inputModel.get()
        settings = model.getConfig() if model is not None else {}
        try:
            config = engine.DualConfig.from_dict(settings) if settings else engine.DualConfig()
        except engine.InputError:
            config = engine.DualConfig()
        return config.unet_depth, engine.unet_upsampling(config.upsampling, self._network)

    def _tileWarnings(self):
        """The engine's warning for a tile size that wastes most of its work (its rule,
        engine.tile_warning)."""
        tile = self.tileSize.get()
        warning = engine.tile_warning(tile, *self._unetArchitecture()) if tile else None
        return [sentence(warning)] if warning else []

    def _flipMethods(self, what='the network'):
        """The methods' words for flipAverage: '' when it is off."""
        if not self.flipAverage.get():
            return ''
        return ' (%s averaged over the %d flips of the volume that keep its missing wedge)' % (
            what,
            engine.FLIP_AVERAGE_COUNT,
        )

    def _modelDescription(self, model=None):
        """Words for the methods about `model` (default: the protocol's inputModel)."""
        model = self.inputModel.get() if model is None else model
        return 'a DUAL model trained for %d iterations at %.2f A/voxel on %d^3 subvolumes' % (
            model.getIterations(),
            model.getVoxelSize(),
            model.getSubvolumeSize(),
        )

    def _citations(self):
        return ['Zeng2023DUAL']
