"""The figures of the report: their files, their data and how each is drawn.

``FIGURES`` (PNG): a figure whose runs are absent is skipped and the reason returned
(``figure_data``; a partial sweep gives what it can).  The adversarial figures are drawn once
per attack protocol (``figure_files``).  Figures draw the mean with error bars of
±``SIGMAS``·std where n > 1.

The robustness figures are drawn by ``uqmix.attack_eval.robustness_figure``,
imported lazily: everything else here runs without TensorFlow (Fig. 9's panels are
``uqmix.plotting.robustness_panels``, which shares its axes with ``robustness_figure``).
"""

import dataclasses
import os

import numpy as np

from uqmix import plotting
from uqmix.studies.mixture_report.attack_protocols import (
    ONLY_PROTOCOL,
    figure_protocols,
    protocol_slug,
)
from uqmix.studies.mixture_report.figure_numbers import (
    MissingRuns,
    accuracy_vs_lambda_data,
    accuracy_vs_prior_data,
    correct_vs_wrong_variance_data,
    entropy_correct_vs_wrong_data,
    predictive_variance_hist_data,
    robustness_data,
    robustness_samples_data,
    robustness_vs_prior_data,
    weight_variance_bars_data,
)

SIGMAS = 3.0
MODEL_COLORS = {"ML": "C0", "VI": "C1"}
FIGURE_10_COLORS = {"correct": "C2", "wrong": "C3"}


def _test_examples(panels):
    """The test-set sizes behind the accuracy points of ``panels`` (for the title)."""
    return [
        n for series in panels.values() for s in series.values() for n in s.get("examples", [])
    ] or None


def _draw_accuracy_vs_prior(panels):
    return plotting.errorbar_panels(
        panels,
        "prior variance σ²",
        "test accuracy",
        sigmas=SIGMAS,
        colors=MODEL_COLORS,
        title="Test accuracy vs prior variance",
        examples=_test_examples(panels),
    )


def _draw_accuracy_vs_lambda(panels):
    return plotting.errorbar_panels(
        panels,
        "KL weight λ",
        "test accuracy",
        log_x=True,
        sigmas=SIGMAS,
        colors=MODEL_COLORS,
        title="Test accuracy vs KL weight",
        examples=_test_examples(panels),
    )


def _draw_weight_variance_bars(panels):
    return plotting.grouped_bars(
        panels,
        "mean weight variance",
        log_y=True,
        sigmas=SIGMAS,
        title="Mixing-distribution weight variance per layer",
    )


def _draw_predictive_variance_hist(panels):
    def legend(entry):
        how = "pooled" if entry["pooled"] else "one line per seed"
        return f"{entry['label']} (n={entry['seeds']}, {how})"

    series = {
        panel: {legend(e): e["histograms"] for e in entries.values()}
        for panel, entries in panels.items()
    }
    colors = {
        legend(e): MODEL_COLORS[model]
        for entries in panels.values()
        for model, e in entries.items()
    }
    return plotting.density_stairs(
        series,
        plotting.MEASURE_TITLES["predictive_variance"],
        colors=colors,
        title="Predictive variance of the test inputs, ML vs VI",
    )


def _draw_correct_vs_wrong_variance(panels):
    return plotting.grouped_bars(
        panels,
        "mean predictive variance",
        sigmas=SIGMAS,
        title="Predictive variance of correct vs wrong test inputs",
    )


def _protocol_title(title, protocol):
    """The title of an adversarial figure, naming its attack protocol when the study has
    several (``protocol``: its name, None otherwise)."""
    return title if protocol is None else f"{title}\nattack protocol {protocol}"


def _draw_robustness(curves, title):
    from uqmix import attack_eval  # TensorFlow: only when a robustness figure is drawn

    return attack_eval.robustness_figure(curves, title=title, sigmas=SIGMAS)


def _draw_robustness_s1(curves, protocol=None):
    return _draw_robustness(curves, _protocol_title("PGD robustness, 1 gradient sample", protocol))


def _draw_robustness_samples(curves, protocol=None):
    return _draw_robustness(
        curves, _protocol_title("PGD robustness vs gradient samples S", protocol)
    )


def _draw_robustness_vs_prior(panels, protocol=None):
    return plotting.robustness_panels(
        panels,
        title=_protocol_title("PGD robustness vs prior variance σ², 1 gradient sample", protocol),
        sigmas=SIGMAS,
    )


def _draw_entropy_correct_vs_wrong(panels):
    series, colors = {}, {}
    for panel, entry in panels.items():
        series[panel] = {}
        for group, color in FIGURE_10_COLORS.items():
            label = f"{group} ({int(np.sum(entry[group]['counts'])):,} test inputs)"
            series[panel][label] = [entry[group]]
            colors[label] = color
    seeds = [len(entry["seeds"]) for entry in panels.values()]
    return plotting.density_stairs(
        series,
        "predictive entropy (total uncertainty, nats)",
        colors=colors,
        title="Predictive entropy of correct vs wrong test inputs: counts summed over "
        + plotting.count_text(seeds, "seed"),
        columns=2,
    )


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: its file, its data (raises MissingRuns) and how it is drawn.

    adversarial: it draws robustness curves, one attack protocol per file (``figure_files``);
    its data and draw functions take the protocol (``protocol=``)."""

    filename: str
    data: object
    draw: object
    adversarial: bool = False

    def figure(self, configurations):
        return self.draw(self.data(configurations))


FIGURES = (
    FigureSpec("accuracy_vs_prior.png", accuracy_vs_prior_data, _draw_accuracy_vs_prior),
    FigureSpec("accuracy_vs_lambda.png", accuracy_vs_lambda_data, _draw_accuracy_vs_lambda),
    FigureSpec("weight_variance_bars.png", weight_variance_bars_data, _draw_weight_variance_bars),
    FigureSpec(
        "predictive_variance_hist.png",
        predictive_variance_hist_data,
        _draw_predictive_variance_hist,
    ),
    FigureSpec(
        "correct_vs_wrong_variance.png",
        correct_vs_wrong_variance_data,
        _draw_correct_vs_wrong_variance,
    ),
    FigureSpec("robustness.png", robustness_data, _draw_robustness_s1, adversarial=True),
    FigureSpec(
        "robustness_samples.png",
        robustness_samples_data,
        _draw_robustness_samples,
        adversarial=True,
    ),
    FigureSpec(
        "robustness_vs_prior.png",
        robustness_vs_prior_data,
        _draw_robustness_vs_prior,
        adversarial=True,
    ),
    FigureSpec(
        "entropy_correct_vs_wrong.png",
        entropy_correct_vs_wrong_data,
        _draw_entropy_correct_vs_wrong,
    ),
)
FIGURE_FILES = tuple(spec.filename for spec in FIGURES)


@dataclasses.dataclass(frozen=True)
class FigureFile:
    """A figure file of one report: its spec and, for an adversarial figure, the attack
    protocol it draws (protocol: a key of ``figure_protocols`` or ONLY_PROTOCOL; name and
    attack_options: the protocol's, None for the other figures; titled: the study has several
    protocols, so the file name and title name this one)."""

    filename: str
    spec: FigureSpec
    protocol: object = ONLY_PROTOCOL
    name: object = None
    attack_options: object = None
    titled: bool = False

    def data(self, configurations, **options):
        if self.spec.adversarial:
            return self.spec.data(configurations, protocol=self.protocol)
        return self.spec.data(configurations, **options)

    def draw(self, data):
        if self.titled:
            return self.spec.draw(data, protocol=self.name)
        return self.spec.draw(data)


def figure_files(configurations):
    """[FigureFile]: every figure of ``FIGURES``, the adversarial ones once per attack protocol
    of the study's robustness curves (``figure_protocols``).  With one protocol (or none) the
    files keep the names of ``FIGURE_FILES``; with several, an adversarial figure's file name
    gets the protocol's ``protocol_slug`` ("robustness_cleverhans4-frozen.png") and its title
    the protocol's name."""
    protocols = figure_protocols(configurations)
    slugs = {}
    for key, _, name in protocols:
        slug = protocol_slug(name)
        while slug in slugs.values():
            slug += "_"
        slugs[key] = slug
    files = []
    for spec in FIGURES:
        if not spec.adversarial or not protocols:
            files.append(FigureFile(spec.filename, spec))
        elif len(protocols) == 1:
            ((key, options, name),) = protocols
            files.append(FigureFile(spec.filename, spec, key, name, options))
        else:
            stem, extension = os.path.splitext(spec.filename)
            files += [
                FigureFile(f"{stem}_{slugs[key]}{extension}", spec, key, name, options, True)
                for key, options, name in protocols
            ]
    return files


def is_figure_file(name):
    """True for a file name ``figure_files`` may give: a name of ``FIGURE_FILES``, or an
    adversarial figure's ``<stem>_<protocol slug><extension>``."""
    if name in FIGURE_FILES:
        return True
    for spec in FIGURES:
        stem, extension = os.path.splitext(spec.filename)
        if spec.adversarial and name.startswith(stem + "_") and name.endswith(extension):
            return True
    return False


def _spec(filename):
    return FIGURES[FIGURE_FILES.index(filename)]


def figure_data(configurations, weight_variance_configs=None, files=None):
    """({file name: data}, {file name: reason skipped}) of every file of ``figure_files``
    (``files``, default all).  An adversarial figure that no protocol can draw is skipped
    once, under its name in ``FIGURE_FILES``; one that some protocols can draw is skipped
    under the file name of each protocol that cannot.

    Raises ValueError (not MissingRuns) for unknown ``weight_variance_configs``.
    """
    files = figure_files(configurations) if files is None else files
    options = {"weight_variance_bars.png": {"names": weight_variance_configs}}
    data, reasons = {}, []
    for file in files:
        try:
            data[file.filename] = file.data(configurations, **options.get(file.spec.filename, {}))
        except MissingRuns as reason:
            reasons.append((file, str(reason)))
    skipped = {}
    for file, reason in reasons:
        drawn = [f for f in files if f.spec is file.spec and f.filename in data]
        if not file.titled:
            skipped[file.filename] = reason
        elif drawn:
            skipped[file.filename] = f"{reason} (attack protocol {file.name})"
        else:
            skipped[file.spec.filename] = reason
    return data, skipped


def accuracy_vs_prior_figure(configurations):
    """Test accuracy against σ² at λ = 1, ML vs VI, one panel per dataset."""
    return _spec("accuracy_vs_prior.png").figure(configurations)


def accuracy_vs_lambda_figure(configurations):
    """Test accuracy against λ (log axis) at σ² = 1, ML vs VI, one panel per dataset."""
    return _spec("accuracy_vs_lambda.png").figure(configurations)


def weight_variance_bars_figure(configurations, names=None):
    """Grouped bars of the mean weight variance per layer (log y); see weight_variance_bars_data."""
    return _draw_weight_variance_bars(weight_variance_bars_data(configurations, names))


def predictive_variance_hist_figure(configurations):
    """Predictive-variance densities of ML vs VI (σ² = 1; λ = 1 and 0.1), log y."""
    return _spec("predictive_variance_hist.png").figure(configurations)


def correct_vs_wrong_variance_figure(configurations):
    """Bars of the mean predictive variance of correct vs wrong test inputs per configuration."""
    return _spec("correct_vs_wrong_variance.png").figure(configurations)


def robustness_figure(configurations):
    """PGD accuracy vs ε, S = 1, every configuration with the robustness evaluation."""
    return _spec("robustness.png").figure(configurations)


def robustness_samples_figure(configurations):
    """PGD accuracy vs ε for S = 1/5/100 of ML and VI at λ = 1, σ² = 1, with the baselines."""
    return _spec("robustness_samples.png").figure(configurations)


def robustness_vs_prior_figure(configurations):
    """Fig. 9: PGD accuracy vs ε (S=1) per σ² at λ = 1, one panel per (dataset, ML | VI)."""
    return _spec("robustness_vs_prior.png").figure(configurations)


def entropy_correct_vs_wrong_figure(configurations):
    """Fig. 10: entropy densities of correct vs wrong test inputs, ML / VI at λ = σ² = 1."""
    return _spec("entropy_correct_vs_wrong.png").figure(configurations)
