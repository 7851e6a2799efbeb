"""The engine, for the tests, where the protocols find it: in the environment that
DUAL_ENV_ACTIVATION activates (Plugin.getEnginePython), never in the Python that runs
Scipion and these tests. So the tests run as `scipion3 tests --grep dual --run` runs
them on a real install, with the engine in its own environment.

runEngine: the `dual-engine` command line, as a user would run it by hand.
engineCall: one engine function, called there with JSON-able arguments; its result
comes back through JSON (numpy arrays and tuples as lists, dataclasses as dicts).
"""

import json
import shlex
import subprocess

from dual import Plugin

_CALL = '''
import dataclasses, importlib, json, sys
import numpy as np

def plain(value):
    if dataclasses.is_dataclass(value):
        return plain(dataclasses.asdict(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value

module, name, args, kwargs = json.load(sys.stdin)
target = getattr(importlib.import_module(module), name)
json.dump(plain(target(*args, **kwargs) if callable(target) else target), sys.stdout)
'''


def _run(command, stdin=None):
    return subprocess.run(
        command,
        shell=True,
        executable='/bin/bash',
        env=Plugin.getEnviron(),
        input=stdin,
        capture_output=True,
        text=True,
    )


def runEngine(*args):
    """Run `dual-engine ARGS` in the engine's environment; raises with its stderr on failure."""
    command = Plugin.getEngineProgram() + ' ' + ' '.join(shlex.quote(str(a)) for a in args)
    result = _run(command)
    if result.returncode != 0:
        raise RuntimeError('%s failed:\n%s' % (command, result.stderr[-3000:]))
    return result


def engineCall(dotted, *args, **kwargs):
    """dual_engine.<dotted>(*args, **kwargs) in the engine's environment (a constant when
    `dotted` names one), e.g. engineCall('metrics.match_picks', picks, truth, 7.0)."""
    module, name = ('dual_engine.' + dotted).rsplit('.', 1)
    result = _run(
        Plugin.getEnginePython() + ' -c ' + shlex.quote(_CALL),
        stdin=json.dumps([module, name, list(args), kwargs]),
    )
    if result.returncode != 0:
        raise RuntimeError('engine call %s failed:\n%s' % (dotted, result.stderr[-3000:]))
    return json.loads(result.stdout)
