"""Scipion objects of the plugin (discovered by pyworkflow from this module)."""
import pyworkflow.object as pwobj
from pwem.objects import EMObject


class DualModel(EMObject):
    """A trained DUAL model: the engine's model file and what it was trained for."""

    def __init__(self, path=None, voxelSize=None, subvolumeSize=None, summary=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._path = pwobj.String(path)
        self._voxelSize = pwobj.Float(voxelSize)
        self._subvolumeSize = pwobj.Integer(subvolumeSize)
        self._summary = pwobj.String(summary)

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
        return self._subvolumeSize.get()

    def setSubvolumeSize(self, value):
        self._subvolumeSize.set(value)

    def getTrainingSummary(self):
        return self._summary.get()

    def setTrainingSummary(self, text):
        self._summary.set(text)

    def __str__(self):
        return 'DualModel (%s A/px, %s^3 subvolumes)' % (self.getVoxelSize(),
                                                          self.getSubvolumeSize())
