"""The study a report is of: the run folders of a sweep as configurations, and how they are chosen.

Input: one or several output roots of ``python -m experiments.sweep
--binary=experiments.mixture_mnist``, one folder per configuration with one
``seed_<S>/metrics.json`` per seed (read by ``uqmix.sweep.collect_roots``).  Each configuration
records the folder it was read from (``Configuration.path``: its flags.cfg files are read
there).  A folder name found under one root is the configuration's name; a folder name found
under several roots gives one configuration per root, named ``<root label>/<folder>``
(``root_labels``: the roots' basenames when those are distinct, else the roots as given) — a
folder name never holds "/", so these names cannot meet a plain folder name.  A root given
twice or without a finished run is refused.  A configuration is known by the fields
every ``metrics.json`` records — ``dataset``, ``model`` (ml | vi |
deterministic | mc_dropout | ensemble), ``label``, ``kl_weight`` (λ) and
``prior_variance`` (σ²) — never by its folder name; the seeds of one folder
must agree on them.  λ and σ² mean something for ``ml`` / ``vi`` only.

Statistics: every number is taken over the seeds of a configuration that
have it (a missing or null evaluation, or a non-finite value, does not count):
mean = (1/n) Σ_s x_s, std = sample standard deviation √(Σ_s (x_s − mean)² / (n − 1))
(0 for n = 1), n = number of such seeds (``uqmix.sweep.mean_std``).  Tables
show "mean ± std (n)", "—" when no seed has the number; figures draw the mean
with error bars of ±3·std where n > 1 and write the seed count "(n=K)" in
their legends.

Folders of one setting (dataset, model, λ, σ²) are reduced to the one with most seeds for
what does not depend on an attack (``mixtures``: the accuracy, variance, weight-variance and
entropy figures, Tables 1, 2, 3, 5), under one root or across several.  Among folders with
equally many seeds the first in study order is used: dataset, model, λ, σ², then the root's
position in the roots given (earlier first), then the name — so with several roots the
earlier root wins a tie (``_most_seeds``).
"""

import collections
import dataclasses
import math
import os

from uqmix import runs, sweep
from uqmix.sweep import stats_of

MIXTURE_MODELS = ("ml", "vi")
STOCHASTIC_MODELS = ("ml", "vi", "mc_dropout")
BASELINE_MODELS = ("deterministic", "mc_dropout", "ensemble")
MODEL_ORDER = MIXTURE_MODELS + BASELINE_MODELS
DATASET_ORDER = ("mnist", "fashion_mnist")
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
REQUIRED_FIELDS = ("dataset", "model", "label", "kl_weight", "prior_variance")


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One configuration of the sweep: its name (the folder name, or ``<root label>/<folder>``
    for a folder name found under several roots), what it is, {seed: metrics}, the folder its
    runs were read from (``path``: ``<root>/<folder>``, where each ``seed_<S>/flags.cfg`` is
    read) and the position of that folder's root in the roots given (``root_index``, 0 for
    one root; the study order puts earlier roots first among configurations of one setting).
    """

    name: str
    dataset: str
    model: str
    label: str
    kl_weight: float
    prior_variance: float
    runs: dict
    path: str
    root_index: int = 0

    @property
    def seeds(self):
        return sorted(self.runs)

    @property
    def is_mixture(self):
        return self.model in MIXTURE_MODELS

    @property
    def setting(self):
        """What the configuration is: (dataset, model[, λ, σ²]) — λ, σ² for mixtures only."""
        if self.is_mixture:
            return (self.dataset, self.model, self.kl_weight, self.prior_variance)
        return (self.dataset, self.model)

    def values(self, key):
        """The value of a dotted metric key (``test.accuracy``) per seed; None where absent."""
        return [sweep.flatten(metrics).get(key) for _, metrics in sorted(self.runs.items())]

    def stats(self, key):
        """{"mean", "std", "n"} of a dotted metric key over seeds (module docstring)."""
        return stats_of(self.values(key))


def _identity(path, seed, metrics):
    missing = [f for f in REQUIRED_FIELDS if metrics.get(f) is None]
    if missing:
        raise ValueError(
            f"{os.path.join(path, f'seed_{seed}', runs.METRICS_FILE)} lacks {', '.join(missing)}; "
            "is it a metrics.json of experiments.mixture_mnist?"
        )
    return (
        str(metrics["dataset"]),
        str(metrics["model"]),
        str(metrics["label"]),
        float(metrics["kl_weight"]),
        float(metrics["prior_variance"]),
    )


def _configuration(name, by_seed, path, root_index=0):
    identities = {seed: _identity(path, seed, m) for seed, m in by_seed.items()}
    distinct = set(identities.values())
    if len(distinct) > 1:
        listed = "; ".join(f"seed {s}: {i}" for s, i in sorted(identities.items()))
        raise ValueError(
            f"the seeds of {name} are different configurations "
            f"(dataset, model, label, λ, σ²): {listed}"
        )
    dataset, model, label, kl_weight, prior_variance = distinct.pop()
    return Configuration(
        name, dataset, model, label, kl_weight, prior_variance, dict(by_seed), path, root_index
    )


def _rank(order, value):
    """The position of ``value`` in ``order`` (values not in it after all of them)."""
    return order.index(value) if value in order else len(order)


def _order(config):
    return (
        _rank(DATASET_ORDER, config.dataset),
        config.dataset,
        _rank(MODEL_ORDER, config.model),
        config.model,
        -config.kl_weight if config.is_mixture else 0.0,
        config.prior_variance if config.is_mixture else 0.0,
        config.root_index,
        config.name,
    )


def root_labels(roots):
    """The label of each root in the names of folders found under several roots: its basename
    when the basenames of ``roots`` are distinct, else the root as given (normalised: no
    trailing "/"), which ``uqmix.sweep.sweep_roots`` has made distinct."""
    paths = [os.path.normpath(root) for root in roots]
    basenames = [os.path.basename(path) for path in paths]
    return basenames if len(set(basenames)) == len(basenames) else paths


def load_study(roots):
    """The configurations of the sweeps under ``roots`` (one root, str, or a list of them),
    ordered by dataset, model, λ (↓), σ², the root's position in ``roots``, name.

    A folder name found under one root is the configuration's name, one found under several
    gives a configuration per root named ``<root label>/<folder>`` (``root_labels``).  Raises
    ValueError when a root is given twice or holds no finished run
    (``uqmix.sweep.collect_roots``), a metrics.json lacks the identifying fields, or the
    seeds of one folder disagree on them.
    """
    collected = sweep.collect_roots(roots)
    labels = root_labels([root for root, _ in collected])
    count = collections.Counter(folder for _, found in collected for folder in found)
    configurations = {}
    for index, (root, found) in enumerate(collected):
        for folder, by_seed in found.items():
            name = folder if count[folder] == 1 else f"{labels[index]}/{folder}"
            if name in configurations:  # the names are distinct by construction
                raise ValueError(f"ambiguous: two configurations would be named {name!r}.")
            configurations[name] = _configuration(name, by_seed, os.path.join(root, folder), index)
    return sorted(configurations.values(), key=_order)


def datasets_of(configurations):
    return list(dict.fromkeys(c.dataset for c in configurations))


def _most_seeds(group):
    """The configuration with most seeds; the first in ``group`` among equals — callers pass
    groups in study order (``_order``), so a tie goes to the configuration of the earlier
    root given, then to the first name.  Earlier root, not the later: the order of
    ``--sweep_root`` is the one precedence the reader sees (the report's command line names
    it); which root holds newer runs is not something the report can know."""
    return max(group, key=lambda c: len(c.runs))


def _one_per_setting(configurations):
    """The configurations with duplicates of a setting reduced to the one with most seeds."""
    by_setting = collections.defaultdict(list)
    for config in configurations:
        by_setting[config.setting].append(config)
    chosen = {_most_seeds(group).name for group in by_setting.values()}
    return [c for c in configurations if c.name in chosen]


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def mixtures(configurations, kl_weight=None, prior_variance=None, dataset=None):
    """ML/VI configurations at the given λ, σ² and dataset (None = any), one per setting."""
    return _one_per_setting(
        [
            c
            for c in configurations
            if c.is_mixture
            and (kl_weight is None or _close(c.kl_weight, kl_weight))
            and (prior_variance is None or _close(c.prior_variance, prior_variance))
            and (dataset is None or c.dataset == dataset)
        ]
    )


def dataset_title(dataset):
    return DATASET_TITLES.get(dataset, dataset)


def _weight_variance_layers(configurations):
    layers = []
    for config in configurations:
        for metrics in config.runs.values():
            for layer in metrics.get("weight_variances") or {}:
                if layer not in layers:
                    layers.append(layer)
    return layers
