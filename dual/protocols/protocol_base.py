"""What every DUAL protocol shares: the engine call through a job file."""
import json
import os

from pwem.protocols import EMProtocol
from tomo.protocols import ProtTomoBase

from dual import Plugin


class ProtDualBase(EMProtocol, ProtTomoBase):
    """Base of the DUAL protocols (not shown in the GUI)."""
    _label = None

    def runEngineJob(self, command, job, name, useGpu=False):
        """Write `job` to extra/<name>.json and run `dual-engine COMMAND --job` on it.

        The job file stays in extra/: a user can re-run the step by hand with
        `python -m dual_engine COMMAND --job extra/<name>.json`.
        """
        jobFile = self._getExtraPath('%s.json' % name)
        with open(jobFile, 'w') as f:
            json.dump(job, f, indent=1)
        Plugin.runEngine(self, command, ['--job', os.path.abspath(jobFile)], useGpu=useGpu)
