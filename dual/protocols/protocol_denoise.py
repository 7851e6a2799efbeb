from enum import Enum

import pyworkflow.protocol.params as params
from pyworkflow import BETA
from tomo.objects import SetOfTomograms

from dual.contract import engine
from dual.protocols.protocol_base import ProtDualApplyModel

DENOISED_SUFFIX = '_denoised'
DENOISED_CONTRAST = 'bright'  # the particle contrast of denoised tomograms


def denoisedContrast(model):
    """The particle contrast of `model`'s denoised tomograms: DENOISED_CONTRAST when its
    training anchored the contrast ('same' or 'inverted'), None (not declared) when it
    left it free: then the output may come out inverted (bench/run_picking.py saw both
    signs), and a picker must measure it."""
    config = model.getConfig() if model is not None else {}
    return None if config.get('noisy_contrast') == 'free' else DENOISED_CONTRAST


class DenoiseOutputs(Enum):
    tomograms = SetOfTomograms


class ProtDualDenoise(ProtDualApplyModel):
    """Denoises tomograms with a trained DUAL model (its denoiser network).

    Each tomogram is brought to the model's working voxel size, denoised tile by tile
    and resampled back, so the output has the input's size, voxel size, origin and
    tsId: coordinates, masks and overlays line up with the input tomogram.
    Tomograms are processed in parallel (threads - 1 at a time, one GPU each when
    threads = GPUs + 1) and appear in the output as soon as each one is done.
    """

    _label = 'denoise'
    _devStatus = BETA
    _possibleOutputs = DenoiseOutputs

    # --------------------------- form ------------------------------------
    def _defineParams(self, form):
        self._defineModelInput(form)
        form.addParam(
            'inputTomograms',
            params.PointerParam,
            pointerClass='SetOfTomograms',
            important=True,
            label='Tomograms',
            help='Tomograms to denoise; best at a voxel size close to the '
            'model\'s working voxel size.',
        )
        self._defineFlipParam(form, self._engineCommand())
        self._defineRunParams(form)

    # --------------------------- steps -----------------------------------
    def _engineCommand(self):
        return 'denoise'

    def getOutputContrast(self):
        """The denoiser maps tomograms to the clean (density) domain: dense = bright,
        unless the model's training left the contrast free (denoisedContrast)."""
        return denoisedContrast(self.inputModel.get())

    def _engineJob(self, name, gpus):
        job = super()._engineJob(name, gpus)
        job.update(suffix=DENOISED_SUFFIX, flip_average=self.flipAverage.get())
        return job

    def _denoisedFile(self, name):
        """The engine names its output after the input link extra/inputs/<name>.mrc."""
        return self._getExtraPath(engine.output_name(self._engineInputPath(name), DENOISED_SUFFIX))

    def createOutputStep(self, tsId):
        self._appendTomogram(tsId, self._denoisedFile(tsId), DenoiseOutputs.tomograms.name)

    # --------------------------- info ------------------------------------
    def _summary(self):
        if self.inputModel.get() is None or self._getInputSet() is None:
            return []
        outSet = getattr(self, DenoiseOutputs.tomograms.name, None)
        done = outSet.getSize() if outSet is not None else 0
        summary = [
            '%d of %d tomograms denoised with %s.'
            % (done, self._getInputSet().getSize(), self._modelDescription())
        ]
        if self.getOutputContrast() is None:
            summary.append(
                'The model\'s training left the particle contrast free (its "Particle '
                'contrast of the noisy tomograms" was free, or auto found it unclear): '
                'the output may be inverted. Check it in the viewer; "dual - pick '
                'particles" measures it (contrast auto).'
            )
        return summary

    def _methods(self):
        if self.inputModel.get() is None or self._getInputSet() is None:
            return []
        inputSet = self._getInputSet()
        return [
            'We denoised %d tomograms (%.2f A/voxel) with DUAL [Zeng2023DUAL], using %s. '
            'Each tomogram was resampled to the model\'s voxel size, denoised in '
            'overlapping tiles of %d voxels%s and resampled back to its original grid.'
            % (
                inputSet.getSize(),
                inputSet.getSamplingRate(),
                self._modelDescription(),
                self.tileSize.get(),
                self._flipMethods(),
            )
        ]
