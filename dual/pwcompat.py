"""Workarounds for two pyworkflow defects that a workflow template with two import boxes
meets (`scipion3 template`, the project window's "Import workflow template"). Both are
applied once, when Scipion loads this plugin (dual/__init__.py), and only change what
the defect gets wrong; pyworkflow 3.11 has both.

1. A box scheduled twice. pyworkflow/project/scripts/schedule.py (what `scipion3
   template` runs after making the project) schedules, for every box without inputs,
   that box and everything downstream of it. A box fed by both imports (``dual -
   train``) and everything after it is scheduled once per import: two schedulers,
   two runs in the same folder at once. `Project.scheduleProtocol` here refuses to
   schedule again, in the same process, a box it has already scheduled and that is
   still waiting.

2. Box labels lost. `Project.loadProtocols` passes each box's label and comment to the
   protocol's constructor, which drops them (Step.__init__ does not forward its keyword
   arguments), so every box gets its default label. `Project.newProtocol` here sets
   them when the constructor did not.

And one convenience of the same occasion: a new project made from a workflow with DUAL
boxes opens in the protocol view that lists them (Tomography), not in the first view
(often "Protocols SPA", where a user finds none of the boxes in the tree). A view the
project already has is kept.
"""

import functools
import logging

logger = logging.getLogger(__name__)

_APPLIED = '_dualWorkaround'


def _scheduleOnce(scheduleProtocol):
    scheduledHere = set()  # (project folder, protocol id) scheduled by this process

    @functools.wraps(scheduleProtocol)
    def wrapper(project, protocol, *args, **kwargs):
        key = (project.path, protocol.getObjId())
        if key in scheduledHere and protocol.isScheduled():
            logger.info(
                '%s is already scheduled (pyworkflow reached it from two boxes); '
                'not scheduling it twice.',
                protocol.getObjLabel(),
            )
            return None
        result = scheduleProtocol(project, protocol, *args, **kwargs)
        scheduledHere.add(key)
        return result

    return wrapper


def _keepLabels(newProtocol):
    @functools.wraps(newProtocol)
    def wrapper(project, protocolClass, **kwargs):
        protocol = newProtocol(project, protocolClass, **kwargs)
        if kwargs.get('objLabel'):
            protocol.setObjLabel(kwargs['objLabel'])
        if kwargs.get('objComment'):
            protocol.setObjComment(kwargs['objComment'])
        return protocol

    return wrapper


PROTOCOL_VIEW = 'Tomography'  # the view of dual/protocols.conf


def _openInDualView(loadProtocols):
    @functools.wraps(loadProtocols)
    def wrapper(project, *args, **kwargs):
        loaded = loadProtocols(project, *args, **kwargs)
        ours = any(type(p).__module__.split('.')[0] == 'dual' for p in (loaded or {}).values())
        if ours and not project.getProtocolView() and not project.openedAsReadOnly():
            project.getSettings().setProtocolView(PROTOCOL_VIEW)
            project.saveSettings()
        return loaded

    return wrapper


def apply():
    """Wrap Project.scheduleProtocol, Project.newProtocol and Project.loadProtocols
    (once per process)."""
    from pyworkflow.project import Project

    for name, workaround in (
        ('scheduleProtocol', _scheduleOnce),
        ('newProtocol', _keepLabels),
        ('loadProtocols', _openInDualView),
    ):
        method = getattr(Project, name)
        if not getattr(method, _APPLIED, False):
            wrapped = workaround(method)
            setattr(wrapped, _APPLIED, True)
            setattr(Project, name, wrapped)
