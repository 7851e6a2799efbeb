import os
import shutil
from enum import Enum

import pyworkflow.protocol.params as params
import pyworkflow.utils as pwutils
from pwem.protocols import ProtImport
from pyworkflow import BETA

from dual.contract import engine
from dual.objects import DualModel
from dual.protocols.protocol_base import ProtDualBase


class ImportModelOutputs(Enum):
    model = DualModel


class ProtDualImportModel(ProtImport, ProtDualBase):
    """Imports a DUAL model file (model.pt) trained elsewhere, e.g. with `dual-engine
    train` on another machine, or a pretrained model.

    The model's working voxel size, subvolume size and training history are read from
    the file by the engine. A training checkpoint (checkpoint.pt) is accepted too.
    """

    _label = 'import model'
    _devStatus = BETA
    _possibleOutputs = ImportModelOutputs

    def _defineParams(self, form):
        form.addSection(label='Import')
        form.addParam(
            'modelFile',
            params.PathParam,
            important=True,
            label='Model file',
            help='A model.pt written by dual-engine train (or a checkpoint.pt).',
        )
        form.addParam(
            'copyFile',
            params.BooleanParam,
            default=True,
            label='Copy the file into the project?',
            help='No: link to it; the project then breaks if the file moves.',
        )

    # --------------------------- steps -----------------------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.importStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _importedFile(self):
        return self._getExtraPath(engine.MODEL_FILE)

    def importStep(self):
        source = os.path.abspath(self.modelFile.get().strip())
        if self.copyFile:
            shutil.copyfile(source, self._importedFile())
        else:
            pwutils.createAbsLink(source, self._importedFile())

    def createOutputStep(self):
        model = self._dualModelFromFile(self._importedFile())
        self._defineOutputs(**{ImportModelOutputs.model.name: model})

    # --------------------------- info ------------------------------------
    def _validate(self):
        errors = self._validateEngine()
        path = (self.modelFile.get() or '').strip()
        if not path:
            errors.append('Give the model file to import.')
        elif not os.path.isfile(path):
            errors.append('The model file %s does not exist.' % path)
        return errors

    def _summary(self):
        model = getattr(self, ImportModelOutputs.model.name, None)
        if model is None:
            return []
        return [
            'Imported %s from %s: trained for %d iterations at %.2f A/voxel on %d^3 '
            'subvolumes.'
            % (
                'a copy of' if self.copyFile else 'a link to',
                self.modelFile.get(),
                model.getIterations(),
                model.getVoxelSize(),
                model.getSubvolumeSize(),
            )
        ]

    def _methods(self):
        model = getattr(self, ImportModelOutputs.model.name, None)
        if model is None:
            return []
        return [
            'We used a DUAL model [Zeng2023DUAL] trained for %d iterations at a working '
            'voxel size of %.2f A on %d^3-voxel subvolumes.'
            % (model.getIterations(), model.getVoxelSize(), model.getSubvolumeSize())
        ]

    def _citations(self):
        return ['Zeng2023DUAL']
