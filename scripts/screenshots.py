"""Screenshots of the plugin's protocol forms and viewers (docs/screenshots/README.md).

Usage (Debian: apt-get install xvfb):

    xvfb-run -a .venv/bin/python scripts/screenshots.py [--output docs/screenshots] [--keep]

In a throw-away Scipion home, a project runs every DUAL protocol on two tiny phantoms
(a tiny network, a few iterations: the pictures show the GUI, not results). Then each
protocol's form (every tab), each viewer's form and each plot window opens, one at a
time, as a real Tk window on the X display, and is saved as one PNG. About 70 s on 2
CPU cores. Not a test.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import prepare_scipion_home  # noqa: E402

MAX_BYTES = 200_000  # larger screenshots are saved with a 256-colour palette


def run(project, cls, label, inputs=(), **values):
    """Run a new `cls` box in `project` and wait; inputs: {param: (protocol, output)}."""
    prot = project.newProtocol(cls, **values)
    prot.setObjLabel(label)
    for name, (producer, output) in dict(inputs).items():
        getattr(prot, name).set(producer)
        getattr(prot, name).setExtended(output)
    project.launchProtocol(prot, wait=True)
    prot = project.getProtocol(prot.getObjId())
    if not prot.isFinished():
        sys.exit('%s failed; its log: %s' % (label, prot.getLogPaths()[0]))
    print('  %-26s finished' % label)
    return prot


def runProtocols(project):
    """The boxes of the screenshot project, run one after the other: {name: protocol}."""
    from dual import protocols as P
    from dual.protocols.protocol_denoise import DenoiseOutputs
    from dual.protocols.protocol_phantom import (
        OUT_CLASS_MASKS,
        OUT_COORDINATES,
        OUT_GRAND_MODELS,
        OUT_TOMOGRAMS,
    )
    from dual.protocols.protocol_train import TrainOutputs
    from dual.tests.phantoms import SMALL_SHAPE, SMALL_VOXEL_SIZE
    from dual.tests.workflow import TINY_TRAINING

    tiny = dict(TINY_TRAINING, iterations=20)
    z, y, x = SMALL_SHAPE
    size = dict(numberOfPhantoms=2, sizeX=x, sizeY=y, sizeZ=z, voxelSize=SMALL_VOXEL_SIZE)
    phantoms = run(project, P.ProtDualPhantom, 'phantoms', {}, **size)
    tomograms, maps = (phantoms, OUT_TOMOGRAMS), (phantoms, OUT_GRAND_MODELS)
    inputs = {'inputTomograms': tomograms, 'cleanVolumes': maps}
    train = run(project, P.ProtDualTrain, 'train', inputs, **tiny)
    model = (train, TrainOutputs.model.name)
    inputs = {'inputModel': model, 'inputTomograms': tomograms}
    denoise = run(project, P.ProtDualDenoise, 'denoise', inputs, useGpu=False)
    inputs = {'inputModel': model, 'inputMaps': maps}
    inputs['inputLabels'] = (phantoms, OUT_CLASS_MASKS)
    inputs['inputCoordinates'] = (phantoms, OUT_COORDINATES)
    simulate = run(project, P.ProtDualSimulate, 'simulate', inputs, useGpu=False)
    wedge = run(project, P.ProtDualWedge, 'missing wedge', {'inputTomograms': tomograms}, **tiny)
    inputs = {'inputTomograms': (denoise, DenoiseOutputs.tomograms.name)}
    inputs['originalTomograms'] = tomograms  # the coordinates refer to the raw tomograms
    pick = run(project, P.ProtDualPick, 'pick', inputs, particleDiameter=140.0, numberOfPicks=40)
    # Not run: its form, filled with the model file the training wrote.
    modelFile = os.path.abspath(getattr(train, TrainOutputs.model.name).getPath())
    importModel = project.newProtocol(P.ProtDualImportModel, modelFile=modelFile)
    boxes = [phantoms, importModel, train, denoise, simulate, wedge, pick]
    names = ['phantom', 'import-model', 'train', 'denoise', 'simulate', 'wedge', 'pick']
    return dict(zip(names, boxes))


def save(image, path):
    """Save a PNG; one larger than MAX_BYTES again with an adaptive 256-colour palette."""
    image.save(path, optimize=True)
    if os.path.getsize(path) > MAX_BYTES:
        image.convert('RGB').quantize(256).save(path, optimize=True)
    size = os.path.getsize(path) // 1024
    print('  %-36s %4dx%-4d %4d KB' % (os.path.basename(path), *image.size, size))


def capture(window, path):
    """Draw the Tk toplevel `window` and save what the X display shows of it."""
    from PIL import ImageGrab

    window.deiconify()
    window.geometry('+0+0')
    for _ in range(10):  # let the window map and draw (no window manager under Xvfb)
        window.update()
        time.sleep(0.05)
    x, y = window.winfo_rootx(), window.winfo_rooty()
    width, height = window.winfo_width(), window.winfo_height()
    if x + width > window.winfo_screenwidth() or y + height > window.winfo_screenheight():
        print('  warning: %s is cut by the screen (make it larger: xvfb-run -s)' % path)
    save(ImageGrab.grab(bbox=(x, y, x + width, y + height)), path)


def captureForm(form, path):
    """A FormWindow, one PNG per tab of its parameters: the first as `path`, the others
    as path-<tab name>.png."""
    form.adjustSize()
    tabs = form._sections[0].master if form._sections else None
    for index, tabId in enumerate(tabs.tabs() if tabs else [None]):
        if index:
            tabs.select(tabId)
            name = tabs.tab(tabId, 'text').lower().replace(' ', '-')
            capture(form.root, path.replace('.png', '-%s.png' % name))
        else:
            capture(form.root, path)
    form.root.destroy()


def capturePlots(views, path):
    """Show the EmPlotter `views` (as a viewer does) and save their windows: `path`,
    or path-1.png, path-2.png, ... for several."""
    import matplotlib.pyplot as plt

    for index, view in enumerate(views, 1):
        view.show()
        name = path if len(views) == 1 else path.replace('.png', '-%d.png' % index)
        capture(view.getFigure().canvas.manager.window, name)
        plt.close(view.getFigure())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', default='docs/screenshots', help='folder of the PNGs')
    parser.add_argument('--keep', action='store_true', help='keep the Scipion home and project')
    args = parser.parse_args()
    output = os.path.abspath(args.output)
    os.makedirs(output, exist_ok=True)
    start = time.time()
    home = prepare_scipion_home(tempfile.mkdtemp(prefix='dual-screenshots-'))

    import pyworkflow as pw
    from pwem.viewers import EmPlotter
    from pyworkflow.gui import Window
    from pyworkflow.gui.project import ProjectWindow  # noqa: F401  (before form: circular)
    from pyworkflow.gui.form import FormWindow
    from pyworkflow.project import Manager
    from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

    from dual.viewers.viewer_picks import SHOW_OUTPUT

    print('Running the protocols in %s' % home)
    project = Manager().createProject('screenshots')
    os.chdir(project.path)
    boxes = runProtocols(project)
    print('Protocols ran in %.0f s; screenshots:' % (time.time() - start))

    EmPlotter.setBackend('TkAgg')  # as the project window does
    parent = Window('DUAL screenshots')  # hidden: the forms' parent, as the project window

    def png(name):
        return os.path.join(output, name + '.png')

    for name, prot in boxes.items():  # the form a double click on the box opens
        form = FormWindow('Protocol Run: ' + prot.getClassName(), prot, lambda *a: None, parent)
        captureForm(form, png('form-' + name))

    # (picture, box, viewer, the form item it shows (None: a viewer without form), values)
    views = [
        ('training-curves', 'train', 'DualTrainingViewer', None, {}),
        ('denoise', 'denoise', 'DualDenoiseViewer', 'showBeforeAfter', {}),
        ('simulate-map', 'simulate', 'DualSimulateViewer', 'showMapVsSynthetic', {}),
        ('simulate-real', 'simulate', 'DualSimulateViewer', 'showRealVsSynthetic', {}),
        ('wedge', 'wedge', 'DualWedgeViewer', 'showBeforeAfter', {}),
        ('pick', 'pick', 'DualPicksViewer', 'showPicks', {}),
        ('pick-on-originals', 'pick', 'DualPicksViewer', 'showPicks', {'volume': SHOW_OUTPUT}),
    ]
    formsTaken = set()
    for picture, box, viewerName, item, values in views:
        prot = boxes[box]
        # The viewers the project window offers for the box ("Analyze results").
        found = pw.Config.getDomain().findViewers(prot, DESKTOP_TKINTER)
        viewer = next(v for v in found if v.__name__ == viewerName)(project=project, protocol=prot)
        if not isinstance(viewer, ProtocolViewer):
            capturePlots(viewer._visualize(prot), png('viewer-' + picture))
            continue
        viewer.setProtocol(prot)
        for param, value in values.items():
            getattr(viewer, param).set(value)
        if viewerName not in formsTaken:  # the viewer's own form, once
            formsTaken.add(viewerName)
            form = FormWindow(
                'Protocol Viewer: ' + viewerName, viewer, viewer._viewAll, parent,
                visualizeDict=viewer._getVisualizeDict(), visualizeMode=True,
            )  # fmt: skip
            captureForm(form, png('viewer-%s-form' % box))
        capturePlots(viewer._getVisualizeDict()[item](item), png('viewer-' + picture))
    if args.keep:
        print('The Scipion home and its project stay in %s' % home)
    else:
        shutil.rmtree(home)
    print('Done in %.0f s' % (time.time() - start))


if __name__ == '__main__':
    main()
