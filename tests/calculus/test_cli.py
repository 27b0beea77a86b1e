"""`variational calculus ...` through the real entry point: outputs, JSON, pictures and error exits."""

import json

import pytest

from variational.cli import main


def run(capsys, *argv):
    code = main(["calculus", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_euler_lagrange_prints_equation_solved_form_and_beltrami(capsys):
    code, out, _ = run(capsys, "euler-lagrange", "sqrt(1 + y'^2)/sqrt(-2*g*y)")
    assert code == 0
    assert "y'' = (-y'**2 - 1)/(2*y)" in out  # the cycloid's equation
    assert "Beltrami first integral" in out


def test_euler_lagrange_json_with_constraint_and_several_variables(capsys):
    code, out, _ = run(capsys, "euler-lagrange", "y*sqrt(1+y'^2)", "--constraint", "sqrt(1+y'^2)=3", "--json")
    record = json.loads(out)
    assert code == 0 and "lambda_1" in record["lagrangian"]
    assert record["solved"] == {"Derivative(y(x), (x, 2))": "(Derivative(y(x), x)**2 + 1)/(lambda_1 + y(x))"}
    code, out, _ = run(capsys, "euler-lagrange", "u_x^2 + u_t^2", "--function", "u", "--variable", "x",
                       "--variable", "t")
    assert code == 0 and "u_tt" in out and "u_xx" in out


def test_solve_json_reports_reference_numbers(capsys):
    code, out, _ = run(capsys, "solve", "brachistochrone", "--json")
    record = json.loads(out)
    assert code == 0 and record["status"] == "minimum" and record["method"] == "bvp"
    assert abs(record["J"] - 1.003033) < 1e-6 and record["J_error"] < 1e-8  # pi / sqrt(9.81)
    assert abs(record["naive"]["J"] - 1.189043) < 1e-6  # the straight chute
    assert len(record["x"]) == len(record["y"][0])


def test_solve_text_with_plot(capsys, tmp_path):
    png = tmp_path / "shortest.png"
    code, out, _ = run(capsys, "solve", "shortest_path", "--param", "y1=2", "--plot", str(png))
    assert code == 0
    assert "exact J          2.23606797750" in out  # sqrt(5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 150_000


@pytest.mark.parametrize("argv, message", [
    (["solve", "catenoid", "--param", "h=0.7"], "Goldschmidt"),
    (["solve", "harmonic_oscillator", "--param", "T=4", "--method", "direct"], "saddle"),
    (["solve", "dido", "--param", "length"], "NAME=VALUE"),
    (["solve", "dido", "--param", "size=3"], "no parameter"),
    (["euler-lagrange", "x**2"], "none of the unknown functions"),
    (["euler-lagrange", "sqrt(1 + y'"], "cannot parse"),
    (["euler-lagrange", "y'^2", "--constraint", "y=abc+"], "--constraint 'y=abc+': VALUE: cannot parse 'abc+'"),
    (["euler-lagrange", "y'^2", "--constraint", "y=2*x"], "must be a constant"),
    (["euler-lagrange", "y'^2", "--variable", "y", "--function", "y"],
     "--function/--variable: ['y'] named both as an unknown function and as an independent variable"),
    (["solve", "brachistochrone", "--param", "x1=0.00001"], "x1/|y1| = 5e-06 (x1=1e-05, y1=-2) is below 0.01"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_list_shows_every_problem(capsys):
    code, out, _ = run(capsys, "list", "--json")
    names = json.loads(out)
    assert code == 0 and {"brachistochrone", "catenoid", "dido", "harmonic_oscillator"} <= set(names)
    assert names["brachistochrone"]["params"]["g"] == 9.81


def test_euler_lagrange_never_runs_the_text(capsys, tmp_path):
    marker = tmp_path / "pwned"
    for text in (f'__import__("os").system("touch {marker}") + y', f"y + __import__('os').system('touch {marker}')"):
        code, out, err = run(capsys, "euler-lagrange", text)
        assert code == 2 and out == "" and err.count("\n") == 1 and "names may not start with '_'" in err
        code, _, err = run(capsys, "euler-lagrange", "y'^2", "--constraint", f"y={text}")
        assert code == 2 and "--constraint" in err and err.count("\n") == 1
    assert not marker.exists()
