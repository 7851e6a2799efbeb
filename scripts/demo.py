"""DUAL's main job on the built-in phantom dataset, headless, through the plugin's
workflow template (dual/templates/denoise_pick.json.template).

1. The engine simulates ribosome phantoms with their ground truth (`dual-engine
   phantom`): reconstructions of seeds 0-1 are the noisy tomograms, grand models of
   seeds 2-3 the clean maps (unpaired: other specimens), and seed 4 is a held-out
   tomogram that nothing is trained on.
2. A Scipion project is made from the template, its fields filled (folders,
   patterns, voxel sizes, iterations, particle diameter, picks per tomogram), and run:
   import -> train -> denoise and simulate -> pick. Then the trained model denoises and
   picks the held-out tomogram in the same project.
3. The summary says where the project and its outputs are and scores them against the
   phantoms' ground truth: PSNR/SSIM/Pearson of raw and denoised tomograms against
   their grand models, and precision/recall/F1 of the picks against the particle lists
   (with the same DoG picker run on the raw tomograms for comparison).

Usage: python scripts/demo.py [--output demo-output] [--iterations N] [--quick]
                              [--threads N] [--schedule]
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from headless import prepare_scipion_home  # noqa: E402

from dual_engine.contract import DualConfig  # noqa: E402  (no Scipion import: safe here)

DEFAULT_ITERATIONS = DualConfig().iterations

VOXEL_SIZE = 10.0  # A
DIAMETER = 280.0  # A, the ribosome's largest extent
MATCH_DISTANCE = 80.0  # A: a pick within this of a ribosome centre is a hit (paper)
# The picking boxes' advanced settings, as in bench/: the phantoms' ribosomes are
# crowded, and with the defaults (minimum distance 240 A, margin = the radius) DoG
# recall stays near 0.7 even on a grand model (seed 0: 0.70, with these 0.95).
MIN_DISTANCE, MARGIN = 200.0, 70.0  # A
NOISY_SEEDS, CLEAN_SEEDS, HELD_OUT_SEEDS = (0, 1), (2, 3), (4,)

# Full: the engine's default network and iteration count (the template's); the README
# says how long it takes. Quick: a smoke run, a few minutes.
PRESETS = {
    'full': dict(shape=(64, 256, 256), particles=100, picks=120, iterations=None, network={}),
    'quick': dict(
        shape=(48, 128, 128),
        particles=30,
        picks=36,
        iterations=10,
        network=dict(
            subvolumeSize=16,
            unetWidth=4,
            noiseWidth=4,
            discWidth=4,
            codeSize=4,
            batchSize=2,
            logEvery=2,
            checkpointEvery=5,
        ),
    ),
}
PHANTOM_OPTIONS = ('--classes', 'ribosome')
# Template object ids of the boxes (dual/templates/denoise_pick.json.template).
IMPORT_NOISY, IMPORT_CLEAN, TRAIN, DENOISE, SIMULATE, PICK = '1', '2', '3', '4', '5', '6'


def engine(*args):
    """Run the engine's CLI as a user would; return its JSON output."""
    result = subprocess.run(
        [sys.executable, '-m', 'dual_engine', *map(str, args)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(result.stdout)


def makePhantoms(folder, seeds, preset):
    """folder/TS_<seed>/ for each seed (kept from an earlier run if complete)."""
    for seed in seeds:
        out = os.path.join(folder, 'TS_%02d' % seed)
        if not os.path.exists(os.path.join(out, 'phantom.json')):
            engine(
                'phantom',
                out,
                '--seed',
                seed,
                '--shape',
                *preset['shape'],
                '--voxel-size',
                VOXEL_SIZE,
                '--particles',
                preset['particles'],
                *PHANTOM_OPTIONS,
            )
    return folder


def modelThreads(items, cores):
    """numberOfThreads of a denoise/simulate box for `items` volumes on `cores` CPUs:
    one volume per core at a time (the protocols run threads - 1 steps at once)."""
    return 2 if items == 1 else min(items, cores) + 1


def announce(line):
    print(line, flush=True)


def heldOutBoxes(project, trainProt, testDir, preset, cores):
    """Import, denoise (with the trained model) and pick the held-out tomogram."""
    from tomo.protocols import ProtImportTomograms
    from dual.protocols import ProtDualDenoise, ProtDualPick

    imported = project.newProtocol(
        ProtImportTomograms,
        filesPath=testDir,
        filesPattern='{TS}/reconstruction.mrc',
        samplingRate=VOXEL_SIZE,
    )
    denoise = project.newProtocol(
        ProtDualDenoise, useGpu=False, numberOfThreads=modelThreads(1, cores)
    )
    denoise.inputModel.set(trainProt)
    denoise.inputModel.setExtended('model')
    denoise.inputTomograms.set(imported)
    denoise.inputTomograms.setExtended('Tomograms')
    pick = project.newProtocol(
        ProtDualPick,
        particleDiameter=DIAMETER,
        numberOfPicks=preset['picks'],
        minDistance=MIN_DISTANCE,
        margin=MARGIN,
    )
    pick.inputTomograms.set(denoise)
    pick.inputTomograms.setExtended('tomograms')
    pick.originalTomograms.set(imported)
    pick.originalTomograms.setExtended('Tomograms')
    for prot, label in (
        (imported, 'import held-out tomogram'),
        (denoise, 'dual - denoise (held-out)'),
        (pick, 'dual - pick (held-out)'),
    ):
        prot.setObjLabel(label)
        project.saveProtocol(prot)
    return [imported, denoise, pick]


# --------------------------------------------------------------------------- scoring
def projectFile(project, item):
    return os.path.join(project.path, item.getFileName())


def volumeScores(truthDir, rawFile, denoisedFile):
    from dual_engine.metrics import evaluate_volumes

    raw, denoised = evaluate_volumes(
        os.path.join(truthDir, 'grandmodel.mrc'), [rawFile, denoisedFile]
    )
    keys = ('psnr', 'ssim', 'pearson')
    return {'raw': {k: raw[k] for k in keys}, 'denoised': {k: denoised[k] for k in keys}}


def pickScores(picksXyz, truthDir):
    """Distance criterion against the ribosomes of the particle list (vesicles and
    gold excluded), one-to-one, within MATCH_DISTANCE."""
    from dual_engine.io import read_particle_locations
    from dual_engine.metrics import DEFAULT_EXCLUDE, match_picks

    truth = [
        p.xyz
        for p in read_particle_locations(os.path.join(truthDir, 'particle_locations.txt'))
        if p.name not in DEFAULT_EXCLUDE
    ]
    scores = match_picks(picksXyz, truth, MATCH_DISTANCE / VOXEL_SIZE)
    return {k: scores[k] for k in ('precision', 'recall', 'f1', 'n_picks', 'n_truth')}


def rawDogPicks(rawFile, top):
    """The protocol's DoG picker, same settings, on the raw tomogram (bright = dense)."""
    from dual_engine.io import read_mrc
    from dual_engine.pick import dog_pick

    volume, _ = read_mrc(rawFile)
    xyz, _ = dog_pick(
        volume,
        VOXEL_SIZE,
        DIAMETER,
        top=top,
        min_distance=MIN_DISTANCE,
        margin=MARGIN,
        polarity='bright',
    )
    return xyz


def scipionPicks(coords, tomo):
    """BOTTOM_LEFT_CORNER voxel positions of `tomo`'s coordinates (x, y, z)."""
    from tomo.constants import BOTTOM_LEFT_CORNER

    return [c.getPosition(BOTTOM_LEFT_CORNER) for c in coords.iterCoordinates(volume=tomo)]


def score(project, runs, phantomDirs):
    """Every figure of the summary, as a dict (also written to summary.json)."""
    from dual_engine.metrics import evaluate_volumes

    results = {'denoising': {}, 'picking': {}, 'simulation': {}}
    for role, denoiseKey, pickKey, importKey in (
        ('trained on', DENOISE, PICK, IMPORT_NOISY),
        ('held out', 'heldDenoise', 'heldPick', 'heldImport'),
    ):
        denoised = {
            t.getTsId(): projectFile(project, t) for t in getattr(runs[denoiseKey], 'tomograms')
        }
        coords = getattr(runs[pickKey], 'coordinates')
        top = runs[pickKey].numberOfPicks.get()
        for tomo in [t.clone() for t in getattr(runs[importKey], 'Tomograms')]:
            tsId, rawFile = tomo.getTsId(), projectFile(project, tomo)
            truth = phantomDirs[tsId]
            results['denoising'][tsId] = dict(
                role=role, **volumeScores(truth, rawFile, denoised[tsId])
            )
            results['picking'][tsId] = dict(
                role=role,
                denoised=pickScores(scipionPicks(coords, tomo), truth),
                raw=pickScores(rawDogPicks(rawFile, top), truth),
            )
    for tomo in [t.clone() for t in getattr(runs[SIMULATE], 'tomograms')]:
        mapId = tomo.getTsId().rsplit('_sim', 1)[0]
        sim = evaluate_volumes(
            os.path.join(phantomDirs[mapId], 'grandmodel.mrc'), [projectFile(project, tomo)]
        )[0]
        results['simulation'][tomo.getTsId()] = {'pearson_with_map': sim['pearson']}
    return results


# --------------------------------------------------------------------------- summary
def printSummary(project, runs, results, args, output, phantomRoot, seconds):
    line = '-' * 78
    print('\n' + line)
    print(
        'DUAL demo (%s preset, %d training iterations): done in %d min %02d s'
        % ('quick' if args.quick else 'full', args.iterations, seconds // 60, seconds % 60)
    )
    print(line)
    print('Scipion project  %s' % project.path)
    print(
        '  browse it:     SCIPION_USER_DATA=%s scipion3 project %s'
        % (os.path.join(output, 'scipion', 'ScipionUserData'), project.getShortName())
    )
    for prot in runs.values():
        outputs = ', '.join(
            '%s (%s)' % (name, _size(obj)) for name, obj in prot.iterOutputAttributes()
        )
        print('  %-27s %-36s %s' % (prot.getObjLabel(), prot.getWorkingDir(), outputs))
    print(
        'Ground truth     %s/{noisy,clean,held_out}/TS_*/ (grandmodel.mrc, '
        'particle_locations.txt, masks)' % phantomRoot
    )

    print('\nDenoising, against each tomogram\'s grand model (never used in training)')
    print(
        '  %-6s %-11s %-27s %s'
        % ('', '', 'raw: PSNR / SSIM / Pearson', 'denoised: PSNR / SSIM / Pearson')
    )
    for tsId, r in results['denoising'].items():
        print(
            '  %-6s %-11s %-27s %s'
            % (tsId, r['role'], _volumeText(r['raw']), _volumeText(r['denoised']))
        )

    real = [r['raw']['pearson'] for r in results['denoising'].values()]
    print(
        '\nSimulation from the clean maps: Pearson with the map %s; real tomograms %.3f'
        % (
            ', '.join(
                '%s %.3f' % (k, v['pearson_with_map']) for k, v in results['simulation'].items()
            ),
            sum(real) / len(real),
        )
    )

    print(
        '\nPicking (DoG for %g A particles, best %d per tomogram, minimum distance %g A, '
        'margin %g A;\n  a hit is a pick within %g A of a ribosome centre, one-to-one)'
        % (DIAMETER, runs[PICK].numberOfPicks.get(), MIN_DISTANCE, MARGIN, MATCH_DISTANCE)
    )
    print('  %-6s %-11s %-26s %s' % ('', '', 'denoised: P / R / F1', 'raw (same DoG): P / R / F1'))
    for tsId, r in results['picking'].items():
        print(
            '  %-6s %-11s %-26s %-26s (%d ribosomes)'
            % (
                tsId,
                r['role'],
                _pickText(r['denoised']),
                _pickText(r['raw']),
                r['denoised']['n_truth'],
            )
        )
    print('\nAll figures: %s' % os.path.join(output, 'summary.json'))


def _size(obj):
    size = getattr(obj, 'getSize', None)
    return ('%d item%s' % (size(), '' if size() == 1 else 's')) if size else type(obj).__name__


def _volumeText(s):
    return '%5.2f dB / %.3f / %.3f' % (s['psnr'], s['ssim'], s['pearson'])


def _pickText(s):
    return '%.2f / %.2f / %.2f' % (s['precision'], s['recall'], s['f1'])


# --------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--output',
        default='demo-output',
        help='folder for the phantoms, the Scipion home and the project',
    )
    parser.add_argument(
        '--quick',
        action='store_true',
        help='smoke run: small phantoms, tiny network, few iterations',
    )
    parser.add_argument(
        '--iterations',
        type=int,
        default=None,
        help='training iterations (default: the engine\'s, %d; --quick 10)' % DEFAULT_ITERATIONS,
    )
    parser.add_argument(
        '--threads', type=int, default=os.cpu_count() or 1, help='CPU cores to use (default: all)'
    )
    parser.add_argument(
        '--schedule',
        action='store_true',
        help='schedule all boxes at once, as the Scipion GUI does, instead '
        'of launching them one by one (adds idle polling time)',
    )
    args = parser.parse_args()
    preset = PRESETS['quick' if args.quick else 'full']
    args.iterations = args.iterations or preset['iterations'] or DEFAULT_ITERATIONS
    output = os.path.abspath(args.output)
    start = time.time()
    # No OMP_WAIT_POLICY=PASSIVE here (it was): on an idle 2-core AMD EPYC (AVX2) it made
    # a training iteration 1.25-2x slower, and the boxes run as in a user's Scipion.

    shapeName = 'x'.join(map(str, preset['shape']))
    phantomRoot = os.path.join(output, 'phantoms', shapeName)
    announce(
        '1. Simulating ribosome phantoms (%s voxels at %g A) with the engine...'
        % (shapeName, VOXEL_SIZE)
    )
    noisyDir = makePhantoms(os.path.join(phantomRoot, 'noisy'), NOISY_SEEDS, preset)
    cleanDir = makePhantoms(os.path.join(phantomRoot, 'clean'), CLEAN_SEEDS, preset)
    testDir = makePhantoms(os.path.join(phantomRoot, 'held_out'), HELD_OUT_SEEDS, preset)
    phantomDirs = {
        name: os.path.join(folder, name)
        for folder in (noisyDir, cleanDir, testDir)
        for name in os.listdir(folder)
    }

    prepare_scipion_home(os.path.join(output, 'scipion'))
    from pyworkflow.project import Manager
    from dual.templates.runner import createProject, loadTemplate, runWorkflow

    projectName = 'dual_demo_quick' if args.quick else 'dual_demo'
    announce(
        '2. Creating the Scipion project %r from the template "dual-denoise_pick"...' % projectName
    )
    manager = Manager()
    if manager.hasProject(projectName):
        manager.deleteProject(projectName)
    project, boxes = createProject(
        projectName,
        loadTemplate(),
        noisyPath=noisyDir,
        noisyPattern='{TS}/reconstruction.mrc',
        noisySamplingRate=VOXEL_SIZE,
        cleanPath=cleanDir,
        cleanPattern='{TS}/grandmodel.mrc',
        cleanSamplingRate=VOXEL_SIZE,
        workingVoxelSize=VOXEL_SIZE,
        iterations=args.iterations,
        useGpu=False,
        particleDiameter=DIAMETER,
        picksPerTomogram=preset['picks'],
    )
    os.chdir(project.path)  # protocols resolve their files from the project folder
    cores = max(1, args.threads)
    for name, value in dict(preset['network'], numberOfThreads=cores).items():
        getattr(boxes[TRAIN], name).set(value)
    boxes[DENOISE].numberOfThreads.set(modelThreads(len(NOISY_SEEDS), cores))
    boxes[SIMULATE].numberOfThreads.set(modelThreads(len(CLEAN_SEEDS), cores))
    boxes[PICK].minDistance.set(MIN_DISTANCE)
    boxes[PICK].margin.set(MARGIN)
    for prot in boxes.values():
        project.saveProtocol(prot)

    announce(
        '3. Running it (%s): import -> train (%d iterations) -> denoise, simulate '
        '-> pick...' % ('scheduled' if args.schedule else 'one box at a time', args.iterations)
    )
    finished = runWorkflow(project, list(boxes.values()), schedule=args.schedule, report=announce)
    runs = {
        key: next(p for p in finished if p.getObjId() == box.getObjId())
        for key, box in boxes.items()
    }

    announce('4. Denoising and picking the held-out tomogram with the trained model...')
    held = runWorkflow(
        project,
        heldOutBoxes(project, runs[TRAIN], testDir, preset, cores),
        schedule=args.schedule,
        report=announce,
    )
    runs.update(zip(('heldImport', 'heldDenoise', 'heldPick'), held))

    announce('5. Scoring against the ground truth...')
    results = score(project, runs, phantomDirs)
    seconds = int(time.time() - start)
    summary = dict(
        preset='quick' if args.quick else 'full',
        iterations=args.iterations,
        shape=list(preset['shape']),
        voxel_size=VOXEL_SIZE,
        diameter=DIAMETER,
        min_distance=MIN_DISTANCE,
        margin=MARGIN,
        match_distance=MATCH_DISTANCE,
        project=project.path,
        boxes={p.getObjLabel(): p.getWorkingDir() for p in runs.values()},
        seconds=seconds,
        **results,
    )
    with open(os.path.join(output, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    printSummary(project, runs, results, args, output, phantomRoot, seconds)


if __name__ == '__main__':
    main()
