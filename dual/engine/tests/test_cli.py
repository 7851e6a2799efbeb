"""Job files: a JSON object fills a command's options; the command line wins."""
import json

import pytest

from dual_engine.cli import build_parser, expand_job, main


def parse(argv):
    parser = build_parser()
    return parser.parse_args(expand_job(argv, parser))


def test_job_options_with_many_values_leave_positionals_alone(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"classes": ["ribosome", "dimer"], "seed": 3, "noise_free": True}))
    args = parse(["phantom", "--job", str(job), str(tmp_path / "out"), "--seed", "5"])
    assert args.outdir == str(tmp_path / "out")
    assert args.classes == ["ribosome", "dimer"] and args.noise_free
    assert args.seed == 5   # the command line wins over the job file


def test_job_can_hold_positionals_and_required_options(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"outdir": "o", "noisy": ["a.mrc"], "clean": ["b.mrc"],
                               "iterations": 7}))
    args = parse(["train", "--job", str(job)])
    assert (args.outdir, args.noisy, args.clean, args.iterations) == ("o", ["a.mrc"], ["b.mrc"], 7)


def test_unknown_job_key_is_a_clear_error(tmp_path, capsys):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"outdir": "o", "sede": 1}))
    assert main(["phantom", "--job", str(job)]) == 2
    assert "unknown keys in job file: sede" in capsys.readouterr().err


def test_unreadable_job_file(tmp_path, capsys):
    assert main(["phantom", "--job", str(tmp_path / "missing.json")]) == 2
    assert "cannot read job file" in capsys.readouterr().err


def test_model_info_reports_a_models_settings(tmp_path, capsys):
    import torch
    from dual_engine.model import DualConfig, MODEL_FORMAT
    cfg = DualConfig(voxel_size=12.0, subvolume_size=24)
    torch.save({'format': MODEL_FORMAT, 'engine_version': 'x', 'config': cfg.to_dict(),
                'iteration': 42, 'training': {'seconds': 1.0}}, tmp_path / "model.pt")
    assert main(["model-info", str(tmp_path / "model.pt"), "--output", str(tmp_path / "i.json")]) == 0
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["iteration"] == 42 and info["config"]["voxel_size"] == 12.0
    assert json.loads(capsys.readouterr().out)["config"]["subvolume_size"] == 24
    (tmp_path / "bad.pt").write_text("no")
    assert main(["model-info", str(tmp_path / "bad.pt")]) == 2
