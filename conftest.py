"""Test set-up shared by the engine and plugin tests.

The plugin tests run Scipion protocols headless in a throw-away Scipion home, so
nothing outside a temporary folder is touched and no network is used. This must
happen before any test module imports pyworkflow (it reads the environment once).
"""

import importlib.util
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'scripts'))

if importlib.util.find_spec('pyworkflow') is None:
    # An engine-only environment: only the engine tests are collected.
    collect_ignore = ['dual/tests', 'dual/__init__.py']
else:
    from headless import prepare_scipion_home

    prepare_scipion_home(tempfile.mkdtemp(prefix='dual-scipion-home-'))
