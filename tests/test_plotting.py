"""Figures a reader can trust: titles say how many seeds / examples, "± σ" only with > 1 seed,
histograms are densities, compared rows share a colour scale, every axis is labelled.
Checked on the matplotlib objects (titles, labels, drawn values), not on pixels."""

import numpy as np
import pytest

from uqmix import attack_eval, plotting


def _stats(means, n):
    return {"x": [1.0, 2.0, 3.0], "mean": means, "std": [0.01, 0.02, 0.03], "n": n}


@pytest.mark.parametrize(
    "seeds, examples, expected",
    [
        ([3, 3], None, "mean ± 3σ over 3 seeds"),
        ([1, 3], 10000, "mean ± 3σ over 1–3 seeds, 10,000 examples"),
        ([1, 1], [500], "1 seed, 500 examples"),
        ([1], [100, 200], "1 seed, 100–200 examples"),
        ([0], None, "no seeds"),
    ],
)
def test_averaging_text(seeds, examples, expected):
    assert plotting.averaging_text(seeds, 3.0, examples) == expected


def test_errorbar_title_says_seeds_and_examples_and_sigma_only_with_several_seeds():
    several = plotting.errorbar_panels(
        {"p": {"ML": _stats([0.9, 0.8, 0.7], [3, 3, 2])}},
        "λ",
        "test accuracy",
        title="Accuracy",
        examples=[10000],
    )
    assert several._suptitle.get_text() == "Accuracy: mean ± 3σ over 2–3 seeds, 10,000 examples"
    single = plotting.errorbar_panels(
        {"p": {"ML": _stats([0.9, 0.8, 0.7], [1, 1, 1])}}, "λ", "test accuracy", title="Accuracy"
    )
    assert single._suptitle.get_text() == "Accuracy: 1 seed"
    assert "±" not in single._suptitle.get_text()
    ax = single.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("λ", "test accuracy")


def test_grouped_bars_title_single_seed_has_no_sigma_and_panels_share_the_y_scale():
    panels = {
        "p": {
            "groups": ["a", "b"],
            "series": {"ML": {"mean": [1.0, 2.0], "std": [0.0, 0.0], "n": [1, 1]}},
        },
        "q": {
            "groups": ["a", "b"],
            "series": {"ML": {"mean": [10.0, 20.0], "std": [0.0, 0.0], "n": [1, 1]}},
        },
    }
    figure = plotting.grouped_bars(panels, "mean weight variance", title="Weights")
    assert figure._suptitle.get_text() == "Weights: 1 seed"
    assert figure.axes[0].get_ylabel() == "mean weight variance"
    figure.canvas.draw()
    assert figure.axes[0].get_ylim() == figure.axes[1].get_ylim()
    assert figure.axes[0].get_ylim()[1] >= 20.0


def test_attack_curves_label_axes_and_state_seeds_and_examples():
    figure = plotting.attack_curves(
        [1, 10, 100],
        {"Success rate": {"a": [0.1, 0.5, 0.9]}, "JSR": {"a": [0.0, 0.2, 0.3]}},
        title="MIM",
        seeds=[1],
        examples=500,
    )
    assert figure._suptitle.get_text() == "MIM: 1 seed, 500 examples"
    assert [ax.get_ylabel() for ax in figure.axes] == ["Success rate", "JSR"]
    assert all(ax.get_xlabel() == "attack iterations" for ax in figure.axes)
    # one legend below the panels, each series once (not one legend per panel over the curves)
    assert all(ax.get_legend() is None for ax in figure.axes)
    assert [[t.get_text() for t in legend.get_texts()] for legend in figure.legends] == [["a"]]


def test_attack_curves_share_one_legend_of_every_series_in_first_appearance_order():
    panels = {
        "success rate": {"b": [0.1, 0.2], "a": [0.2, 0.3]},
        "median L2": {"a": [1.0, 2.0], "c": [0.5, 1.5]},
    }
    figure = plotting.attack_curves([1, 10], panels, free_y=("median L2",))
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["b", "a", "c"]
    figure.canvas.draw()  # the legend sits below every panel and its axis labels, inside the figure
    box = legend.get_window_extent()
    assert box.y0 >= 0 and all(box.y1 <= ax.get_tightbbox().y0 for ax in figure.axes)


def test_robustness_figure_title_counts_seeds_and_attacked_images():
    one = attack_eval.robustness_figure(
        {"ML": {"epsilons": [0, 0.1], "accuracy": [0.9, 0.5], "num_examples": 1000}}, title="PGD"
    )
    assert one.axes[0].get_title() == "PGD\n1 seed, 1,000 attacked images"
    three = attack_eval.robustness_figure(
        {"ML": {"epsilons": [0, 0.1], "accuracy": [[0.9, 0.5]] * 3}}
    )
    assert three.axes[0].get_title() == "PGD robustness\nmean ± 3σ over 3 seeds"


def test_robustness_panels_title_each_panel_and_count_seeds_in_the_figure_title():
    curve = {"epsilons": [0, 0.1], "accuracy": [[0.9, 0.5], [0.8, 0.4]], "num_examples": 1000}
    figure = plotting.robustness_panels({"A": {"σ² = 1": curve}, "B": {"σ² = 3": curve}}, "Fig")
    assert [ax.get_title() for ax in figure.axes] == ["A", "B"]
    assert figure.get_suptitle() == "Fig: mean ± 3σ over 2 seeds, 1,000 attacked images"
    assert figure.axes[0].get_legend().get_texts()[0].get_text() == "σ² = 1 (n=2)"
    np.testing.assert_allclose(figure.axes[1].containers[0].lines[0].get_ydata(), [0.85, 0.45])


def test_density_stairs_in_rows_of_columns_hides_the_unused_panels():
    hist = [{"bin_edges": [0.0, 1.0, 2.0], "counts": [3, 1]}]
    figure = plotting.density_stairs({p: {"x": hist} for p in "abc"}, "value", columns=2)
    assert [ax.get_visible() for ax in figure.axes] == [True, True, True, False]
    assert [ax.get_title() for ax in figure.axes[:3]] == ["a", "b", "c"]


def test_weight_variance_histograms_are_densities_of_each_layer():
    """Layers of 100 and 10,000 weights: each line integrates to 1 and equals NumPy's
    density histogram of the same values."""
    rng = np.random.default_rng(0)
    summaries, samples = {}, {}
    for layer, size in (("small", 100), ("large", 10000)):
        values = rng.normal(-2.0, 0.5, size)
        counts, edges = np.histogram(values, bins=20)
        samples[layer] = (values, edges)
        summaries[layer] = {
            "mean": 1.0,
            "log10_histogram": {"bin_edges": edges.tolist(), "counts": counts.tolist()},
        }
    figure = plotting.weight_variance_histograms(summaries)
    ax = figure.axes[0]
    assert ax.get_ylabel() == "density" and ax.get_xlabel().startswith("log10")
    for patch, (layer, (values, edges)) in zip(ax.patches, samples.items()):
        drawn = patch.get_data().values
        np.testing.assert_allclose(drawn, np.histogram(values, bins=edges, density=True)[0])
        assert np.sum(drawn * np.diff(edges)) == pytest.approx(1.0)
    assert [t.get_text().split(" (")[1].split(",")[0] for t in ax.get_legend().get_texts()] == [
        "n=100",
        "n=10000",
    ]


def test_histogram_density_refuses_empty_or_mismatched_histograms():
    with pytest.raises(ValueError, match="empty"):
        plotting.histogram_density([0, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="3 increasing bin edges"):
        plotting.histogram_density([1, 2], [0, 1])


def test_uncertainty_maps_rows_share_each_columns_colour_scale_and_axes_are_labelled():
    grid = np.linspace(0, 1, 16).reshape(4, 4)
    maps = {
        "Forward KL": {"total_uncertainty": grid, "mutual_information": grid * 0.1},
        "Reverse KL": {"total_uncertainty": grid * 3, "mutual_information": grid * 0.5},
    }
    figure = plotting.uncertainty_maps(maps, (-1, 1, -1, 1))
    axes = np.array(figure.axes[:4]).reshape(2, 2)
    for j, top in enumerate((3.0, 0.5)):
        for i in range(2):
            assert axes[i, j].images[0].get_clim() == pytest.approx((0.0, top))
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["x₂", "x₂"]
    assert [ax.get_xlabel() for ax in axes[1]] == ["x₁", "x₁"]


def test_in_out_histograms_are_densities_with_counts_in_the_legend():
    rng = np.random.default_rng(1)
    figure = plotting.in_out_histograms(
        rng.uniform(size=50), {"svhn": rng.uniform(size=400)}, "mutual_information"
    )
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "in-domain (n=50)",
        "svhn (n=400)",
    ]
    assert ax.get_ylabel() == "density" and ax.get_xlabel() == "Mutual information"


def test_figure_bytes_grows_the_canvas_only_for_what_sticks_out():
    import struct

    from matplotlib.figure import Figure

    def png_size(data):
        return struct.unpack(">II", data[16:24])  # IHDR width, height

    plain = Figure(figsize=(6, 4))
    plain.add_subplot(1, 1, 1)
    assert png_size(plotting.figure_bytes(plain, "a.png", dpi=25)) == (150, 100)
    titled = Figure(figsize=(6, 4))
    titled.add_subplot(1, 1, 1)
    titled.suptitle("a title far wider than the six inches of this figure " * 3)
    width, height = png_size(plotting.figure_bytes(titled, "b.png", dpi=25))
    assert width > 200 and height >= 100
