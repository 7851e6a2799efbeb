"""The plugin's workflow templates: where they are and what they are called.

Scipion lists every *.json.template file of this folder (pyworkflow Plugin.getTemplates)
in `scipion3 template` and in the project window's "Import workflow template". A
template is a workflow exported as JSON, preceded by a one-line description, whose
user fields are written ~title|default|type|alias~ (type: 0 text, 1 yes/no, 2 path,
3 integer, 4 decimal). Fields sharing an alias are set together (useGpu).

To fill a template and run it without the GUI, see dual.templates.runner:

    from dual.templates.runner import createProject, loadTemplate, runWorkflow

Templates:
    denoise_pick       import noisy tomograms and clean maps -> train -> denoise
                       (noisy) and simulate (clean) -> pick on the denoised tomograms,
                       coordinates on the imported ones.
"""

import os

DENOISE_PICK = 'denoise_pick'
TEMPLATE_EXTENSION = '.json.template'
TEMPLATES_DIR = os.path.dirname(os.path.abspath(__file__))


def templatePath(name=DENOISE_PICK):
    """The template file of `name` (e.g. denoise_pick)."""
    return os.path.join(TEMPLATES_DIR, name + TEMPLATE_EXTENSION)


def templateNames():
    """Names of the templates shipped with the plugin."""
    return sorted(
        f[: -len(TEMPLATE_EXTENSION)]
        for f in os.listdir(TEMPLATES_DIR)
        if f.endswith(TEMPLATE_EXTENSION)
    )
