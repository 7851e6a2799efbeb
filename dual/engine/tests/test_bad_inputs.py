"""What a careful user or a hostile file feeds the engine: a clear message and exit code
2 before any work, nothing written at the output path, and training state that survives
crashes and a second trainer."""

import json
import os

import mrcfile
import numpy as np
import pytest

from dual_engine.cli import main
from dual_engine.contract import MODEL_FILE, TRAINING_LOG, InputError
from dual_engine.io import write_mrc
from dual_engine.model import load_model
from dual_engine.train import train, training_lock

from test_train import tiny_config

VOXEL = 10.0


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Two small random 'tomograms' and a trained tiny model (3 iterations)."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        path = str(root / name / "reconstruction.mrc")
        write_mrc(path, rng.normal(size=(24, 40, 40)).astype(np.float32), VOXEL)
        paths.append(path)
    model_dir = str(root / "model")
    train(paths, paths, model_dir, tiny_config(iterations=3), threads=1)
    return paths, os.path.join(model_dir, MODEL_FILE), root


def run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_outputs_that_would_collide_are_refused_before_any_work(volumes, tmp_path, capsys):
    paths, model, _ = volumes
    out = tmp_path / "out"
    code, err = run(["denoise", model, *paths, "--outdir", out, "--threads", 1], capsys)
    assert code == 2 and "would both be written to" in err
    assert not out.exists()


def test_existing_outputs_are_kept_unless_overwrite(volumes, tmp_path, capsys):
    paths, model, _ = volumes
    out = tmp_path / "out"
    assert run(["denoise", model, paths[0], "--outdir", out, "--threads", 1], capsys)[0] == 0
    result = out / "reconstruction_denoised.mrc"
    before = result.stat().st_mtime_ns
    code, err = run(["denoise", model, paths[0], "--outdir", out, "--threads", 1], capsys)
    assert code == 2 and "exists already" in err and result.stat().st_mtime_ns == before
    assert (
        run(["denoise", model, paths[0], "--outdir", out, "--threads", 1, "--overwrite"], capsys)[0]
        == 0
    )


def write_complex(path):
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((24, 40, 40), np.complex64))
        mrc.voxel_size = VOXEL


def write_wrong_voxel_size(path):
    write_mrc(path, np.random.default_rng(2).normal(size=(24, 40, 40)).astype(np.float32), 1.0)


def write_text(path):
    with open(path, "w") as f:
        f.write("not an mrc")


@pytest.mark.parametrize(
    "make, message",
    [
        (write_complex, "complex"),
        (write_wrong_voxel_size, "apart (at most 2x)"),
        (write_text, "cannot read"),
    ],
)
def test_bad_volumes_are_refused_before_any_work(volumes, tmp_path, capsys, make, message):
    _, model, _ = volumes
    bad = str(tmp_path / "bad.mrc")
    make(bad)
    code, err = run(["denoise", model, bad, "--outdir", tmp_path / "out"], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_anisotropic_voxels_are_refused(volumes, tmp_path, capsys):
    _, model, _ = volumes
    path = str(tmp_path / "aniso.mrc")
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.random.default_rng(1).normal(size=(24, 40, 40)).astype(np.float32))
        mrc.voxel_size = (10.0, 10.0, 20.0)
    code, err = run(["denoise", model, path, "--outdir", tmp_path / "out"], capsys)
    assert code == 2 and "non-cubic voxels" in err


def test_a_finished_run_is_not_replaced_without_asking(volumes, capsys):
    paths, model, root = volumes
    before = open(model, "rb").read()
    code, err = run(
        [
            "train",
            os.path.dirname(model),
            "--noisy",
            *paths,
            "--clean",
            *paths,
            "--iterations",
            2,
            "--subvolume-size",
            16,
        ],
        capsys,
    )
    assert code == 2 and "holds an earlier run" in err
    assert open(model, "rb").read() == before


def test_a_second_trainer_in_the_same_folder_is_refused(volumes, tmp_path, capsys):
    paths, _, _ = volumes
    outdir = str(tmp_path / "run")
    os.makedirs(outdir)
    with training_lock(outdir):
        code, err = run(
            [
                "train",
                outdir,
                "--noisy",
                *paths,
                "--clean",
                *paths,
                "--iterations",
                2,
                "--subvolume-size",
                16,
                "--threads",
                1,
            ],
            capsys,
        )
    assert code == 2 and "another training is running" in err
    assert not os.path.exists(os.path.join(outdir, MODEL_FILE))


def test_resume_survives_a_torn_log_line_and_a_crash_between_writes(volumes, tmp_path):
    paths, _, _ = volumes
    straight, crashed = str(tmp_path / "straight"), str(tmp_path / "crashed")
    train(paths, paths, straight, tiny_config(iterations=4, checkpoint_every=2), threads=1)
    train(paths, paths, crashed, tiny_config(iterations=4, checkpoint_every=2), threads=1)
    # A crash after the final checkpoint, before the model: no model.pt, a torn log line.
    os.remove(os.path.join(crashed, MODEL_FILE))
    with open(os.path.join(crashed, TRAINING_LOG), "a") as f:
        f.write('{"iteration": 5, "lo')
    summary = train(
        paths, paths, crashed, tiny_config(iterations=4, checkpoint_every=2), resume=True, threads=1
    )
    assert summary["iterations"] == 4
    a = load_model(os.path.join(straight, MODEL_FILE))[1]["generators"]
    b = load_model(os.path.join(crashed, MODEL_FILE))[1]["generators"]
    assert all((a[k] == b[k]).all() for k in a)
    with open(os.path.join(crashed, TRAINING_LOG)) as f:
        assert [json.loads(line)["iteration"] for line in f] == [1, 2, 3, 4]


def test_continuing_refuses_changed_settings_and_models_past_the_target(volumes, tmp_path, capsys):
    paths, model, _ = volumes
    outdir = os.path.dirname(model)
    code, err = run(
        [
            "train",
            outdir,
            "--resume",
            "--noisy",
            *paths,
            "--clean",
            *paths,
            "--iterations",
            6,
            "--unet-width",
            8,
        ],
        capsys,
    )
    assert code == 2 and "unet_width 4, not 8" in err
    code, err = run(
        [
            "train",
            tmp_path / "next",
            "--init-model",
            model,
            "--noisy",
            *paths,
            "--clean",
            *paths,
            "--iterations",
            2,
        ],
        capsys,
    )
    assert code == 2 and "has trained 3 iterations already" in err
    assert not (tmp_path / "next" / MODEL_FILE).exists()


def test_a_diverging_training_stops_with_a_message(volumes, tmp_path, capsys):
    paths, _, _ = volumes
    outdir = tmp_path / "diverge"
    code, err = run(
        [
            "train",
            outdir,
            "--noisy",
            *paths,
            "--clean",
            *paths,
            "--iterations",
            20,
            "--subvolume-size",
            16,
            "--unet-width",
            4,
            "--code-size",
            4,
            "--noise-width",
            4,
            "--disc-width",
            4,
            "--batch-size",
            2,
            "--lr",
            1e6,
            "--threads",
            1,
        ],
        capsys,
    )
    assert code == 1 and "training diverged" in err and "Traceback" not in err
    assert not (outdir / MODEL_FILE).exists()


def test_job_file_booleans_are_not_strings(volumes, tmp_path, capsys):
    paths, model, _ = volumes
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "outdir": os.path.dirname(model),
                "noisy": paths,
                "clean": paths,
                "resume": "false",
                "iterations": 6,
            }
        )
    )
    code, err = run(["train", "--job", job], capsys)
    assert code == 2 and "resume must be true or false" in err


def test_output_folders_that_cannot_be_made_are_refused_before_any_work(volumes, tmp_path, capsys):
    """A file where the output folder should be (permissions mean nothing to root, who
    runs CI, so a file in the way stands for every folder that cannot be written)."""
    paths, model, _ = volumes
    (tmp_path / "file").write_text("x")
    blocked = tmp_path / "file"
    for argv in (
        ["denoise", model, paths[0], "--outdir", blocked / "out"],
        ["pick", paths[0], blocked / "picks", "--diameter", 60],
        ["train", blocked / "run", "--noisy", paths[0], "--clean", paths[0]],
    ):
        code, err = run(argv, capsys)
        assert code == 2 and "is not a folder" in err, (argv, err)
    assert (tmp_path / "file").read_text() == "x"


def test_stale_temporary_files_of_killed_writers_are_cleaned(tmp_path):
    from dual_engine.io import atomic_output

    target = tmp_path / "volume.mrc"
    stale = tmp_path / ".volume.mrc.999999999.tmp"  # no such process
    stale.write_text("half a volume")
    with atomic_output(target) as tmp, open(tmp, "w") as f:
        f.write("whole")
    assert target.read_text() == "whole" and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.mrc"]


def test_training_says_when_a_voxel_size_looks_wrong(tmp_path, capsys):
    """Data whose header says 1 A: training resamples it by any factor (finer clean maps
    are legitimate, so it is not refused), and beyond 2x the log says the factor."""
    rng = np.random.default_rng(5)
    wrong = str(tmp_path / "wrong.mrc")
    write_mrc(wrong, rng.normal(size=(24, 40, 40)).astype(np.float32), 1.0)
    from dual_engine.data import Domain

    Domain("noisy", [wrong], 1.7, 8)  # 1.7x: no warning
    assert "Warning" not in capsys.readouterr().err
    Domain("noisy", [wrong], 3.0, 8)
    assert "3.0x from the working voxel size of 3 A" in capsys.readouterr().err
    with pytest.raises(InputError, match="smaller than the 16"):  # warned first
        Domain("noisy", [wrong], 10.0, 16)
    assert "10.0x from the working voxel size of 10 A" in capsys.readouterr().err
