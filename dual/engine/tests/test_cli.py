"""The command line and job files: one set of declared options (contract.py), checked the
same way whichever way they come; the command line wins over the job file."""

import json
import os

import pytest

from dual_engine.cli import main, parse_job
from dual_engine.contract import DualConfig


def write_job(tmp_path, values, name="job.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return str(path)


def test_job_options_with_many_values_leave_positionals_alone(tmp_path):
    job = write_job(tmp_path, {"classes": ["ribosome", "dimer"], "seed": 3, "noise_free": True})
    command, args = parse_job(["phantom", "--job", job, str(tmp_path / "out"), "--seed", "5"])
    assert command == "phantom" and args.outdir == str(tmp_path / "out")
    assert args.classes == ("ribosome", "dimer") and args.noise_free
    assert args.seed == 5  # the command line wins over the job file
    assert args.voxel_size == 10.0  # not given: the declared default


def test_job_can_hold_positionals_and_required_options(tmp_path):
    job = write_job(
        tmp_path, {"outdir": "o", "noisy": ["a.mrc"], "clean": ["b.mrc"], "iterations": 7}
    )
    _, args = parse_job(["train", "--job", job])
    assert (args.outdir, args.noisy, args.clean, args.iterations) == (
        "o",
        ("a.mrc",),
        ("b.mrc",),
        7,
    )
    assert args.config().iterations == 7
    assert args.config().unet_width == DualConfig().unet_width  # a default, not given
    assert {"outdir", "noisy", "clean", "iterations"} == set(args.given)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"outdir": "o", "sede": 1}, "unknown option(s) for phantom: sede"),
        ({"outdir": "o", "seed": "3"}, "seed must be an integer"),
        ({"outdir": "o", "seed": None}, "seed needs a value"),
        ({"outdir": "o", "noise_free": "false"}, "noise_free must be true or false"),
        ({"outdir": "o", "classes": "ribosome"}, "classes must be a list"),
        ({"outdir": "o", "shape": [8, 8]}, "shape must have 3 values"),
        ({"outdir": "o", "voxel_size": 0}, "voxel_size must be > 0"),
        ({"outdir": "o", "voxel_size": float("nan")}, "voxel_size must be a finite number"),
        ({"seed": 1}, "outdir is required"),
        (["not", "an", "object"], "must hold a JSON object"),
    ],
)
def test_bad_job_values_are_clear_errors(tmp_path, capsys, values, message):
    out = tmp_path / "o"
    assert main(["phantom", "--job", write_job(tmp_path, values)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dual-engine: error:") and message in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "o", "--noisy", "a", "--clean", "b", "--checkpoint-every", "0"],
            "checkpoint_every must be >= 1",
        ),
        (
            ["train", "o", "--noisy", "a", "--clean", "b", "--log-every", "0"],
            "log_every must be >= 1",
        ),
        (
            ["train", "o", "--noisy", "a", "--clean", "b", "--iterations", "0"],
            "iterations must be >= 1",
        ),
        (["train", "o", "--noisy", "a", "--clean", "b", "--threads", "-1"], "threads must be >= 1"),
        (
            ["train", "o", "--noisy", "a", "--clean", "b", "--unet-width", "0"],
            "unet_width must be >= 1",
        ),
        (["train", "o", "--noisy", "a", "--clean", "b", "--subvolume-size", "36"], "multiple of 8"),
        (["train", "o", "--noisy", "a", "--clean", "b", "--device", "tpu"], "device must be"),
        (["denoise", "m.pt", "a.mrc", "--outdir", "o", "--overlap", "-4"], "overlap must be >= 0"),
        (
            ["denoise", "m.pt", "a.mrc", "--outdir", "o", "--overlap", "100000"],
            "overlap must be <= 256",
        ),
        (
            ["denoise", "m.pt", "a.mrc", "--outdir", "o", "--voxel-size", "-1"],
            "voxel_size must be > 0",
        ),
        (["denoise", "m.pt", "a.mrc", "--outdir", "o", "--tile", "8"], "tile must be >= 32"),
        (
            ["pick", "t.mrc", "o", "--diameter", "100", "--tomo-index", "-1"],
            "tomo_index must be >= 1",
        ),
        (["pick", "t.mrc", "o", "--diameter", "100", "--tomo-name", "../../x"], "cannot be used"),
        (
            ["pick", "t.mrc", "o", "--diameter", "100", "--top", "5", "--threshold", "1"],
            "only one of",
        ),
        (["wedge-train", "o", "--tomograms", "a", "--tilt-range", "-40", "60"], "min <= -45"),
    ],
)
def test_command_line_and_job_file_refuse_the_same_values(tmp_path, capsys, argv, message):
    """Every bad value is refused before any work, on the command line and in a job file."""
    os.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    # The same values through a job file (built from the command line's parse).
    from dual_engine.cli import build_parser

    parsed = vars(build_parser().parse_args(argv))
    values = {k: v for k, v in parsed.items() if k not in ("verb", "command", "job", "what")}
    assert main([argv[0], "--job", write_job(tmp_path, values)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unreadable_job_file(tmp_path, capsys):
    assert main(["phantom", "--job", str(tmp_path / "missing.json")]) == 2
    assert "cannot read job file" in capsys.readouterr().err


def test_model_info_reports_a_models_settings(tmp_path, capsys):
    import torch
    from dual_engine.model import DualConfig, MODEL_FORMAT

    cfg = DualConfig(voxel_size=12.0, subvolume_size=24)
    torch.save(
        {
            'format': MODEL_FORMAT,
            'engine_version': 'x',
            'config': cfg.to_dict(),
            'iteration': 42,
            'training': {'seconds': 1.0},
        },
        tmp_path / "model.pt",
    )
    assert (
        main(["model-info", str(tmp_path / "model.pt"), "--output", str(tmp_path / "i.json")]) == 0
    )
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["iteration"] == 42 and info["config"]["voxel_size"] == 12.0
    assert json.loads(capsys.readouterr().out)["config"]["subvolume_size"] == 24
    (tmp_path / "bad.pt").write_text("no")
    assert main(["model-info", str(tmp_path / "bad.pt")]) == 2
    torch.save({'format': MODEL_FORMAT, 'config': cfg.to_dict()}, tmp_path / "partial.pt")
    assert main(["model-info", str(tmp_path / "partial.pt")]) == 2
    assert "incomplete DUAL model file (missing iteration)" in capsys.readouterr().err


class _Payload:
    """Unpickling this runs os.system: what a booby-trapped model file does."""

    marker = None

    def __reduce__(self):
        return (os.system, ("touch %s" % self.marker,))


def test_a_booby_trapped_model_is_refused_without_running_its_payload(tmp_path, capsys):
    import torch
    from dual_engine.model import DualConfig, MODEL_FORMAT

    marker = tmp_path / "payload_ran"
    _Payload.marker = str(marker)
    torch.save(
        {
            'format': MODEL_FORMAT,
            'config': DualConfig().to_dict(),
            'iteration': 1,
            'extra': _Payload(),
        },
        tmp_path / "model.pt",
    )
    # The payload is real: what unpickling would call does create the marker.
    function, arguments = _Payload().__reduce__()
    function(*arguments)
    assert marker.exists()
    marker.unlink()
    for argv in (
        ["model-info", str(tmp_path / "model.pt")],
        [
            "denoise",
            str(tmp_path / "model.pt"),
            str(tmp_path / "x.mrc"),
            "--outdir",
            str(tmp_path / "out"),
        ],
    ):
        assert main(argv) == 2
        assert "refused without running it" in capsys.readouterr().err
        assert not marker.exists()
