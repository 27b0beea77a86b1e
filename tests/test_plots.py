"""The one plotting module and the front ends' pictures: sizes, contents, pyplot left alone, atomic writes."""

import ast
import math
import struct
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from torch.distributions import Normal, constraints

from variational import plots, vi
from variational.calculus import get_problem
from variational.calculus.extremal import Extremal
from variational.calculus.plot import extremal_figure, plot_extremal
from variational.errors import ConfigError, DataError, OutputError
from variational.vae import pictures
from variational.vae.config import VAEConfig
from variational.vae.model import VAE
from variational.vi.plot import marginals_figure, save_marginals

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_MAGIC
    return struct.unpack(">II", head[16:24])


@pytest.fixture(autouse=True)
def notebook_pyplot():
    """A user's pyplot session on another backend than Agg; every test checks it is left as it was."""
    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    assert plt.get_fignums() == []
    yield
    try:
        assert plt.get_fignums() == [], "a plotting function registered a figure with pyplot"
        assert matplotlib.get_backend() == "svg", "a plotting function switched pyplot's backend"
    finally:
        plt.close("all")
        plt.switch_backend(before)


# ---------------------------------------------------------------- the plotting module


def test_a_notebook_users_open_figure_stays_current(tmp_path):
    # (The autouse fixture checks the backend and pyplot's figure list around every test.)
    mine = plt.figure()
    plt.plot([0, 1], [1, 0])
    plots.image_grid(np.zeros((4, 8, 8)), path=tmp_path / "a.png")
    plots.line_plot({"a": ([0, 1], [0, 1])}, "x", "y", path=tmp_path / "b.png")
    plots.marginal_histograms({"m": np.arange(5.0)}, "q", "t", path=tmp_path / "c.png")
    assert plt.get_fignums() == [mine.number] and plt.gcf() is mine and len(plt.gca().lines) == 1
    plt.close(mine)


def test_tile_images_places_each_image_with_white_padding():
    images = np.stack([np.full((2, 2), 0.25), np.full((2, 2), 0.75), np.full((2, 2), 2.0)])
    grid = plots.tile_images(images, ncols=2, pad=1)
    w = 1.0  # the padding, and the empty fourth cell, are white; 2.0 is clipped to white
    a, b = 0.25, 0.75
    expected = np.array(
        [
            [w, w, w, w, w, w, w],
            [w, a, a, w, b, b, w],
            [w, a, a, w, b, b, w],
            [w, w, w, w, w, w, w],
            [w, 1, 1, w, w, w, w],
            [w, 1, 1, w, w, w, w],
            [w, w, w, w, w, w, w],
        ]
    )
    assert np.array_equal(grid, expected)


def test_image_grid_writes_png_of_its_size(tmp_path):
    # 64 images of 28 x 28 in 8 columns with 1-pixel padding: 8 * 29 + 1 = 233 grid pixels a side;
    # at 0.5 inch per 10 grid pixels that is 11.65 inches, plus 0.4 inch for the title's line; 100 dpi.
    fig = plots.image_grid(np.zeros((64, 28, 28)), ncols=8, title="blank", path=tmp_path / "grid.png")
    assert isinstance(fig, Figure)
    assert png_size(tmp_path / "grid.png") == (1165, 1205)
    assert fig.axes[0].get_title() == "blank"
    # The grid fills the figure below the 0.4-inch title band, edge to edge.
    assert fig.axes[0].get_position().bounds == pytest.approx((0, 0, 1, 11.65 / 12.05), abs=1e-12)  # float rounding
    # Two images 9 x 11 (no empty columns): a 11 x 25 pixel grid, stretched to the 2-inch minimum width.
    assert plots.save_image_grid(tmp_path / "few.png", np.zeros((2, 9, 11)), ncols=8) == tmp_path / "few.png"
    assert png_size(tmp_path / "few.png") == (200, 88)


def test_line_plot_and_scatter_plot_write_pngs_of_their_size(tmp_path):
    series = {"train": ([1, 2, 3], [3.0, 2.0, 1.5]), "test": ([1, 2, 3], [3.2, 2.4, 2.1])}
    fig = plots.line_plot(series, "epoch", "nats", title="curves", path=tmp_path / "curves.png")
    assert isinstance(fig, Figure) and png_size(tmp_path / "curves.png") == (550, 360)  # 5.5 x 3.6 in at 100 dpi
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train", "test"]
    assert np.array_equal(fig.axes[0].lines[1].get_ydata(), [3.2, 2.4, 2.1])

    points = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    fig = plots.scatter_plot(points, np.array([0, 3, 9]), "PC 1", "PC 2", path=tmp_path / "scatter.png")
    assert isinstance(fig, Figure) and png_size(tmp_path / "scatter.png") == (550, 480)  # 5.5 x 4.8 in
    assert np.array_equal(fig.axes[0].collections[0].get_offsets(), points)
    assert len(fig.axes) == 2  # the points' axes and the label colour bar


def test_curve_comparison_with_and_without_error_panel(tmp_path):
    x = np.linspace(0, 1, 5)
    solution = plots.Line(x, x[None] ** 2, "numeric")
    fig = plots.curve_comparison(
        solution,
        "x",
        ["y"],
        "t",
        exact=plots.Line(x, x[None] ** 2, "exact"),
        error=(x, np.array([0.0, 1e-3, 2e-3, 1e-3, 0.0]), "error"),
        path=tmp_path / "with.png",
        dpi=90,
    )
    assert isinstance(fig, Figure) and png_size(tmp_path / "with.png") == (855, 342)  # 9.5 x 3.8 in at 90 dpi
    # Exact zeros are drawn at the floor of the log scale, the rest as given.
    assert np.array_equal(fig.axes[1].lines[0].get_ydata(), [1e-17, 1e-3, 2e-3, 1e-3, 1e-17])
    fig = plots.curve_comparison(solution, "x", ["y"], "t", path=tmp_path / "without.png")
    assert len(fig.axes) == 1 and png_size(tmp_path / "without.png") == (550, 380)  # 5.5 x 3.8 in at 100 dpi


def test_marginal_histograms_grid_reference_trace_and_non_finite_draws(tmp_path):
    rng = np.random.default_rng(0)
    columns = {f"theta[{i}]": rng.normal(size=500) for i in range(5)}
    columns["theta[4]"][:3] = [np.inf, np.nan, -np.inf]
    reference = {"theta[0]": rng.normal(size=800)}
    fig = plots.marginal_histograms(
        columns,
        "q",
        "five marginals",
        reference=reference,
        trace=([-50.0, -10.0, -5.0], "objective"),
        path=tmp_path / "m.png",
    )
    # 5 panels and the trace in rows of 4: 2 rows of 3.0 x 2.3 inch panels, at 100 dpi.
    assert isinstance(fig, Figure) and png_size(tmp_path / "m.png") == (1200, 460)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:6] == [
        "theta[0]",
        "theta[1]",
        "theta[2]",
        "theta[3]",
        "theta[4] (3 non-finite not shown)",
        "objective",
    ]
    assert not fig.axes[6].axison and not fig.axes[7].axison  # the two unused cells are blank
    # Densities: each histogram integrates to 1 over its bins, the reference outline too.
    q_bars = fig.axes[0].patches[:40]
    assert math.isclose(sum(b.get_height() * b.get_width() for b in q_bars), 1.0, rel_tol=1e-9)  # float sums
    # The legend sits in the first spare cell, clear of the bars.
    assert fig.axes[0].get_legend() is None
    assert [t.get_text() for t in fig.axes[6].get_legend().get_texts()] == ["q", "reference"]
    assert fig.get_suptitle() == "five marginals"


def test_at_most_max_panels_histograms(tmp_path):
    columns = {f"b[{i}]": np.arange(10.0) for i in range(plots.MAX_PANELS + 6)}
    fig = plots.marginal_histograms(columns, "q", "many")
    assert sum(ax.axison for ax in fig.axes) == plots.MAX_PANELS
    assert fig.get_suptitle() == f"many (the first {plots.MAX_PANELS} of {plots.MAX_PANELS + 6} elements)"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["q"]  # no spare cell: in the first


def test_a_write_failing_midway_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    import errno

    from PIL import Image

    def disk_full(image, fp, filename, *args):  # PIL's PNG writer, cut off after a few bytes
        fp.write(PNG_MAGIC)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(Image.SAVE, "PNG", disk_full)
    target = tmp_path / "picture.png"
    target.write_bytes(b"the previous picture")
    fig = plots.line_plot({"a": ([0, 1], [0, 1])}, "x", "y")
    with pytest.raises(OutputError, match=r"cannot write .*picture.png: No space left on device"):
        plots.save(fig, target)
    assert target.read_bytes() == b"the previous picture"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind


def test_a_drawing_failing_midway_leaves_the_old_file_and_no_partial_one(tmp_path):
    class BrokenOnRender(Artist):
        """Fine while the layout is measured (the first draw), raises while the file is written."""

        draws = 0

        def draw(self, renderer):
            self.draws += 1
            if self.draws > 1:
                raise RuntimeError("drawing failed")

    # A PDF is written as it is drawn, so the failure comes after its first bytes.
    target = tmp_path / "picture.pdf"
    target.write_bytes(b"the previous picture")
    fig = plots.line_plot({"a": ([0, 1], [0, 1])}, "x", "y")
    fig.add_artist(BrokenOnRender())
    with pytest.raises(RuntimeError, match="drawing failed"):
        plots.save(fig, target)
    assert target.read_bytes() == b"the previous picture"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_format_follows_the_suffix_and_a_bad_one_is_named(tmp_path):
    fig = plots.line_plot({"a": ([0, 1], [0, 1])}, "x", "y")
    assert plots.save(fig, tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    assert plots.save(fig, tmp_path / "p.PDF").read_bytes()[:5] == b"%PDF-"
    assert png_size(plots.save(fig, tmp_path / "no_suffix")) == (550, 360)
    with pytest.raises(ConfigError, match=r"unknown format 'xyz'.*png"):
        plots.save(fig, tmp_path / "p.xyz")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputError, match="cannot write .*a_file/p.png"):
        plots.save(fig, tmp_path / "a_file" / "p.png")


def test_bad_arrays_are_data_errors():
    with pytest.raises(DataError, match=r"non-empty \(N, H, W\) array, got shape \(0, 8, 8\)"):
        plots.image_grid(np.zeros((0, 8, 8)))
    with pytest.raises(DataError, match=r"\(N, 2\) array of points, got shape \(4, 3\)"):
        plots.scatter_plot(np.zeros((4, 3)), None, "a", "b")
    with pytest.raises(DataError, match="at least one named sample"):
        plots.marginal_histograms({}, "q", "none")
    images = np.zeros((2, 3, 3))
    images[1, 0, :2] = [np.nan, np.inf]
    with pytest.raises(DataError, match=r"2 of 18 image pixels are not finite"):
        plots.image_grid(images)
    with pytest.raises(DataError, match=r"1 of 4 points are not finite"):
        plots.scatter_plot(np.array([[0.0, 1.0], [np.nan, 2.0]]), None, "a", "b")


def test_the_command_line_names_a_bad_picture_path_in_one_line(tmp_path, capsys):
    from variational.cli import main

    assert main(["calculus", "solve", "shortest_path", "--plot", str(tmp_path / "line.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    # The calculus CLI checks the suffix before it solves, so nothing is computed for a bad path.
    assert err.startswith("variational: error: --plot: ") and "line.xyz' needs a picture suffix, one of" in err
    assert "\n" not in err and list(tmp_path.iterdir()) == []


def test_the_plotting_module_imports_no_front_end():
    # Imports point down: the front ends import plots, never the reverse.
    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m.split(".")[0] == "variational"}
    assert ours <= {"variational.errors", "variational.io"}, ours
    assert not any(m.startswith("matplotlib.pyplot") for m in imported)


# ---------------------------------------------------------------- the front ends' pictures


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=2, hidden=[8]), image_shape=(28, 28))


def test_vae_save_all_returns_what_it_wrote(tiny_vae, tmp_path):
    x = torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(0))
    metrics = [
        {"epoch": 1, "train_loss": 300.0, "test_elbo": -310.0},
        {"epoch": 2, "train_loss": 250.0, "test_elbo": -260.0},
    ]
    tiny_vae.train()
    paths = pictures.save_all(tiny_vae, x, torch.tensor([0, 1, 2, 3, 4]), metrics, tmp_path)
    names = ["samples.png", "reconstructions.png", "latent.png", "interpolation.png", "curves.png"]
    assert paths == [tmp_path / n for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert tiny_vae.training  # the model's mode is restored
    # samples: 64 images in 8 columns as in test_image_grid_writes_png_of_its_size.
    assert png_size(tmp_path / "samples.png") == (1165, 1205)
    # 5 inputs over their 5 reconstructions: 2 rows of 5, 5 * 29 + 1 = 146 by 2 * 29 + 1 = 59 grid pixels.
    assert png_size(tmp_path / "reconstructions.png") == (730, 335)
    # 2 pairs of images, 10 steps each: 291 by 59 grid pixels.
    assert png_size(tmp_path / "interpolation.png") == (1455, 335)
    # A 2-D latent space: the decoded 15 x 15 manifold, 436 grid pixels a side.
    assert png_size(tmp_path / "latent.png") == (2180, 2220)
    assert png_size(tmp_path / "curves.png") == (550, 360)


def test_vae_save_all_skips_what_one_test_image_cannot_show(tiny_vae, tmp_path):
    paths = pictures.save_all(tiny_vae, torch.rand(1, 28, 28), None, [], tmp_path)
    assert [p.name for p in paths] == ["samples.png", "reconstructions.png", "latent.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent.png", "reconstructions.png", "samples.png"]
    with pytest.raises(DataError, match="at least 2 test images, got 1"):
        pictures.save_interpolation(tiny_vae, torch.rand(1, 28, 28), tmp_path / "i.png")


def test_vae_latent_map_above_two_dimensions_is_a_pca_scatter(tmp_path):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, hidden=[8]), image_shape=(28, 28)).eval()
    x = torch.rand(10, 28, 28, generator=torch.Generator().manual_seed(0))
    assert pictures.save_latent(model, x, torch.arange(10), tmp_path / "latent.png") == tmp_path / "latent.png"
    assert png_size(tmp_path / "latent.png") == (550, 480)  # 5.5 x 4.8 inches at 100 dpi
    with pytest.raises(DataError, match="3-D latent means needs at least 2 test images, got 1"):
        pictures.save_latent(model, x[:1], None, tmp_path / "one.png")


def test_vi_marginals_of_a_fitted_posterior(tmp_path):
    y = torch.tensor([2.1, 1.7, 2.6, 1.9])
    model = vi.Model(
        lambda p: (
            Normal(0, 10).log_prob(p["mu"]) + Normal(p["mu"], 1).log_prob(y).sum() + Normal(0, 1).log_prob(p["b"]).sum()
        ),
        {"mu": constraints.real, "b": (constraints.real, (2,))},
        name="toy",
    )
    post = vi.fit(model, family="meanfield", seed=0)
    ref = {
        "mu": torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 0.5 + 2.0,
        "b": torch.randn(1000, 2, generator=torch.Generator().manual_seed(2)),
    }
    assert save_marginals(post, tmp_path / "m.png", n=500, reference=ref) == tmp_path / "m.png"
    # mu, b[0], b[1] and the trace in one row of 4 panels of 3.0 x 2.3 inches, at 100 dpi.
    assert png_size(tmp_path / "m.png") == (1200, 230)
    fig = marginals_figure(post, n=500, reference=ref)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["mu", "b[0]", "b[1]"]
    assert fig.axes[3].get_title() == f"objective per evaluation ({post.info.method})"
    assert fig.get_suptitle() == f"toy: ELBO {post.elbo:.2f}, k-hat {post.khat:.2f}"
    # q's mu draws are what the panel shows: binning moves each draw by at most half a bin width, so the
    # histogram's mean is within half a bin (0.05 here, against a posterior mean of 2.1) of theirs.
    bars = fig.axes[0].patches[:40]
    centre = sum((b.get_x() + b.get_width() / 2) * b.get_height() * b.get_width() for b in bars)
    draws = post.sample(500)["mu"].numpy()
    assert abs(centre - draws.mean()) <= bars[0].get_width() / 2


def test_calculus_extremal_picture_shows_the_pointwise_error(tmp_path):
    problem = get_problem("shortest_path")  # the straight line from (0, 0) to (1, 1)
    x = np.linspace(0.0, 1.0, 11)
    bump = 1e-3 * np.sin(np.pi * x)
    ext = Extremal(
        x=x,
        y=(x + bump)[None],
        J=math.sqrt(2) + 1e-6,
        status="minimum",
        method="bvp",
        functions=("y",),
        max_error=float(bump.max()),
    )
    assert plot_extremal(ext, problem, tmp_path / "e.png") == tmp_path / "e.png"
    assert png_size(tmp_path / "e.png") == (855, 342)  # 9.5 x 3.8 inches at the default 90 dpi
    fig = extremal_figure(ext, problem)
    err_ax = fig.axes[1]
    # The inner points' |numeric - exact| (the ends are imposed, so left out); 1e-15: rounding of x + bump - x.
    assert np.allclose(err_ax.lines[0].get_ydata(), bump[1:-1], rtol=0, atol=1e-15)
    assert err_ax.get_title() == "|numeric - exact|, max 0.001"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "bvp extremal, J = 1.41421" and labels[1] == "exact, J = 1.41421"
    assert labels[2].startswith("sine-bumped path, J = ")


def test_the_docs_pictures_script_makes_the_vi_and_calculus_pictures(tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "docs" / "make_pictures.py"
    spec = importlib.util.spec_from_file_location("make_pictures", script)
    make_pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_pictures)
    assert make_pictures.main(["--out", str(tmp_path), "--only", "vi", "calculus"]) == 0
    # Eight schools: 10 marginals and the trace in 3 rows of 4 panels of 3.0 x 2.3 inches, at 100 dpi;
    # the brachistochrone with its error panel, 9.5 x 3.8 inches at 90 dpi.
    assert png_size(tmp_path / "vi_marginals.png") == (1200, 690)
    assert png_size(tmp_path / "calculus_brachistochrone.png") == (855, 342)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calculus_brachistochrone.png", "vi_marginals.png"]
    assert capsys.readouterr().out.count("wrote ") == 2
