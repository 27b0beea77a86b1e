"""`variational vae ...` end to end on the embedded digits, and its errors."""

import json

import pytest

from variational.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, device):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        [
            "vae",
            "train",
            "--epochs",
            "1",
            "--hidden",
            "32",
            "--latent-dim",
            "2",
            "--out",
            str(out),
            "--binarize",
            "dynamic",
            "--no-progress",
            "--eval-iw",
            "50",
            "--device",
            device,
        ]
    )
    assert code == 0
    return out


def test_train_writes_run_and_evaluation(run_dir, device):
    from variational import vae
    from variational.vae.trainer import prepare_data

    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["hidden"] == [32] and saved["latent_dim"] == 2 and saved["epochs"] == 1
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    # The CLI's evaluation is the Python API's on the saved weights, same test set, seed and device:
    # identical numbers, not merely close.
    model = vae.load(run_dir, device=device)
    expected = vae.evaluate(model, prepare_data(model.config).x_test, iw_samples=50, seed=model.config.seed)
    assert evaluation == json.loads(json.dumps(expected.to_dict()))
    assert evaluation["iw_samples"] == 50 and evaluation["note"] is None  # binarised: bits/dim meaningful


def test_eval_json_reproduces_the_training_evaluation(run_dir, device, capsys):
    # Same model, test set, seed and device: the numbers must be identical, not merely close.
    capsys.readouterr()
    assert main(["vae", "eval", str(run_dir), "--iw-samples", "50", "--json", "--device", device]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert printed["log_px"] == saved["log_px"] and printed["elbo"] == saved["elbo"]
    assert printed["n_images"] == 297
    assert printed["log_px_bpd"] == pytest.approx(-printed["log_px"] / (784 * 0.6931471805599453))


@pytest.mark.parametrize("command", ["sample", "reconstruct", "latent"])
def test_picture_commands_write_pngs(run_dir, tmp_path, command):
    out = tmp_path / f"{command}.png"
    assert main(["vae", command, str(run_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_file_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[vae]\nlatent_dim = 3\nepochs = 1\nhidden = [16]\n")
    out = tmp_path / "run"
    assert main(["vae", "train", "--config", str(cfg), "--latent-dim", "2", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["latent_dim"], saved["hidden"], saved["epochs"]) == (2, [16], 1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hidden", "4x"], "--hidden takes comma-separated integers"),
        (["--device", "bogus"], "device 'bogus' is not a torch device"),
        (["--lr", "-1"], "lr must be positive"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--arch", "conv", "--hidden", "400"], "two channel counts"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["--likelihood", "gaussian", "--binarize", "static"], "binarize='static'"),
        (
            ["--hidden", "400,,3"],
            "--hidden takes comma-separated integers such as 512,256 (or '' for none); got '400,,3'",
        ),
        # 400 * 10^9 * 3 weights: refused before any allocation, with the memory it would take.
        (["--latent-dim", "1000000000"], "1,202,000,628,784 parameters, so training needs at least 17,911.2 GiB"),
        (["--seed", "-1"], "seed must be an integer in [0, "),
        (["--lr", "inf"], "lr must be a finite number"),
    ],
)
def test_bad_options_give_one_line_errors(tmp_path, capsys, argv, message):
    code = main(["vae", "train", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "a config file holds a table of field = value, not a list"),
        ('"hello"', "a config file holds a table of field = value, not a str"),
        ("{", "cannot parse config"),
    ],
)
def test_a_config_file_that_is_not_a_table_is_named(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.json"
    cfg.write_text(text)
    assert main(["vae", "train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: {message}" in err and err.count("\n") == 1, err


def test_an_unusable_out_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["vae", "train", "--epochs", "1", "--out", str(tmp_path / "file" / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot create the run directory {tmp_path / 'file' / 'run'}" in err and err.count("\n") == 1, err


def test_sample_checks_every_output_before_writing_any(run_dir, tmp_path, capsys):
    png, npy = tmp_path / "s.png", tmp_path / "missing" / "s.npy"
    assert main(["vae", "sample", str(run_dir), "--out", str(png), "--npy", str(npy)]) == 2
    assert f"--npy {npy}: the folder {npy.parent} does not exist" in capsys.readouterr().err
    assert not png.exists()


def test_a_device_this_machine_lacks_is_not_blamed_on_the_checkpoint(run_dir, capsys):
    assert main(["vae", "train", "--resume", "--out", str(run_dir), "--device", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "device 'bogus' is not a torch device" in err and "stored config" not in err, err


def test_the_reference_preset_and_its_alias():
    from variational.vae import PRESETS, VAEConfig

    ref = VAEConfig(preset="reference")
    assert (ref.arch, ref.hidden, ref.latent_dim, ref.lr, ref.batch_size) == ("mlp", [400], 20, 1e-3, 128)
    assert VAEConfig.from_dict({"preset": "seed"}) == VAEConfig.from_dict({"preset": "reference"})
    assert VAEConfig(preset="seed").preset == "reference" and "seed" not in PRESETS


def test_unknown_config_field_is_named(tmp_path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"latent": 3}')
    assert main(["vae", "train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "unknown config field(s): latent" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "sample", "reconstruct", "latent"])
def test_every_command_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main(["vae", command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_resume_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["vae", "train", "--resume", "--out", str(run_dir), "--lr", "0.5"]) == 2
    assert "only --epochs and --device may change (got --lr)" in capsys.readouterr().err
    assert main(["vae", "train", "--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "cannot resume: no checkpoint.safetensors" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    assert main(["vae", "train", "--resume", "--out", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.safetensors" in err and "Traceback" not in err, err


def test_eval_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["vae", "eval", str(tmp_path), "--iw-samples", "0"]) == 2
    assert "model.safetensors: file not found" in capsys.readouterr().err
