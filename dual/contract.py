"""The engine's contract (dual/engine/dual_engine/contract.py) for the plugin: option
declarations, validation rules, defaults and file names, so that a form refuses exactly
what the engine would refuse, before a run starts.

Scipion's Python need not have the engine installed (it runs in its own environment),
and the contract imports only the standard library and numpy, so it is loaded here from
its file, under a private module name.
"""

import importlib.util
import os
import sys

CONTRACT_FILE = os.path.join(os.path.dirname(__file__), 'engine', 'dual_engine', 'contract.py')
_MODULE = 'dual._engine_contract'


def _load():
    if _MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(_MODULE, CONTRACT_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = module  # dataclasses look their module up while building
        spec.loader.exec_module(module)
    return sys.modules[_MODULE]


engine = _load()


def optionField(command, name):
    """The engine's declaration (a dataclass field: default, metadata['help']) of option
    `name` of `command`, for a form to show the engine's default and help."""
    for _, field in engine.command_fields(command):
        if field.name == name:
            return field
    raise KeyError('%s has no option %s' % (command, name))


def firstError(check, *args):
    """The message of the InputError `check(*args)` raises (as a sentence for a form),
    or None if it passes."""
    try:
        check(*args)
    except engine.InputError as err:
        return sentence(str(err))
    return None


def sentence(message):
    """An engine message as a form's sentence: capital first letter, final period."""
    return message[:1].upper() + message[1:] + ('' if message.endswith('.') else '.')
