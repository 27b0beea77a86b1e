"""`variational fit MODEL.py` end to end on the example model, and its one-line errors."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from variational.vi import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "eight_schools_model.py"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(argv):
    """Parse with the command's own parser (as the top-level CLI registers it) and run its handler."""
    parser = argparse.ArgumentParser(prog="variational")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_fit_json_end_to_end(capsys, tmp_path):
    picture = tmp_path / "marginals.png"
    assert _run(["fit", str(EXAMPLE), "--json", "--plot", str(picture)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fit"]["method"] == "deterministic" and record["fit"]["converged"]
    assert set(record["summary"]) == {f"theta_trans[{i}]" for i in range(8)} | {"mu", "tau"}
    # posteriordb reference (NUTS): E[mu] = 4.4, sd 3.3. Mean field gets the location within a third of an sd.
    assert abs(record["summary"]["mu"]["mean"] - 4.4) < 1.1
    assert record["summary"]["tau"]["5%"] > 0  # constrained scale
    assert record["elbo"] < 0 and 0 < record["khat"] < 1.5 and record["time_s"] > 0
    assert picture.stat().st_size > 10_000  # a real PNG with 11 panels, not an empty file


def test_fit_table_output(capsys):
    assert _run(["fit", str(EXAMPLE), "--family", "fullrank", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("family=fullrank", "mu ", "ELBO", "k-hat", "time"):
        assert needle in out


def test_missing_file_and_missing_model_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found: .*nope.py"):
        _run(["fit", str(tmp_path / "nope.py")])
    empty = tmp_path / "empty_model.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="must define `model = variational.vi.Model"):
        _run(["fit", str(empty)])
