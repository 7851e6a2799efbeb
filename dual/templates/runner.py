"""Run the plugin's workflow templates headless: fill a template's fields, make a
project from it and run its protocols, without the GUI.

These functions go through the same pyworkflow API as `scipion3 template NAME
alias=value ... --nogui` (pyworkflow.template and pyworkflow/project/scripts/create.py),
without Tk and in the current interpreter:

    from dual.templates.runner import createProject, loadTemplate, runWorkflow

    template = loadTemplate()                   # LocalTemplate with parsed fields
    project, protocols = createProject('my_project', template,
                                       noisyPath='/data/tomos', cleanPath='/data/maps')
    runWorkflow(project, protocols.values())    # launch in dependency order, wait

The templates themselves, their format and where they are found: dual.templates.
"""

import contextlib
import io
import os
import time

from dual.templates import DENOISE_PICK, templatePath

PATH_TYPES = (2, 6)  # pyworkflow.config.VarTypes PATH and FOLDER


def loadTemplate(name=DENOISE_PICK):
    """The template as `scipion3 template` prepares it before showing its form:
    environment variables (%(VAR)s) replaced and the fields parsed (template.params,
    {title: TemplateParam})."""
    from pyworkflow.template import LocalTemplate

    template = LocalTemplate('dual', templatePath(name))
    template.replaceEnvVariables()
    template.parseContent()
    return template


def templateAliases(template):
    """{alias: default value} of the template's fields (shared aliases listed once)."""
    aliases = {}
    for field in template.getParams().values():
        aliases.setdefault(field.getAlias(), field.getValue())
    return aliases


def fillTemplate(template, **values):
    """Set fields by alias, as `scipion3 template NAME alias=value` does; fields not
    given keep their defaults, relative paths are made absolute. Raises ValueError for
    an unknown alias or for any field whose value does not validate (e.g. a path that
    does not exist)."""
    known = templateAliases(template)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            'Unknown template field(s): %s. The fields are: %s.'
            % (', '.join(unknown), ', '.join(known))
        )
    pathAliases = {
        field.getAlias() for field in template.getParams().values() if field.getType() in PATH_TYPES
    }
    for alias, value in values.items():
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        elif alias in pathAliases:
            value = os.path.abspath(value)  # protocols run in the project folder
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # a line per field
                template.setParamValue(alias, str(value))
        except Exception as error:  # pyworkflow raises a bare Exception for bad values
            raise ValueError('Template field %s: %s' % (alias, error)) from error
    errors = [
        '%s (%s) = %r: %s'
        % (field.getTitle(), field.getAlias(), field.getValue(), field.validate())
        for field in template.getParams().values()
        if field.validate()
    ]
    if errors:
        raise ValueError('Template fields that do not validate:\n  ' + '\n  '.join(errors))
    return template


def createProject(projectName, template, location=None, **values):
    """A new project made from `template` (a LocalTemplate or a template name) with its
    fields set by alias; the protocols are saved, not run.

    Same steps as `scipion3 template`: the filled template is written to a workflow
    file (Template.createTemplateFile) and loaded into a new project
    (Manager.createProject + Project.loadProtocols). Returns (project, {template
    object.id: protocol}) in the template's order.
    """
    from pyworkflow.project import Manager

    if isinstance(template, str):
        template = loadTemplate(template)
    fillTemplate(template, **values)
    manager = Manager()
    if manager.hasProject(projectName):
        raise ValueError('There is already a project called %s.' % projectName)
    with contextlib.redirect_stdout(io.StringIO()):  # "New workflow saved at /tmp/..."
        workflow = template.createTemplateFile()
    try:
        project = manager.createProject(
            projectName, location=location, comment=template.description
        )
        protocols = project.loadProtocols(workflow)  # labels kept: dual.pwcompat
    finally:
        os.remove(workflow)
    return project, protocols


def _inputProtocolIds(protocol):
    """Ids of the protocols whose outputs `protocol` takes as input."""
    ids = set()
    for _, pointer in protocol.iterInputAttributes():
        value = pointer.getObjValue()
        if value is not None and hasattr(value, 'getRunName'):
            ids.add(value.getObjId())
        elif value is not None and value.getObjParentId():
            ids.add(value.getObjParentId())
    return ids


def dependencyOrder(protocols):
    """`protocols` sorted so that each comes after the protocols it takes input from."""
    pending = list(protocols)
    ids = {p.getObjId() for p in pending}
    done, ordered = set(), []
    while pending:
        ready = [p for p in pending if not (_inputProtocolIds(p) & ids) - done]
        if not ready:
            raise ValueError(
                'The protocols have circular inputs: %s'
                % ', '.join(p.getRunName() for p in pending)
            )
        for p in ready:
            ordered.append(p)
            done.add(p.getObjId())
            pending.remove(p)
    return ordered


class WorkflowError(RuntimeError):
    """A protocol of the workflow failed or did not finish."""


def _failure(protocol):
    logs = protocol.getLogPaths()
    return WorkflowError(
        '%s is %s: %s (logs: %s)'
        % (
            protocol.getRunName(),
            protocol.getStatus(),
            protocol.getErrorMessage() or 'no error message',
            ', '.join(logs[:2]),
        )
    )


def runWorkflow(project, protocols, schedule=False, timeout=None, poll=10, report=print):
    """Run `protocols` (saved in `project`) headless and wait until all finish.
    The working directory becomes the project folder.

    schedule=False: launch them one at a time in dependency order, each waiting for
    the previous (Project.launchProtocol(wait=True), as the tests do); stops at the
    first failure. schedule=True: schedule them all at once (Project.scheduleProtocol,
    as `scipion3 template` and the GUI's "Schedule" do); a scheduler process per
    protocol waits for its inputs, so independent branches run at the same time, but
    each scheduler polls every 15-120 s, which adds idle time.
    Returns the finished protocols (reloaded), in dependency order; raises
    WorkflowError when a box that takes no input (an import) does not validate, when
    one fails, or on timeout (seconds; scheduled runs only). A failure stops the
    schedulers of the boxes still waiting.
    report: called with progress lines (e.g. print; None: silent).
    """
    report = report or (lambda *args: None)
    os.chdir(project.path)  # protocols find their files from there (as Project.load)
    ordered = dependencyOrder(protocols)
    # A scheduled box whose form does not validate waits for ever (its inputs might
    # still come): check the boxes that take no input (the imports) now.
    ids = {p.getObjId() for p in ordered}
    for protocol in ordered:
        errors = [] if _inputProtocolIds(protocol) & ids else protocol.validate()
        if errors:
            raise WorkflowError('%s: %s' % (protocol.getObjLabel(), ' '.join(errors)))
    start = time.time()
    finished = []
    if not schedule:
        for protocol in ordered:
            t0 = time.time()
            report('  %-28s running...' % protocol.getObjLabel())
            project.launchProtocol(protocol, wait=True)
            protocol = project.getProtocol(protocol.getObjId())
            if not protocol.isFinished():
                raise _failure(protocol)
            report('  %-28s finished in %.0f s' % (protocol.getObjLabel(), time.time() - t0))
            finished.append(protocol)
        return finished

    for protocol in ordered:
        project.scheduleProtocol(protocol)
        report('  %-28s scheduled' % protocol.getObjLabel())
    pending = list(ordered)
    try:
        while pending:
            time.sleep(poll)
            for protocol in list(pending):
                project._updateProtocol(protocol)
                if protocol.isFinished():
                    report(
                        '  %-28s finished after %.0f s'
                        % (protocol.getObjLabel(), time.time() - start)
                    )
                    pending.remove(protocol)
                elif protocol.isFailed() or protocol.isAborted():
                    raise _failure(protocol)
            if timeout and pending and time.time() - start > timeout:
                raise WorkflowError(
                    'Timeout after %.0f s; still waiting for %s.'
                    % (time.time() - start, ', '.join(p.getRunName() for p in pending))
                )
    except WorkflowError:
        # The schedulers of the boxes downstream would wait for ever: stop them.
        for protocol in pending:
            if protocol.isActive():
                project.stopProtocol(protocol)
        raise
    return [project.getProtocol(p.getObjId()) for p in ordered]
