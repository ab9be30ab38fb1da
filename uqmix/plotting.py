"""Figures of the experiments (matplotlib, Agg canvas; no pyplot, no display needed).

A flat module of figure functions: each builds and returns a
``matplotlib.figure.Figure`` drawn on an Agg canvas (the global pyplot backend
is never touched, so importing uqmix does not change an interactive session),
and ``save_figure`` writes one atomically.
"""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uqmix import runs

MEASURE_TITLES = {
    "total_uncertainty": "Total uncertainty",
    "expected_data_uncertainty": "Expected data uncertainty",
    "mutual_information": "Mutual information",
    "predictive_variance": "Predictive variance",
    "epkl": "EPKL",
    "max_probability": "Max probability",
    "precision": "Precision α0",
    "differential_entropy": "Differential entropy",
}


def new_figure(width, height):
    """A ``Figure`` of ``width`` × ``height`` inches with an Agg canvas attached."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")  # attack_curves: the marker of a series' points


def series_styles(count):
    """``count`` distinct (colour, line style) pairs: the ten tab10 colours with solid
    lines, then again dashed, dotted, dash-dotted, so no two series of one axis look the
    same (matplotlib's default cycle repeats its colours after ten)."""
    if count > 10 * len(LINE_STYLES):
        raise ValueError(f"at most {10 * len(LINE_STYLES)} series per axis, got {count}.")
    return [(f"C{i % 10}", LINE_STYLES[i // 10]) for i in range(count)]


def _canvas_inches(figure):
    """The union of the figure's own box and the tight box of its artists (inches)."""
    from matplotlib.transforms import Bbox

    tight = figure.get_tightbbox()
    if tight is None:
        return figure.bbox_inches
    return Bbox.union([figure.bbox_inches, tight])


def figure_bytes(figure, path, dpi=120):
    """The bytes of ``figure`` in the format of ``path``'s extension (png, pdf, svg).

    The canvas is the figure (figsize × dpi) grown, never shrunk, to hold what sticks out of
    it, e.g. a title wider than the panels (``_canvas_inches``)."""
    suffix = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
    if suffix not in ("png", "pdf", "svg"):
        raise ValueError(f"figure path must end in .png, .pdf or .svg, got {path}.")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=suffix, dpi=dpi, bbox_inches=_canvas_inches(figure))
    return buffer.getvalue()


def save_figure(figure, path, dpi=120):
    """Writes ``figure`` to ``path`` (format from the extension) atomically."""
    runs.atomic_write_bytes(str(path), figure_bytes(figure, path, dpi))
    return str(path)


def plane_grid(extent, resolution):
    """A square grid over the plane for 2-D maps.

    extent: (x_min, x_max, y_min, y_max); resolution: points per axis (≥ 2).
    Returns (points float32 [resolution², 2] in row-major order of the image,
    shape (resolution, resolution)); ``values.reshape(shape)`` is the image
    with row i at y_i (increasing) and column j at x_j.
    """
    x_min, x_max, y_min, y_max = (float(v) for v in extent)
    if not (x_min < x_max and y_min < y_max):
        raise ValueError(
            f"extent must be (x_min, x_max, y_min, y_max) with min < max, got {extent}."
        )
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}.")
    xs = np.linspace(x_min, x_max, int(resolution))
    ys = np.linspace(y_min, y_max, int(resolution))
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)
    return points, grid_x.shape


def uncertainty_maps(maps, extent, overlays=(), title=None, color_scale="column"):
    """Rows of models × columns of uncertainty measures, as images over the plane.

    maps: {row label: {measure name: 2-D array [ny, nx]}} (every row has the
      same measures, in the order of the first row; row i of an image is at
      the i-th y value, as ``plane_grid`` produces).
    extent: (x_min, x_max, y_min, y_max) of the images.
    overlays: (points [N, 2], style dict for ``Axes.scatter``) pairs drawn on
      every panel (e.g. training data and OOD points).
    color_scale: "column" — each column shares one colour scale (from 0 to the
      largest value of that measure in any row), so rows compare directly;
      "panel" — every panel has its own scale and colour bar, so each map's
      structure shows even when the rows' ranges differ a lot.
    """
    if color_scale not in ("column", "panel"):
        raise ValueError(f"color_scale must be 'column' or 'panel', got {color_scale!r}.")
    if not maps:
        raise ValueError("maps is empty.")
    rows = list(maps)
    measures = list(maps[rows[0]])
    for row in rows:
        if list(maps[row]) != measures:
            raise ValueError(f"row {row!r} has measures {list(maps[row])}, expected {measures}.")
    figure = new_figure(4.0 * len(measures), 3.6 * len(rows))
    axes = figure.subplots(len(rows), len(measures), squeeze=False, sharex=True, sharey=True)
    for j, measure in enumerate(measures):
        for i, row in enumerate(rows):
            shown = rows if color_scale == "column" else [row]
            vmax = max(float(np.nanmax(maps[r][measure])) for r in shown)
            vmin = min(0.0, min(float(np.nanmin(maps[r][measure])) for r in shown))
            ax = axes[i, j]
            image = ax.imshow(
                np.asarray(maps[row][measure]),
                origin="lower",
                extent=extent,
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                aspect="equal",
                interpolation="nearest",
            )
            for points, style in overlays:
                ax.scatter(np.asarray(points)[:, 0], np.asarray(points)[:, 1], **style)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_title(f"{row}: {MEASURE_TITLES.get(measure, measure)}", fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel("x₁")
            if j == 0:
                ax.set_ylabel("x₂")
            if color_scale == "panel":
                figure.colorbar(image, ax=ax, shrink=0.85)
        if color_scale == "column":
            figure.colorbar(image, ax=axes[:, j].tolist(), shrink=0.8)
    if title:
        figure.suptitle(title)
    return figure


def in_out_histograms(values_in, values_out, measure, log10=False, bins=40, title=None):
    """Overlaid histograms of one measure on in-domain and each OOD set (densities).

    values_in: [N] values of the in-domain test set; values_out: {set name: [M]}.
    log10: plot log10 of the values (for α0, which spans many decades).
    """
    if not values_out:
        raise ValueError("values_out is empty.")
    series = {"in-domain": np.asarray(values_in, np.float64)}
    series.update({name: np.asarray(v, np.float64) for name, v in values_out.items()})
    if log10:
        if any(np.any(v <= 0) for v in series.values()):
            raise ValueError(f"log10 histogram of {measure} needs positive values.")
        series = {name: np.log10(v) for name, v in series.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(series.values())), bins=bins)
    figure = new_figure(5.0, 3.6)
    ax = figure.subplots()
    for name, values in series.items():
        ax.hist(
            values,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.5,
            label=f"{name} (n={values.size})",
        )
    label = MEASURE_TITLES.get(measure, measure)
    ax.set_xlabel(f"log10 {label}" if log10 else label)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title or f"{label}: in-domain vs OOD", fontsize=10)
    return figure


def roc_curves(curves, title=None):
    """ROC curves: curves = {label: (fpr [M], tpr [M], auroc)}; the chance diagonal dashed."""
    if not curves:
        raise ValueError("curves is empty.")
    figure = new_figure(4.6, 4.2)
    ax = figure.subplots()
    for label, (fpr, tpr, auroc) in curves.items():
        ax.plot(np.asarray(fpr), np.asarray(tpr), linewidth=1.5, label=f"{label} ({auroc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right", title="AUROC", title_fontsize=8)
    ax.set_title(title or "ROC", fontsize=10)
    return figure


LEGEND_ROW_INCHES = 0.22


def shared_legend(figure, axes, columns):
    """One legend below the panels for the series of all ``axes`` (each label once, in the
    order it first appears), in ``columns`` columns — panels that share their series would
    otherwise repeat the legend on every panel, covering the curves."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        figure.legend(
            list(entries.values()),
            list(entries),
            loc="outside lower center",
            ncol=columns,
            fontsize=8,
            frameon=False,
        )


def attack_curves(
    iterations,
    panels,
    title=None,
    spreads=None,
    seeds=None,
    examples=None,
    sigmas=3.0,
    xlabel="attack iterations",
    styles=None,
    free_y=(),
):
    """Attack results against the number of attack iterations, one panel per quantity.

    iterations: [T] iteration counts (x axis, log scale when they span > 10×).
    panels: {panel title: {series label: [T] values (None/NaN = missing)}}; the panel
      title is also its y label.  The series labels go to one legend below the panels
      (``shared_legend``).
    spreads: optional {panel title: {series label: [T] error-bar half-widths}}.
    seeds, examples: how many seeds (counts, one per series) and attacked examples the
      points average; given, the title says so (``averaging_text``; "± σ" only with
      more than one seed).
    xlabel: the x axis label.  styles: optional {series label: (colour, line style) or
      (colour, line style, marker)} (default: ``series_styles`` in the order of the
      panel's series without one; marker "o").  free_y: panel
      titles whose y axis is not fixed to [0, 1] (e.g. a distance).
    """
    if not panels:
        raise ValueError("panels is empty.")
    iterations = np.asarray(iterations, np.float64)
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    columns = min(len(panels), len(labels)) or 1
    figure = new_figure(4.2 * len(panels), 3.6 + LEGEND_ROW_INCHES * -(-len(labels) // columns))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items()):
        styled = {label: (styles or {}).get(label) for label in series}
        unstyled = [label for label, style in styled.items() if style is None]
        styled.update(zip(unstyled, series_styles(len(unstyled))))
        for label, values in series.items():
            color, style, *marker = styled[label]
            values = np.array([np.nan if v is None else v for v in values], np.float64)
            if values.shape != iterations.shape:
                raise ValueError(
                    f"series {label!r} of {panel!r} has {values.size} values for "
                    f"{iterations.size} iteration counts."
                )
            spread = ((spreads or {}).get(panel) or {}).get(label)
            if spread is not None:
                spread = np.asarray(spread, np.float64)
                if spread.shape != iterations.shape:
                    raise ValueError(
                        f"spread of {label!r} in {panel!r} has {spread.size} values "
                        f"for {iterations.size} iteration counts."
                    )
            ax.errorbar(
                iterations,
                values,
                yerr=spread,
                marker=marker[0] if marker else MARKERS[0],
                markersize=3,
                capsize=3,
                linewidth=1.5,
                label=label,
                color=color,
                linestyle=style,
            )
        if iterations.size and iterations.min() > 0 and iterations.max() > 10 * iterations.min():
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel)
        if panel not in free_y:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(panel, fontsize=10)
    shared_legend(figure, axes, columns)
    if seeds is not None or examples is not None:
        title = join_title(title, averaging_text(seeds or [1], sigmas, examples))
    if title:
        figure.suptitle(title)
    return figure


def correct_wrong_histograms(histograms, title=None):
    """Histograms of uncertainty measures on correctly vs wrongly classified inputs.

    histograms: {measure: {"bin_edges": [M + 1], "correct": [M], "wrong": [M]}}
      (``uqmix.evaluation.measure_histograms``); drawn as densities, one panel
      per measure, so the two groups compare despite their different sizes.
    """
    if not histograms:
        raise ValueError("histograms is empty.")
    figure = new_figure(4.4 * len(histograms), 3.4)
    axes = figure.subplots(1, len(histograms), squeeze=False)[0]
    for ax, (measure, hist) in zip(axes, histograms.items()):
        edges = np.asarray(hist["bin_edges"], np.float64)
        for group in ("correct", "wrong"):
            counts = np.asarray(hist[group], np.float64)
            if counts.sum() > 0:
                ax.stairs(
                    histogram_density(counts, edges),
                    edges,
                    linewidth=1.5,
                    label=f"{group} (n={int(counts.sum())})",
                )
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlabel(MEASURE_TITLES.get(measure, measure))
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def histogram_density(counts, edges):
    """counts / (Σ counts · bin width): a histogram that integrates to 1, so histograms of
    groups of different sizes (layers, seeds, correct vs wrong) compare directly."""
    counts = np.asarray(counts, np.float64)
    widths = np.diff(np.asarray(edges, np.float64))
    if counts.shape != widths.shape or np.any(widths <= 0):
        raise ValueError(f"need {counts.size + 1} increasing bin edges for {counts.size} counts.")
    if counts.sum() <= 0:
        raise ValueError("an empty histogram has no density.")
    return counts / (counts.sum() * widths)


def weight_variance_histograms(summaries, title=None):
    """Densities of log10 Var[W_ij] of the mixing distribution, one line per layer.

    summaries: {layer: {"log10_histogram": {"bin_edges", "counts"}, "mean": float}};
    each layer's histogram is normalised to integrate to 1 (``histogram_density``),
    so layers with very different numbers of weights compare; the legend gives n.
    """
    if not summaries:
        raise ValueError("summaries is empty.")
    figure = new_figure(5.0, 3.6)
    ax = figure.subplots()
    for layer, summary in summaries.items():
        hist = summary["log10_histogram"]
        counts = np.asarray(hist["counts"], np.float64)
        ax.stairs(
            histogram_density(counts, hist["bin_edges"]),
            np.asarray(hist["bin_edges"]),
            linewidth=1.5,
            label=f"{layer} (n={int(counts.sum())}, mean {summary['mean']:.3g})",
        )
    ax.set_xlabel("log10 weight variance u_i v_j")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title or "Mixing-distribution weight variances", fontsize=10)
    return figure


# -- mean ± k·std summaries over seeds (sweep aggregates) --------------------------------------
def seed_count_text(counts):
    """ "n=3", or "n=1–3" when the points of a series rest on different numbers of seeds."""
    counts = [int(c) for c in counts if c]
    if not counts:
        return "n=0"
    low, high = min(counts), max(counts)
    return f"n={low}" if low == high else f"n={low}–{high}"


def count_text(counts, noun):
    """ "3 seeds", "1 seed", "1–3 seeds", "10,000 test images"; counts: ints (zeros ignored)."""
    counts = [int(c) for c in np.atleast_1d(counts) if c]
    if not counts:
        return f"no {noun}s"
    low, high = min(counts), max(counts)
    number = f"{low:,}" if low == high else f"{low:,}–{high:,}"
    return f"{number} {noun}{'' if high == 1 else 's'}"


def averaging_text(seed_counts, sigmas=3.0, examples=None, example_noun="example"):
    """What a plotted point rests on, for a title: "mean ± 3σ over 3 seeds, 1,000 examples"
    when some point has more than one seed, else "1 seed, 1,000 examples" (no ±: a single
    run has no spread).  seed_counts: seeds per point or series; examples: count(s) or None."""
    counts = [int(c) for c in np.atleast_1d(seed_counts) if c]
    if counts and max(counts) > 1:
        text = f"mean ± {sigmas:g}σ over {count_text(counts, 'seed')}"
    else:
        text = count_text(counts or [0], "seed")
    if examples is not None:
        text += f", {count_text(examples, example_noun)}"
    return text


def join_title(title, detail):
    """ "title: detail", or just ``detail`` without a title."""
    return f"{title}: {detail}" if title else detail


def _error(stats, sigmas, positive_axis=False):
    """±sigmas·std as ``yerr``; NaN (no bar) where n ≤ 1; on a log axis the lower bar stops
    just above 0."""
    mean = np.asarray(stats["mean"], np.float64)
    spread = sigmas * np.asarray(stats["std"], np.float64)
    spread = np.where(np.asarray(stats["n"]) > 1, spread, np.nan)
    if not positive_axis:
        return spread
    lower = np.where(mean > 0, np.minimum(spread, 0.999 * mean), np.nan)
    return np.stack([lower, spread])


def errorbar_panels(
    panels, xlabel, ylabel, log_x=False, sigmas=3.0, colors=None, title=None, examples=None
):
    """Lines of a mean over seeds against x with ± ``sigmas``·std error bars, one panel per key.

    panels: {panel title: {series label: {"x": [P], "mean": [P], "std": [P],
      "n": [P]}}} (std: sample std over the n seeds; no bar where n = 1); the
      legend gives each series' seed count "(n=K)".
    log_x: logarithmic x axis (points with x ≤ 0 are not drawn).
    colors: {series label: matplotlib colour} (default: the colour cycle, per panel).
    title: what the figure shows; the seeds (and ``examples`` per point, when given) the
      means rest on are appended (``averaging_text``; "± σ" only with more than one seed).
    """
    if not panels:
        raise ValueError("panels is empty.")
    figure = new_figure(4.4 * len(panels), 3.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, series) in zip(axes, panels.items()):
        for index, (label, stats) in enumerate(series.items()):
            x = np.asarray(stats["x"], np.float64)
            keep = x > 0 if log_x else np.ones(x.shape, bool)
            kept = {k: np.asarray(stats[k])[keep] for k in ("mean", "std", "n")}
            ax.errorbar(
                x[keep],
                kept["mean"],
                yerr=_error(kept, sigmas),
                marker="o",
                markersize=4,
                capsize=3,
                linewidth=1.5,
                color=(colors or {}).get(label, f"C{index % 10}"),
                label=f"{label} ({seed_count_text(kept['n'])})",
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=8)
    seeds = [n for series in panels.values() for stats in series.values() for n in stats["n"]]
    figure.suptitle(join_title(title, averaging_text(seeds, sigmas, examples)), fontsize=10)
    return figure


def robustness_axes(ax, curves, sigmas=3.0):
    """Accuracy against ε on ``ax``, one line per curve, error bars ± ``sigmas``·std over seeds
    (sample standard deviation, ddof = 1; none for one seed); the legend gives "(n=seeds)".

    curves: {label: {"epsilons": [E], "accuracy": [E] or [seeds, E]}}, optionally
    "num_examples" (count or counts of attacked images); other keys are ignored.
    Returns (seeds per curve, attacked-image counts) for a title (``averaging_text``).
    """
    seeds, examples = [], []
    for (label, curve), (color, style) in zip(curves.items(), series_styles(len(curves))):
        epsilons = np.asarray(curve["epsilons"], np.float64)
        accuracy = np.atleast_2d(np.asarray(curve["accuracy"], np.float64))
        if accuracy.shape[1] != epsilons.size:
            raise ValueError(
                f"{label!r}: {accuracy.shape[1]} accuracies for {epsilons.size} epsilons."
            )
        seeds.append(accuracy.shape[0])
        examples += [int(n) for n in np.atleast_1d(curve.get("num_examples") or [])]
        spread = sigmas * accuracy.std(axis=0, ddof=1) if accuracy.shape[0] > 1 else None
        ax.errorbar(
            epsilons,
            accuracy.mean(axis=0),
            yerr=spread,
            marker="o",
            markersize=3,
            capsize=3,
            linewidth=1.5,
            label=f"{label} (n={accuracy.shape[0]})",
            color=color,
            linestyle=style,
        )
    ax.set_xlabel("ε")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    return seeds, examples


def robustness_panels(panels, title=None, sigmas=3.0):
    """``robustness_axes`` side by side, one panel per key: {panel title: curves}.

    The figure title (``title``: what the figure shows) gets the seeds and attacked
    images appended (``averaging_text``; "± σ" only with more than one seed).
    """
    if not panels:
        raise ValueError("panels is empty.")
    figure = new_figure(4.6 * len(panels), 3.8)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    seeds, examples = [], []
    for ax, (panel, curves) in zip(axes, panels.items()):
        if not curves:
            raise ValueError(f"panel {panel!r} has no curves.")
        panel_seeds, panel_examples = robustness_axes(ax, curves, sigmas)
        seeds += panel_seeds
        examples += panel_examples
        ax.set_title(panel, fontsize=10)
    figure.suptitle(
        join_title(title, averaging_text(seeds, sigmas, examples or None, "attacked image")),
        fontsize=10,
    )
    return figure


def grouped_bars(panels, ylabel, log_y=False, sigmas=3.0, title=None, examples=None):
    """Grouped bars of means over seeds with ± ``sigmas``·std error bars, one panel per key.

    panels: {panel title: {"groups": [G group names], "series": {series label:
      {"mean": [G], "std": [G], "n": [G]}}}}; NaN means leave a gap; the legend
      gives each series' seed count "(n=K)".
    log_y: logarithmic y axis (lower error bars stop just above zero).
    title: what the figure shows; the seeds (and ``examples``) are appended as in
      ``errorbar_panels``.
    """
    if not panels:
        raise ValueError("panels is empty.")
    bars = [max(4, len(p["groups"]) * max(1, len(p["series"]))) for p in panels.values()]
    figure = new_figure(max(7.0, 0.3 * sum(bars) + 4.0 * len(panels)), 4.0)
    # one y scale for all panels: they show the same quantity (e.g. per data set) side by side
    axes = figure.subplots(1, len(panels), squeeze=False, width_ratios=bars, sharey=True)[0]
    for ax, (panel, content) in zip(axes, panels.items()):
        groups, series = content["groups"], content["series"]
        width = 0.8 / max(1, len(series))
        positions = np.arange(len(groups), dtype=np.float64)
        for k, (label, stats) in enumerate(series.items()):
            mean = np.asarray(stats["mean"], np.float64)
            ax.bar(
                positions + (k - (len(series) - 1) / 2) * width,
                mean,
                width,
                yerr=_error(stats, sigmas, positive_axis=log_y),
                capsize=2,
                label=f"{label} ({seed_count_text(stats['n'])})",
            )
        if log_y:
            ax.set_yscale("log")
        tilted = len(groups) > 4
        ax.set_xticks(
            positions,
            groups,
            rotation=30 if tilted else 0,
            ha="right" if tilted else "center",
            fontsize=8,
        )
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    seeds = [
        n for content in panels.values() for stats in content["series"].values() for n in stats["n"]
    ]
    figure.suptitle(join_title(title, averaging_text(seeds, sigmas, examples)), fontsize=10)
    return figure


def density_stairs(panels, xlabel, log_y=True, colors=None, title=None, columns=None):
    """Histograms drawn as densities (counts / (total · bin width)), one panel per key.

    panels: {panel title: {label: [{"bin_edges": [M + 1], "counts": [M]}, ...]}};
      the histograms of one label (e.g. one per seed when they cannot be
      pooled) share a colour and a legend entry; empty histograms are skipped.
    colors: {label: matplotlib colour} (default: the colour cycle, per panel).
    columns: panels per row (default: all in one row).
    """
    if not panels:
        raise ValueError("panels is empty.")
    columns = min(len(panels), columns or len(panels))
    rows = -(-len(panels) // columns)
    figure = new_figure(4.6 * columns, 3.6 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[len(panels) :]:
        unused.set_visible(False)
    for ax, (panel, series) in zip(axes, panels.items()):
        for index, (label, histograms) in enumerate(series.items()):
            color = (colors or {}).get(label, f"C{index % 10}")
            drawn = 0
            for hist in histograms:
                edges = np.asarray(hist["bin_edges"], np.float64)
                counts = np.asarray(hist["counts"], np.float64)
                widths = np.diff(edges)
                if counts.sum() <= 0 or np.any(widths <= 0):
                    continue
                ax.stairs(
                    histogram_density(counts, edges),
                    edges,
                    color=color,
                    linewidth=1.3,
                    label=None if drawn else label,
                )
                drawn += 1
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
