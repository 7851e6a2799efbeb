"""Names shared by the plugin's modules: variables, versions, file names."""

import os
import re


def _read_engine_version():
    """The vendored engine's version, read from its source (the plugin never imports it)."""
    init = os.path.join(os.path.dirname(__file__), 'engine', 'dual_engine', '__init__.py')
    with open(init) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


ENGINE_VERSION = _read_engine_version()
ENGINE_SOURCE = os.path.join(os.path.dirname(__file__), 'engine')

DUAL = 'dual'
DUAL_HOME = 'DUAL_HOME'
DUAL_ENV_ACTIVATION = 'DUAL_ENV_ACTIVATION'
DUAL_ENV_NAME = 'dual-%s' % ENGINE_VERSION
DUAL_DEFAULT_ACTIVATION = 'conda activate %s' % DUAL_ENV_NAME
DUAL_ENV_FLAG = 'dual_env_created'
DUAL_INSTALLED_FLAG = 'dual_engine_%s_installed' % ENGINE_VERSION

# PyTorch installed in the engine environment: the version every test runs with (scripts/
# setup.sh installs the same). Its build (download.pytorch.org/whl/<build>) is
# DUAL_TORCH_BUILD when set (cu126, cu128, cu130, cpu, rocm6.4, ...), else chosen by the
# CUDA major version of CUDA_LIB; an unknown or missing CUDA falls back to the default,
# never to an error.
TORCH_VERSION = '2.13.0'
DUAL_TORCH_BUILD = 'DUAL_TORCH_BUILD'
TORCH_WHEELS_BY_CUDA_MAJOR = {12: 'cu126', 13: 'cu130'}
TORCH_DEFAULT_WHEELS = 'cu126'


# A training protocol's engine folder: extra/<TRAINING_DIR>/ (file names: the contract).
TRAINING_DIR = 'training'

# `dual-engine model-info` writes a model file's settings here (JSON).
MODEL_INFO_FILE = 'model.json'

# Files the engine reads as they are; anything else is converted to MRC first.
MRC_EXTENSIONS = ('.mrc', '.mrcs', '.map', '.rec', '.st', '.ali')

# Models trained for fewer iterations are flagged as undertrained in the warnings.
MIN_USEFUL_ITERATIONS = 500
