"""`variational diffusion train|eval|sample`: help, a tiny run end to end, and one-line errors."""

import json

import pytest

from variational.cli import main
from variational.diffusion import choices, unet

TINY = ["--channels", "8", "--timesteps", "10", "--epochs", "1", "--batch-size", "256", "--no-progress"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["train", "eval", "sample"])
def test_help_shows_examples(capsys, command):
    with pytest.raises(SystemExit) as e:
        main(["diffusion", command, "--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["diffusion", "train", *TINY, "--out", str(out)]) == 0
    return out


def test_train_eval_sample_end_to_end(run_dir, capsys, tmp_path):
    code, out, _ = _run(capsys, "diffusion", "eval", str(run_dir), "--t-samples", "2", "--limit", "20", "--json")
    result = json.loads(out)
    assert code == 0 and result["images"] == 20 and result["t_samples"] == 2 and result["estimator"] == "sampled"
    # 8x8 images: bits/dim = nats / (64 ln 2), exactly.
    assert result["bits_per_dim"] == pytest.approx(result["nats"] / (64 * 0.6931471805599453), rel=1e-12)
    code, out, _ = _run(capsys, "diffusion", "eval", str(run_dir), "--full", "--limit", "5")
    assert code == 0 and "all T terms" in out and "5 images" in out
    png, npz = tmp_path / "s.png", tmp_path / "s.npz"
    code, out, _ = _run(
        capsys,
        "diffusion",
        "sample",
        str(run_dir),
        "-n",
        "4",
        "--steps",
        "5",
        "--sampler",
        "ddim",
        "--out",
        str(png),
        "--npz",
        str(npz),
    )
    assert code == 0 and png.stat().st_size > 0 and str(png) in out
    import numpy as np

    images = np.load(npz)["images"]
    assert images.shape == (4, 8, 8) and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--timesteps", "0"], "timesteps must be an integer >= 1"),
        (["train", "--ema", "1.5"], "ema"),
        (["train", "--objective", "hybrid", "--variance", "small"], "hybrid"),
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, argv, message, tmp_path):
    code, _, err = _run(
        capsys,
        "diffusion",
        *argv,
        "--out" if "--resume" not in argv else "--no-progress",
        *([str(tmp_path / "r")] if "--resume" not in argv else []),
    )
    assert (
        code == 2 and err.startswith("variational: error: ") and message in err and len(err.strip().splitlines()) == 1
    )


def test_bad_files_and_requests_are_one_line_errors(capsys, run_dir, tmp_path):
    (tmp_path / "c.toml").write_text("[diffusion]\ntimesteps = 10\nwarp = 3\n")
    code, _, err = _run(
        capsys, "diffusion", "train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")
    )
    assert code == 2 and "unknown config field(s): warp" in err
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    for argv, message in [
        (["eval", str(tmp_path / "bad.safetensors")], "not a readable safetensors file"),
        (["eval", str(tmp_path / "missing")], "file not found"),
        (["sample", str(run_dir), "--steps", "11"], "steps must be an integer from 1 to the model's 10"),
        (["sample", str(run_dir), "--eta", "0.5"], "--eta applies to --sampler ddim only"),
        (["eval", str(run_dir), "--importance"], "--importance needs a run trained with --objective vlb"),
        (["train", "--resume", "--out", str(tmp_path / "none")], "cannot resume"),
        (["train", "--out", str(run_dir)], "already holds a run"),
    ]:
        code, _, err = _run(capsys, "diffusion", *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_preset_names_match_the_unet_presets():
    assert tuple(unet.PRESETS) == choices.PRESETS
