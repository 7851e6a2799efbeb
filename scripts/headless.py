"""A throw-away Scipion home for headless runs (tests and the demo).

pyworkflow reads its configuration from the environment when it is first imported,
so call `prepare_scipion_home` before anything imports pyworkflow, pwem, tomo or dual.
"""

import os
import sys


def prepare_scipion_home(home):
    """Point Scipion at `home` (config, user data, test data) and write a basic hosts.conf.

    The engine runs with the current interpreter (DUAL_ENV_ACTIVATION empty), where the
    setup script installed it. Nothing outside `home` is written, nothing is downloaded.
    """
    home = os.path.abspath(home)
    os.environ.update(
        {
            'SCIPION_HOME': home,
            'SCIPION_USER_DATA': os.path.join(home, 'ScipionUserData'),
            'SCIPION_TESTS': os.path.join(home, 'data', 'tests'),
            'SCIPION_CONFIG': os.path.join(home, 'config', 'scipion.conf'),
            'SCIPION_HOSTS': os.path.join(home, 'config', 'hosts.conf'),
            'SCIPION_DOMAIN': 'pwem',
            'SCIPION_NOTIFY': 'False',
            'SCIPION_TEST_NOSYNC': '1',
            'DUAL_ENV_ACTIVATION': '',
            # Protocols run in subprocesses: with this interpreter, even when its venv is
            # not on PATH.
            'SCIPION_PYTHON': sys.executable,
        }
    )
    os.makedirs(os.path.join(home, 'config'), exist_ok=True)
    from pyworkflow.protocol import HostConfig  # only now that the environment is set

    HostConfig.writeBasic(os.environ['SCIPION_HOSTS'])
    return home
