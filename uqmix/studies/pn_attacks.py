"""The adaptive-attack part of the Prior Network report (``pn_report``): per configuration
the attack curves' mean ± sample std over seeds, their tables and their figures.

A run's ``metrics["attacks"]`` (``pn_experiment.attack_metrics``) holds, per setting,
lists over its ``iterations`` of the success rate, the AUROC of natural vs successful
adversarial inputs (by the run's detection ``measure``) and the joint success rate, and for
C&W L2 also the median L2 distance of the successful adversarial inputs.  The settings:
``white_box``, attacks crafted on the attacked network itself, and with
``--blackbox_transfer`` ``black_box``, attacks crafted on a source network trained inside
the run (seed + 1000, ``blackbox_source_seeds`` of metrics.json) and applied to the run's network.  For
C&W L2 the "iterations" are the optimiser's ``max_iterations`` (per binary-search step),
not MIM/PGD steps.

Tables and figures come in blocks, one per recorded attack method (PGD, MIM, C&W L2), each
over the iteration counts its runs recorded; a configuration without attack curves is
listed with "—" in every block's tables and drawn in none.  In a block where some
configuration has black-box numbers, the tables get a "setting" column and such a
configuration a black-box row under its white-box row, and the figure a dashed curve in the
colour of its solid white-box curve; a configuration without black-box numbers has neither.
A study with a single non-C&W method and no black-box numbers keeps the plain headings
("Adaptive white-box attack: success rate") and the single figure ``attack_curves.png``.
"""

import os

import numpy as np

from uqmix import plotting
from uqmix.sweep import format_cell, lookup, render_markdown_table, stats_of

FIGURE_FILE = "attack_curves.png"
ATTACK_QUANTITIES = (
    ("success_rate", "success rate"),
    ("auroc", "AUROC (natural vs successful)"),
    ("jsr", "joint success rate"),
)
MEDIAN_L2 = ("median_l2", "median L2 of successful attacks")
# setting recorded by the run → (key of the configuration's summary, label in the tables)
SETTINGS = {"white_box": ("attack", "white-box"), "black_box": ("black_box", "black-box")}
METHOD_NAMES = {"pgd": "PGD", "mim": "MIM", "cw": "C&W L2"}
METHOD_ORDER = ("pgd", "mim", "cw")
SIGMAS = 3.0
CW_NOTE = (
    "C&W L2: the columns are the attack's max_iterations (optimiser steps per binary-search "
    "step), not MIM/PGD iterations."
)
BLACK_BOX_NOTE = (
    "white-box: attacks crafted on the attacked network itself; black-box: crafted on a "
    "source network trained inside the run (seed + 1000, `blackbox_source_seeds` of metrics.json) "
    "and applied to the run's network."
)


def method_name(method):
    return METHOD_NAMES.get(method, "method not recorded" if method is None else str(method))


def attack_iterations(study):
    """The union of the iteration counts (C&W: max_iterations) every run recorded."""
    return sorted(
        {
            int(i)
            for by_seed in study.values()
            for m in by_seed.values()
            for i in (lookup(m, "attacks", "iterations") or [])
        }
    )


def attack_series(by_seed, quantity, iterations, setting="white_box"):
    """[seeds, T] values of ``quantity`` of ``setting`` at ``iterations`` (NaN where a run
    lacks one)."""
    rows = []
    for metrics in by_seed.values():
        recorded = lookup(metrics, "attacks", "iterations") or []
        values = lookup(metrics, "attacks", setting, quantity) or []
        at = {int(i): v for i, v in zip(recorded, values)}
        rows.append([np.nan if at.get(i) is None else float(at[i]) for i in iterations])
    return np.asarray(rows, np.float64)


def _series_stats(rows):
    """``stats_of`` per iteration count (column); missing (NaN) entries are not counted."""
    return [stats_of(column.tolist()) for column in rows.T]


def _recorded(by_seed, key):
    return next(
        (v for v in (lookup(m, "attacks", key) for m in by_seed.values()) if v is not None), None
    )


def summarize_attacks(by_seed, iterations):
    """The attack entries of one configuration's summary: ``attack_measure``,
    ``attack_method``, ``attack_criterion`` (as recorded; None if not), ``attack`` (white-box)
    and, only when some seed recorded black-box numbers, ``black_box``: each
    {quantity: [stats per iteration count]}, with ``median_l2`` where the runs recorded it."""
    entry = {
        "attack_measure": _recorded(by_seed, "measure"),
        "attack_method": _recorded(by_seed, "method"),
        "attack_criterion": _recorded(by_seed, "criterion"),
    }
    for setting, (key, _) in SETTINGS.items():
        if setting != "white_box" and not any(
            lookup(m, "attacks", setting) for m in by_seed.values()
        ):
            continue
        quantities = [q for q, _ in ATTACK_QUANTITIES]
        if any(lookup(m, "attacks", setting, MEDIAN_L2[0]) for m in by_seed.values()):
            quantities.append(MEDIAN_L2[0])
        entry[key] = {
            q: _series_stats(attack_series(by_seed, q, iterations, setting)) for q in quantities
        }
    return entry


def _settings(config):
    """[(summary key, setting label)] of the settings ``config`` has numbers for."""
    return [(key, label) for key, label in SETTINGS.values() if key in config]


def _has_numbers(config):
    return any(
        s["n"] for key, _ in _settings(config) for stats in config[key].values() for s in stats
    )


def attack_blocks(summary):
    """[(method, [configuration names], [column indices into summary["iterations"]])], one
    per recorded attack method (PGD, MIM, C&W L2, then others); a configuration without
    attack numbers is in every block, the columns are the iteration counts some attacked
    configuration of the block recorded."""
    configs = summary["configurations"]
    attacked = {name: c["attack_method"] for name, c in configs.items() if _has_numbers(c)}
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    methods = sorted(set(attacked.values()), key=lambda m: (order.get(m, len(order)), str(m)))
    blocks = []
    for method in methods:
        names = [n for n in configs if attacked.get(n, method) == method]
        columns = [
            k
            for k in range(len(summary["iterations"]))
            if any(
                stats[k]["n"]
                for n in names
                if n in attacked
                for key, _ in _settings(configs[n])
                for stats in configs[n][key].values()
            )
        ]
        blocks.append((method, names, columns))
    return blocks


def _is_plain(blocks):
    """One non-C&W block: the headings and the figure name of a study before C&W and
    several methods (no method named)."""
    return len(blocks) == 1 and blocks[0][0] != "cw"


def _quantities(configs, names):
    has_l2 = any(MEDIAN_L2[0] in configs[n][key] for n in names for key, _ in _settings(configs[n]))
    return ATTACK_QUANTITIES + ((MEDIAN_L2,) if has_l2 else ())


def attack_markdown(summary):
    """The Markdown lines of the attack sections of ``tables.md`` (empty without attacks)."""
    configs, iterations = summary["configurations"], summary["iterations"]
    blocks = attack_blocks(summary)
    plain = _is_plain(blocks)
    parts = []
    for method, names, columns in blocks:
        black = any("black_box" in configs[n] for n in names)
        tag = "" if plain else f", {method_name(method)}"
        notes = ([CW_NOTE] if method == "cw" else []) + ([BLACK_BOX_NOTE] if black else [])
        header = ["configuration", "model"] + (["setting"] if black else [])
        header += ["criterion", "detection measure"]
        unit = "max it" if method == "cw" else "it"
        header += [f"{iterations[k]} {unit}" for k in columns]
        for quantity, title in _quantities(configs, names):
            fmt = ".3f"
            rows = []
            for name in names:
                config = configs[name]
                for key, label in _settings(config):
                    stats = config[key].get(quantity)
                    row = [f"`{name}`", config["label"]] + ([label] if black else [])
                    row += [
                        config["attack_criterion"] or "not recorded",
                        str(config["attack_measure"]),
                    ]
                    row += [format_cell(stats[k] if stats else None, fmt) for k in columns]
                    rows.append(row)
            kind = "attack (white-box and black-box transfer)" if black else "white-box attack"
            parts += ["", f"## Adaptive {kind}{tag}: {title}", ""]
            parts += [" ".join(notes), ""] if notes else []
            parts.append(render_markdown_table(header, rows))
    return parts


def _line_styles(index):
    """(white-box, black-box) (line style, marker) of the ``index``-th configuration of a
    block, its colour being C<index mod 10>: solid and dashed for the first ten, dotted and
    dash-dotted for the next ten, then the same again with the next marker of
    ``plotting.MARKERS``, so no two curves of a panel look alike; ``ValueError`` beyond."""
    tens, marker = index // 10, index // 20
    if marker >= len(plotting.MARKERS):
        raise ValueError(
            f"an attack figure draws at most {20 * len(plotting.MARKERS)} configurations "
            "distinctly; make several reports (fewer roots in --sweep_root)."
        )
    first = 2 * (tens % 2)
    return tuple((plotting.LINE_STYLES[first + k], plotting.MARKERS[marker]) for k in range(2))


def block_figure(summary, block, plain=True):
    """The figure of one attack block: a panel per quantity, per configuration its white-box
    curve (solid) and black-box curve (dashed, same colour), mean ± 3 sample std."""
    method, names, columns = block
    configs = summary["configurations"]
    drawn = [n for n in names if _has_numbers(configs[n])]
    black = any("black_box" in configs[n] for n in drawn)
    panels, spreads, seeds, styles = {}, {}, [], {}
    for quantity, title in _quantities(configs, drawn):
        panels[title], spreads[title] = {}, {}
        for index, name in enumerate(drawn):
            config = configs[name]
            for (key, setting), (style, marker) in zip(_settings(config), _line_styles(index)):
                stats = (
                    [config[key][quantity][k] for k in columns] if quantity in config[key] else []
                )
                if not any(s["n"] for s in stats):
                    continue
                seeds.append(max(s["n"] for s in stats))
                detail = ", black-box" if key == "black_box" else ""
                label = f"{config['label']}: {name}{detail} (n={seeds[-1]})"
                panels[title][label] = [s["mean"] if s["n"] else None for s in stats]
                spreads[title][label] = [SIGMAS * s["std"] if s["n"] > 1 else 0.0 for s in stats]
                styles[label] = (f"C{index % 10}", style, marker)
    title = (
        "Adaptive attacks: white-box (solid), black-box transfer (dashed)"
        if black
        else "Adaptive white-box attacks"
    )
    return plotting.attack_curves(
        [summary["iterations"][k] for k in columns],
        panels,
        spreads=spreads,
        seeds=seeds,
        sigmas=SIGMAS,
        title=title if plain else f"{title}, {method_name(method)}",
        xlabel="C&W L2 max_iterations" if method == "cw" else "attack iterations",
        styles=styles,
        free_y=(MEDIAN_L2[1],),
    )


def attack_figure(summary, method=None):
    """The figure of the block of ``method`` (default: the first block)."""
    blocks = attack_blocks(summary)
    block = next((b for b in blocks if method is None or b[0] == method), None)
    if block is None:
        raise ValueError(f"no attack curves of {method_name(method)} in the study.")
    return block_figure(summary, block, plain=_is_plain(blocks))


def is_figure_file(name):
    """True for a file name ``attack_figures`` may give: ``attack_curves.png`` or
    ``attack_curves_<method>.png``."""
    stem = os.path.splitext(FIGURE_FILE)[0]
    return name == FIGURE_FILE or (name.startswith(stem + "_") and name.endswith(".png"))


def attack_figures(summary):
    """{file name: figure}: ``attack_curves.png`` for a plain study (``_is_plain``), else
    ``attack_curves_<method>.png`` per block (``..._unknown.png`` for an unrecorded method);
    {} without attack numbers."""
    blocks = attack_blocks(summary)
    if _is_plain(blocks):
        return {FIGURE_FILE: block_figure(summary, blocks[0])}
    return {
        f"attack_curves_{block[0] or 'unknown'}.png": block_figure(summary, block, plain=False)
        for block in blocks
    }
