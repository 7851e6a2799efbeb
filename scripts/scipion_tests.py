"""Run the plugin's Scipion tests the way `scipion3 tests --grep dual --run` runs them on
a real install: pyworkflow's test runner (pyworkflow/apps/pw_run_tests.py) finds the
test classes of every plugin, keeps those of dual and runs each in its own process,
with the engine in its own environment (DUAL_ENV_ACTIVATION), never in the Python
that runs Scipion: there, importing dual_engine or torch fails, in the tests and in the
protocols they launch.

Usage (after scripts/setup.sh, which makes both environments):
    .venv/bin/python scripts/scipion_tests.py [--engine-env .venv-engine] [--grep WORD ...]

A throw-away Scipion home (scripts/headless.py) holds the projects and test data.
pw_run_tests --run reports failures but always exits 0, so each class runs through
pw_run_tests CLASS, whose exit status says whether it passed; this exits 1 if any failed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import prepare_scipion_home  # noqa: E402 (needs the path above)

# Installed first in every Python that starts with this PYTHONPATH (sitecustomize).
BLOCKER = '''
import importlib.abc
import sys


class NotInScipionPython(importlib.abc.MetaPathFinder):
    """The engine and PyTorch live in the engine environment, not in Scipion's Python."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('dual_engine', 'torch'):
            raise ImportError(
                '%s is not importable in the Python that runs Scipion: the engine runs in '
                'its own environment (DUAL_ENV_ACTIVATION)' % name
            )
        return None


sys.meta_path.insert(0, NotInScipionPython())
'''


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--engine-env',
        default=os.environ.get('DUAL_ENGINE_VENV', '.venv-engine'),
        help='the engine venv (default: DUAL_ENGINE_VENV, else .venv-engine)',
    )
    parser.add_argument('--grep', nargs='+', default=['dual'], help='as scipion3 tests')
    args = parser.parse_args()

    engine = os.path.abspath(args.engine_env)
    if not os.path.exists(os.path.join(engine, 'bin', 'activate')):
        sys.exit('No engine environment at %s: run bash scripts/setup.sh first.' % engine)
    home = prepare_scipion_home(tempfile.mkdtemp(prefix='dual-scipion-tests-'))
    blocker = os.path.join(home, 'scipion-python')
    os.makedirs(blocker)
    with open(os.path.join(blocker, 'sitecustomize.py'), 'w') as f:
        f.write(BLOCKER)
    os.environ['DUAL_ENV_ACTIVATION'] = 'source %s/bin/activate' % engine
    os.environ['PYTHONPATH'] = blocker  # the plugin's engine calls drop it (Plugin.getEnviron)

    runner = [sys.executable, '-m', 'pyworkflow.apps.pw_run_tests']
    listing = subprocess.run(
        runner + ['--grep', *args.grep, '--mode', 'onlyclasses'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    classes = sorted(set(re.findall(r'\b(dual\.tests\.test_\w+\.\w+)', listing)))
    if not classes:
        sys.exit('pyworkflow found no test class of dual:\n' + listing)
    print('%d test classes, engine in %s, Scipion home %s' % (len(classes), engine, home))

    failed = []
    for name in classes:
        start = time.time()
        result = subprocess.run(runner + [name], capture_output=True, text=True)
        status = 'ok' if result.returncode == 0 else 'FAILED'
        print('%-70s %-6s %4.0f s' % (name, status, time.time() - start), flush=True)
        if result.returncode != 0:
            failed.append(name)
            print(result.stdout[-6000:] + result.stderr[-6000:])
    print('%d of %d test classes passed' % (len(classes) - len(failed), len(classes)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
