"""Scipion objects of the plugin (discovered by pyworkflow from this module)."""

import json

import pyworkflow.object as pwobj
from pwem.objects import EMObject


class DualModel(EMObject):
    """A trained DUAL model: the engine's model file and what it was trained for.

    The values are read from the model file itself (`dual-engine model-info`), so a
    model trained here and one trained elsewhere and imported look the same.
    """

    def __init__(
        self,
        path=None,
        voxelSize=None,
        subvolumeSize=None,
        iterations=None,
        summary=None,
        config=None,
        **kwargs,
    ):
        EMObject.__init__(self, **kwargs)
        self._path = pwobj.String(path)
        self._voxelSize = pwobj.Float(voxelSize)
        self._subvolumeSize = pwobj.Integer(subvolumeSize)
        self._iterations = pwobj.Integer(iterations)
        self._summary = pwobj.String(summary)
        self._config = pwobj.String(config)

    def getPath(self):
        return self._path.get()

    def setPath(self, path):
        self._path.set(path)

    def getVoxelSize(self):
        """Working voxel size (A) the networks were trained at."""
        return self._voxelSize.get()

    def setVoxelSize(self, value):
        self._voxelSize.set(value)

    def getSubvolumeSize(self):
        """Side (voxels at the working voxel size) of the training subvolumes."""
        return self._subvolumeSize.get()

    def setSubvolumeSize(self, value):
        self._subvolumeSize.set(value)

    def getIterations(self):
        """Training iterations the model has had (a continued training counts on from here)."""
        return self._iterations.get()

    def setIterations(self, value):
        self._iterations.set(value)

    def getTrainingSummary(self):
        """The engine's training summary as JSON text ('' when the file had none)."""
        return self._summary.get()

    def setTrainingSummary(self, text):
        self._summary.set(text)

    def getTrainingInfo(self):
        """The training summary as a dict (final losses, volumes, device...); {} if none."""
        text = self.getTrainingSummary()
        return json.loads(text) if text else {}

    def getNoiseModels(self):
        """The noise models `simulate` can use with this model: models trained before
        the fitted one existed, and unknown ones, have only the learned one."""
        return self.getTrainingInfo().get('noise_models') or ['learned']

    def getConfig(self):
        """The engine's full model settings (DualConfig) as a dict; {} if unknown."""
        text = self._config.get()
        return json.loads(text) if text else {}

    def setConfig(self, config):
        self._config.set(json.dumps(config))

    def getTask(self):
        """'denoise' (denoiser and simulator) or 'wedge' (missing-wedge compensation)."""
        return self.getConfig().get('task', 'denoise')

    def getTiltRange(self):
        """(min, max) tilt angles in degrees a wedge model was trained for, else None."""
        config = self.getConfig()
        return tuple(config['tilt_range']) if self.getTask() == 'wedge' else None

    def __str__(self):
        text = 'DualModel (%s A/px, %s^3 subvolumes, %s iterations' % (
            self.getVoxelSize(),
            self.getSubvolumeSize(),
            self.getIterations(),
        )
        if self.getTask() == 'wedge':
            text += ', missing wedge %g..%g deg' % self.getTiltRange()
        return text + ')'
