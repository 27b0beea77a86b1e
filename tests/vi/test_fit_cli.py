"""`variational fit MODEL.py` end to end on the example model, and its one-line errors."""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import norm

from variational.errors import ConfigError
from variational.errors import ModelError as UserError
from variational.vi import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "eight_schools_model.py"
SRC = Path(__file__).resolve().parents[2] / "src"


def _run(argv):
    """Parse with the command's own parser (as the top-level CLI registers it) and run its handler."""
    parser = argparse.ArgumentParser(prog="variational")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def _api_record(**options):
    """What the Python API gives for the example at the CLI's defaults: the record --json must print."""
    from variational.vi.fitting import fit

    post = fit(cli.load_model(EXAMPLE), **options)
    return post, post.to_dict()


def test_fit_json_is_the_python_api_fit_at_the_same_seed(capsys, tmp_path):
    picture = tmp_path / "marginals.png"
    assert _run(["fit", str(EXAMPLE), "--json", "--seed", "3", "--plot", str(picture)]) == 0
    record = json.loads(capsys.readouterr().out)
    _, expected = _api_record(seed=3)
    # Same model, seed and options: the same numbers, exactly (JSON round-trips floats). Only the
    # timings differ; the command's covers the fit and the ELBO and k-hat evaluation after it.
    fit_time, total_time = record["fit"].pop("time_s"), record.pop("time_s")
    expected["fit"].pop("time_s")
    assert record.pop("mc_tol") == 0.01 and record.pop("plot") == str(picture)
    # The error estimate goes through LAPACK's least squares, whose last bits can depend on memory
    # alignment (seen: 1e-17 apart); every other number is the same float.
    assert record["fit"].pop("mc_error") == pytest.approx(expected["fit"].pop("mc_error"), rel=1e-12)
    assert record == expected
    assert 0 < fit_time <= total_time
    assert set(record["summary"]) == {f"theta_trans[{i}]" for i in range(8)} | {"mu", "tau"}
    # posteriordb reference (NUTS): E[mu] = 4.4, sd 3.3. Mean field gets the location within a third of an sd.
    assert abs(record["summary"]["mu"]["mean"] - 4.4) < 1.1
    assert picture.stat().st_size > 10_000  # a real PNG with 11 panels, not an empty file


def test_fit_table_shows_the_python_api_numbers(capsys):
    assert _run(["fit", str(EXAMPLE), "--family", "fullrank", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    post, expected = _api_record(family="fullrank", seed=1)
    info = expected["fit"]
    assert lines[0] == f"{post.model.name}: family=fullrank method=deterministic (converged: {info['message']})"
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[2:12]}
    assert lines[1].split() == ["mean", "sd", "5%", "50%", "95%"]
    for name, row in expected["summary"].items():  # printed to 3 decimals
        assert rows[name] == pytest.approx(list(row.values()), abs=5e-4), name
    assert lines[13] == f"MC err {info['mc_error']:.3f} of q's sd on the means ({info['draws']} fixed draws" + (
        f" and {info['correction_draws']} fresh ones to reduce it)" if info["correction_draws"] else ")"
    ) + ("; more --draws would lower it" if info["mc_error"] > 0.01 else "")
    assert lines[12] == f"ELBO   {expected['elbo']:.3f} +/- {expected['elbo_se']:.3f}"
    k = expected["khat"]
    verdict = "ok" if k <= 0.5 else "usable with care" if k <= 0.7 else "NOT TRUSTWORTHY: q is a poor fit (> 0.7)"
    assert lines[14] == f"k-hat  {k:.2f}  {verdict}"
    assert lines[15].startswith("time   ") and lines[15].endswith(
        f" s  ({info['objective_evals']} objective evaluations, {info['grad_evals']} log-density gradients)"
    )


def test_mc_tol_zero_estimates_without_correcting(capsys):
    assert _run(["fit", str(EXAMPLE), "--seed", "1", "--mc-tol", "0", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["fit"]
    assert fit["correction_draws"] == 0 and 0 < fit["mc_error"] < 1
    assert _run(["fit", str(EXAMPLE), "--seed", "1", "--mc-tol", "0"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("MC err"))
    assert "fresh" not in line and "more --draws" not in line


def test_missing_file_and_missing_model_are_named(tmp_path):
    with pytest.raises(UserError, match="model file not found: .*nope.py"):
        _run(["fit", str(tmp_path / "nope.py")])
    empty = tmp_path / "empty_model.py"
    empty.write_text("x = 1\n")
    with pytest.raises(UserError, match="must define `model = variational.vi.Model"):
        _run(["fit", str(empty)])


@pytest.mark.parametrize(
    "argv, error, message",
    [
        # a file that is not .py: importlib has no loader for it (it was an AttributeError)
        (["model.txt"], UserError, r"model\.txt: a model file must be a Python file ending in \.py, got '\.txt'"),
        # a vector init of the wrong length (it was a RuntimeError from expand)
        (
            [str(EXAMPLE), "--init", "theta_trans=1,2"],
            UserError,
            r"^init for parameter 'theta_trans' has shape \(2,\), but 'theta_trans' has shape \(8,\): give one value or 8$",
        ),
        # outside the support (the message used to blame theta_trans)
        (
            [str(EXAMPLE), "--init", "tau=-1"],
            UserError,
            r"^init tau=-1 is outside the support of 'tau' \(constraint GreaterThan",
        ),
        # 0 used to mean the default 64
        ([str(EXAMPLE), "--draws", "0"], ConfigError, r"^draws must be >= 1 or None, got 0$"),
        ([str(EXAMPLE), "--mc-tol", "-1"], ConfigError, r"^--mc-tol must be >= 0, got -1\.0$"),
        ([str(EXAMPLE), "--init", "a"], ConfigError, r"^--init 'a': expected NAME=VALUE"),
    ],
)
def test_bad_input_is_one_error_line_naming_the_cause(tmp_path, argv, error, message):
    if argv == ["model.txt"]:
        (tmp_path / "model.txt").write_text(EXAMPLE.read_text())
        argv = [str(tmp_path / "model.txt")]
    with pytest.raises(error, match=message) as err:
        _run(["fit", *argv])
    assert "\n" not in str(err.value)


def test_a_model_file_that_exits_is_an_error_not_an_exit_status(tmp_path):
    path = _model_file(tmp_path, "exits.py", "import sys\nsys.exit(7)\n")
    # Through the top-level CLI: one line on stderr and status 2, not a silent exit with status 7.
    result = subprocess.run(
        [sys.executable, "-m", "variational", "fit", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr == f"variational: error: {path}: the model file called sys.exit(7) while it was loaded; "
        "it must define `model` and return\n"
    )


def test_help_says_the_model_file_is_executed():
    help_text = subprocess.run(
        [sys.executable, "-m", "variational", "fit", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
    ).stdout
    assert "MODEL.py is executed as Python code" in help_text and "do not run a file you do not trust" in help_text


def _model_file(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(
        "import math\nimport torch\nfrom torch.distributions import Normal, constraints\n"
        "from variational import vi\n" + body
    )
    return path


def test_non_finite_results_give_strict_json_and_no_ok(capsys, tmp_path):
    # A normal truncated at 2 without a constraint saying so: draws from q beyond 2 have log density -inf.
    path = _model_file(
        tmp_path,
        "trunc.py",
        "model = vi.Model(lambda p: Normal(0.0, 1.0).log_prob(p['a'])"
        " + torch.where(p['a'] > 2.0, -math.inf, 0.0), {'a': constraints.real})\n",
    )
    assert _run(["fit", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert record["elbo"] is None and record["khat_ok"] is False
    # The share of q's 2000 draws beyond 2, against q's own tail mass (Gaussian q; 4 binomial sds).
    a = record["summary"]["a"]
    tail = norm.sf(2.0, a["mean"], a["sd"])
    assert 0 < tail and abs(record["non_finite_share"] - tail) < 4 * math.sqrt(tail * (1 - tail) / 2000) + 0.002
    assert _run(["fit", str(path)]) == 0
    text = capsys.readouterr().out
    assert "NOT TRUSTWORTHY: the log density is -inf at" in text and " ok" not in text


@pytest.mark.parametrize(
    "body, where",
    [
        ("x = (\n", r"broken\.py:5: SyntaxError: '\(' was never closed"),
        ("import no_such_module_here\n", r"broken\.py:5: ModuleNotFoundError: No module named 'no_such_module_here'"),
        (
            "model = vi.Model(lambda p: p['a'], {'a': 'real'})\n",
            r"broken\.py:5: ModelError: parameter 'a': 'real' is not",
        ),
    ],
)
def test_broken_model_file_is_one_line_naming_the_line(tmp_path, body, where):
    path = _model_file(tmp_path, "broken.py", body)
    with pytest.raises(UserError, match=where) as err:
        _run(["fit", str(path)])
    assert "\n" not in str(err.value)


def test_init_objective_and_estimator_options(capsys, tmp_path):
    # log(a - 2) is NaN at the default start a = 1: the error advises --init, which then works.
    path = _model_file(
        tmp_path,
        "shifted.py",
        "model = vi.Model(lambda p: torch.log(p['a'] - 2.0) - p['a'], {'a': constraints.positive})\n",
    )
    with pytest.raises(ValueError, match="check parameter 'a'.*--init NAME=VALUE"):
        _run(["fit", str(path)])
    assert _run(["fit", str(path), "--init", "a=3", "--json"]) == 0
    # p(a) = (a - 2) e^-a on a > 2 is 2 + Gamma(2, 1); q is log-normal on a, so only roughly: mean 4 +- 0.3.
    assert json.loads(capsys.readouterr().out)["summary"]["a"]["mean"] == pytest.approx(4.0, abs=0.3)
    with pytest.raises(ValueError, match="--init 'a': expected NAME=VALUE"):
        _run(["fit", str(path), "--init", "a"])
    with pytest.raises(ValueError, match="objective='iw' needs method='stochastic'"):
        _run(["fit", str(path), "--init", "a=3", "--objective", "iw", "--method", "deterministic"])
    with pytest.raises(ValueError, match="estimator='stl' is biased"):
        _run(["fit", str(path), "--init", "a=3", "--objective", "iw", "--estimator", "stl"])
    normal = _model_file(
        tmp_path,
        "normal.py",
        "model = vi.Model(lambda p: Normal(1.0, 2.0).log_prob(p['x']), {'x': constraints.real})\n",
    )
    assert _run(["fit", str(normal), "--objective", "iw", "--k", "4", "--estimator", "reparam", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fit"]["method"] == "stochastic" and record["fit"]["converged"]
    # q = N(1, 2^2) is the exact posterior; Adam noise: mean within 0.2 and sd within 15% (5000 summary draws add ~3%).
    assert record["summary"]["x"]["mean"] == pytest.approx(1.0, abs=0.2)
    assert record["summary"]["x"]["sd"] == pytest.approx(2.0, rel=0.15)


def test_help_imports_neither_torch_nor_scipy():
    code = (
        "import sys, variational.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'scipy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
