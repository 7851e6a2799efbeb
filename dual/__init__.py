"""scipion-em-dual: DUAL (unsupervised cryo-ET denoising, simulation, missing-wedge
compensation and template-free picking) as Scipion protocols.

The engine runs in its own environment (DUAL_ENV_ACTIVATION) and is only ever called
through `Plugin.runEngine`; this package never imports torch.
"""

import os
import shlex
import subprocess
import sys

import pwem
import pyworkflow.utils as pwutils
from pyworkflow import TOMO

from dual.constants import (
    DUAL,
    DUAL_HOME,
    DUAL_ENV_ACTIVATION,
    DUAL_ENV_NAME,
    DUAL_DEFAULT_ACTIVATION,
    DUAL_ENV_FLAG,
    DUAL_INSTALLED_FLAG,
    ENGINE_VERSION,
    ENGINE_SOURCE,
    DUAL_TORCH_BUILD,
    TORCH_VERSION,
    TORCH_WHEELS_BY_CUDA_MAJOR,
    TORCH_DEFAULT_WHEELS,
)
from dual import pwcompat

__version__ = '0.1.0'
_logo = 'icon.png'
_references = ['Zeng2023DUAL']

pwcompat.apply()  # the plugin's template runs once per box, with its labels


class Plugin(pwem.Plugin):
    _homeVar = DUAL_HOME
    _pathVars = [DUAL_HOME]
    _supportedVersions = [ENGINE_VERSION]
    _url = 'https://github.com/scipion-em/scipion-em-dual'
    _processingField = [TOMO]

    @classmethod
    def _defineVariables(cls):
        cls._defineEmVar(DUAL_HOME, '%s-%s' % (DUAL, ENGINE_VERSION))
        cls._defineVar(
            DUAL_ENV_ACTIVATION,
            DUAL_DEFAULT_ACTIVATION,
            description='Command that activates the environment holding '
            'dual-engine, e.g. "conda activate %s" or '
            '"source /path/to/venv/bin/activate". Empty: run the '
            'engine with the Python running Scipion.' % DUAL_ENV_NAME,
        )
        cls._defineVar(
            DUAL_TORCH_BUILD,
            '',
            description='PyTorch build that "scipion3 installb dual" installs (the '
            'folder of download.pytorch.org/whl: cu126, cu128, cu130, cpu, rocm6.4, ...). '
            'Empty: chosen from the CUDA version of CUDA_LIB (%s; %s when unknown).'
            % (
                ', '.join('CUDA %d: %s' % item for item in TORCH_WHEELS_BY_CUDA_MAJOR.items()),
                TORCH_DEFAULT_WHEELS,
            ),
        )

    @classmethod
    def validateInstallation(cls):
        """DUAL_HOME is what `scipion3 installb dual` creates; it only has to exist when
        the engine runs from that installation (the default activation)."""
        if (cls.getVar(DUAL_ENV_ACTIVATION) or '').strip() != DUAL_DEFAULT_ACTIVATION:
            return []
        return super().validateInstallation()

    # Engine programs found to work in this process: checked once, not at every validation.
    _workingEnginePrograms = set()

    @classmethod
    def validateEngine(cls):
        """Errors (a list of messages, empty when fine) if the engine cannot run; the
        protocols' _validate calls it.

        Runs `dual-engine --version` through the configured activation, exactly as the
        protocols run the engine: this catches a broken or missing environment, a wrong
        DUAL_ENV_ACTIVATION and an engine of another version. It imports neither torch
        nor the engine's modules, so it takes well under a second plus the activation;
        a success is remembered for the rest of the session. validateInstallation stays
        the cheap path check (the GUI calls it for every protocol of its tree); when it
        fails, Protocol.validate has reported that already and nothing is added here.
        """
        if cls.validateInstallation():
            return []
        program = cls.getEngineProgram()
        if program in cls._workingEnginePrograms:
            return []
        activation = (cls.getVar(DUAL_ENV_ACTIVATION) or '').strip()
        where = (
            'DUAL_ENV_ACTIVATION = "%s"' % activation
            if activation
            else 'the Python running Scipion (DUAL_ENV_ACTIVATION is empty)'
        )
        try:
            result = subprocess.run(
                program + ' --version',
                shell=True,
                executable='/bin/bash',
                env=cls.getEnviron(),
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return ['The DUAL engine did not answer within 120 s with %s.' % where]
        answer = result.stdout.split()
        if result.returncode != 0 or answer[:1] != ['dual-engine']:
            reason = (result.stderr.strip().splitlines() or ['no output'])[-1]
            return [
                'The DUAL engine does not run with %s (%s). Install it with '
                '"scipion3 installb %s", or set DUAL_ENV_ACTIVATION to a command that '
                'activates an environment with dual-engine %s.'
                % (where, reason, DUAL, ENGINE_VERSION)
            ]
        if answer[-1] != ENGINE_VERSION:
            return [
                'The engine environment (%s) has dual-engine %s but this plugin needs %s: '
                'reinstall it with "scipion3 installb %s".'
                % (where, answer[-1], ENGINE_VERSION, DUAL)
            ]
        cls._workingEnginePrograms.add(program)
        return []

    @classmethod
    def getEnviron(cls):
        """Scipion's environment without its PYTHONPATH, which must not leak into the engine's."""
        environ = pwutils.Environ(os.environ)
        environ.pop('PYTHONPATH', None)
        return environ

    @classmethod
    def getActivationCmd(cls):
        """Shell prefix that activates the engine environment ('' when none is set)."""
        activation = (cls.getVar(DUAL_ENV_ACTIVATION) or '').strip()
        if not activation:
            return ''
        if activation.startswith('conda '):
            return '%s %s && ' % (cls.getCondaActivationCmd(), activation)
        return '%s && ' % activation

    @classmethod
    def getEngineProgram(cls, useGpu=False):
        """The shell program that runs `python -m dual_engine` in the engine environment."""
        gpus = 'CUDA_VISIBLE_DEVICES=%(GPU)s ' if useGpu else ''
        return cls.getEnginePython(prefix=gpus) + ' -m dual_engine'

    @classmethod
    def getEnginePython(cls, prefix=''):
        """The shell command that starts the engine environment's Python (`prefix`: shell
        assignments for it, e.g. CUDA_VISIBLE_DEVICES=0)."""
        activation = cls.getActivationCmd()
        python = 'python' if activation else shlex.quote(sys.executable)
        return '%s%s%s' % (activation, prefix, python)

    @classmethod
    def runEngine(cls, protocol, command, args, cwd=None, useGpu=False):
        """Run `dual-engine COMMAND ARGS` for `protocol`, the one way protocols call the engine.

        useGpu: restrict the engine to the step's GPU ids. Under a queue system the
        queue assigns devices, so CUDA_VISIBLE_DEVICES is left alone there.
        """
        useGpu = useGpu and not protocol.useQueue()
        if not isinstance(args, str):
            args = ' '.join(shlex.quote(str(a)) for a in args)
        protocol.runJob(
            cls.getEngineProgram(useGpu),
            '%s %s' % (command, args),
            env=cls.getEnviron(),
            cwd=cwd,
            numberOfMpi=1,
            # The activation ("source .../activate", conda's hook) is bash: pyworkflow's
            # default shell is /bin/sh, which is dash on Debian and Ubuntu.
            executable='/bin/bash',
        )

    @classmethod
    def getDependencies(cls):
        """Programs the installer needs: conda only when no activation command is configured."""
        return [] if cls.getCondaActivationCmd() else ['conda']

    @classmethod
    def getTorchWheels(cls):
        """PyTorch build: DUAL_TORCH_BUILD, else the one for this machine's CUDA, else a
        safe default."""
        chosen = (cls.getVar(DUAL_TORCH_BUILD) or '').strip()
        if chosen:
            return chosen
        try:
            major = cls.getVersionFromPath(
                pwem.Config.CUDA_LIB, pattern='cuda', default='12.6'
            ).major
        except Exception:  # never let an odd CUDA path break the plugin list
            return TORCH_DEFAULT_WHEELS
        return TORCH_WHEELS_BY_CUDA_MAJOR.get(major, TORCH_DEFAULT_WHEELS)

    @staticmethod
    def engineIsInCheckout():
        """True when the plugin (and the engine inside it) is not in site-packages: a
        devel install or a source checkout."""
        return not os.path.realpath(ENGINE_SOURCE).startswith(
            os.path.realpath(pwutils.getPythonPackagesFolder())
        )

    @classmethod
    def defineBinaries(cls, env):
        """Recipe only (run by `scipion3 installb dual`): a conda env (conda-forge: the
        default channels ask for their terms to be accepted first) with PyTorch and the
        vendored engine. Two flagged stages so a failed engine install does not redo the
        env. A devel install (the plugin in a checkout, `installp --devel`) installs the
        engine editable, so the environment always runs the checkout's engine."""
        conda = cls.getCondaActivationCmd()
        createEnv = (
            '%s conda create -y -n %s --override-channels -c conda-forge python=3.11 && '
            '%s conda activate %s && '
            'pip install torch==%s --index-url https://download.pytorch.org/whl/%s && '
            'touch %s'
            % (
                conda,
                DUAL_ENV_NAME,
                conda,
                DUAL_ENV_NAME,
                TORCH_VERSION,
                cls.getTorchWheels(),
                DUAL_ENV_FLAG,
            )
        )
        installEngine = '%s conda activate %s && pip install %s%s && touch %s' % (
            conda,
            DUAL_ENV_NAME,
            '-e ' if cls.engineIsInCheckout() else '',
            shlex.quote(ENGINE_SOURCE),
            DUAL_INSTALLED_FLAG,
        )
        env.addPackage(
            DUAL,
            version=ENGINE_VERSION,
            tar='void.tgz',
            commands=[(createEnv, DUAL_ENV_FLAG), (installEngine, DUAL_INSTALLED_FLAG)],
            neededProgs=cls.getDependencies(),
            vars={'PATH': os.environ.get('PATH', '')},
            default=True,
        )
