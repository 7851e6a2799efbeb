"""DUAL's main job on the built-in default dataset, headless.

1. The engine simulates phantom tomograms with their ground truth (`dual-engine phantom`).
2. A Scipion project imports them with tomo's import protocol: the noisy tomograms and
   the clean grand models, the two domains DUAL learns from.
3. The summary says where everything is and scores the tomograms against their
   ground truth with `dual-engine evaluate`.

Usage: python scripts/demo.py [--output demo-output] [--phantoms 2] [--shape Z Y X]
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import prepare_scipion_home  # noqa: E402

PROJECT = 'dual_demo'


def engine(*args):
    """Run the engine's CLI as a user would; return its JSON output."""
    result = subprocess.run([sys.executable, '-m', 'dual_engine', *map(str, args)],
                            check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(result.stdout)


def run(project, protocol):
    project.launchProtocol(protocol, wait=True)
    protocol = project.getProtocol(protocol.getObjId())
    if not protocol.isFinished():
        sys.exit('%s failed: %s (log: %s)' % (protocol.getRunName(), protocol.getErrorMessage(),
                                             protocol.getLogPaths()[0]))
    return protocol


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', default='demo-output')
    parser.add_argument('--phantoms', type=int, default=2)
    parser.add_argument('--shape', type=int, nargs=3, default=[64, 256, 256],
                        metavar=('Z', 'Y', 'X'))
    parser.add_argument('--voxel-size', type=float, default=10.0)
    args = parser.parse_args()
    output = os.path.abspath(args.output)
    start = time.time()

    print('1. Simulating %d phantom(s) of %s voxels with the engine...'
          % (args.phantoms, 'x'.join(map(str, args.shape))))
    phantomDir = os.path.join(output, 'phantoms')
    phantoms = {}
    for seed in range(args.phantoms):
        folder = os.path.join(phantomDir, 'TS_%02d' % seed)
        phantoms[folder] = engine('phantom', folder, '--seed', seed, '--shape', *args.shape,
                                  '--voxel-size', args.voxel_size)

    print('2. Importing them into the Scipion project %r...' % PROJECT)
    prepare_scipion_home(os.path.join(output, 'scipion'))
    from pyworkflow.project import Manager
    from tomo.protocols import ProtImportTomograms

    manager = Manager()
    if manager.hasProject(PROJECT):
        manager.deleteProject(PROJECT)
    project = manager.createProject(PROJECT)
    os.chdir(project.path)  # pyworkflow resolves project files relative to it
    imported = {}
    for label, pattern in (('noisy tomograms', '*/reconstruction.mrc'),
                           ('clean grand models', '*/grandmodel.mrc')):
        prot = project.newProtocol(ProtImportTomograms, objLabel='import %s' % label,
                                   filesPath=phantomDir, filesPattern=pattern,
                                   samplingRate=args.voxel_size)
        imported[label] = run(project, prot).Tomograms

    print('3. Scoring the tomograms against their ground truth...\n')
    print('Summary')
    print('  project      %s' % project.getPath())
    for label, tomos in imported.items():
        print('  %-18s %d of %s voxels at %.2f A/voxel (%s)'
              % (label, tomos.getSize(), 'x'.join(map(str, tomos.getDimensions())),
                 tomos.getSamplingRate(),
                 os.path.join(project.path, tomos.getFileName())))
    for folder, summary in phantoms.items():
        scores = engine('evaluate', 'volumes', os.path.join(folder, 'grandmodel.mrc'),
                        os.path.join(folder, 'reconstruction.mrc'))[0]
        print('  %s  PSNR %.2f dB  SSIM %.3f  Pearson %.3f vs grand model; %s'
              % (os.path.basename(folder), scores['psnr'], scores['ssim'], scores['pearson'],
                 ', '.join('%d %s' % (n, c) for c, n in summary['counts'].items())))
    print('  ground truth  %s/TS_*/ (grandmodel, class and occupancy masks, particle list)'
          % phantomDir)
    print('  wall time     %.0f s' % (time.time() - start))


if __name__ == '__main__':
    main()
