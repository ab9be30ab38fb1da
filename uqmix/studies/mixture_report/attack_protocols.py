"""Which attack protocol an adversarial number was made under, and the study seen under one.

Adversarial numbers are never compared or drawn across attack protocols (the
``attack_options`` each robustness curve and adversarial-detection record carries; "not
recorded" for runs that predate them): the robustness figures are drawn once per protocol
(``figures.figure_files``: with several protocols the file name gets the protocol's slug, with
one the names of ``FIGURE_FILES`` stay) and Tables 4 and 7 are compared once per protocol
(``published_tables.published_comparison``).

Here: the identity of recorded options (``_options_key``), a configuration's seeds grouped by
them (``_by_protocol``), the protocols' order (``_protocol_rank``), names (``protocol_names``)
and file-name parts (``protocol_slug``), and the protocols of the study's robustness curves,
which the adversarial figures draw one at a time (``figure_protocols``, ``protocol_view``).
"""

import collections
import dataclasses
import json
import math
import re

NOT_RECORDED = "not recorded"

# The adversarial figures draw the robustness curves of one attack protocol each.
ONLY_PROTOCOL = "only"  # the study's one protocol (not an ``_options_key``: those are JSON)


class MixedProtocols(ValueError):
    """An adversarial figure asked for the study's one attack protocol when it has several."""


def _options_key(options):
    """A hashable identity of recorded attack options (None: not recorded)."""
    return None if options is None else json.dumps(options, sort_keys=True)


def _by_protocol(entries):
    """[(attack options or None, {seed: entry})]: the seeds' entries (robustness curves or
    adversarial_detection records, each with its ``attack_options``) grouped by those options,
    seeds without an entry left out.  The seeds of a folder share their protocol, so this is one
    group; a folder whose seeds differ gets a row per protocol, never a mean over attacks."""
    groups = {}
    for seed, entry in sorted(entries.items()):
        if entry:
            options = entry.get("attack_options") or None
            groups.setdefault(_options_key(options), (options, {}))[1][seed] = entry
    return list(groups.values())


def _attack_protocol(options):
    """The attack protocol of recorded options as the adversarial figures group curves: the
    options without the gradient samples (a curve's key S=k names those); None: not recorded."""
    if options is None:
        return None
    return {name: value for name, value in options.items() if name != "gradient_samples"}


def _protocol_rank(options):
    """The order of protocols: recorded ones first, then by preset, noise and the options."""
    shown = options or {}
    return (
        options is None,
        str(shown.get("preset", "")),
        str(shown.get("noise", "")),
        _options_key(options) or "",
    )


def _base_name(options):
    """preset/noise of recorded options; "not recorded" for None."""
    if options is None:
        return NOT_RECORDED
    return "/".join(_option_text(options.get(name)) for name in ("preset", "noise"))


def _differing_options(options_list):
    """The names of the options whose values differ among ``options_list`` (None = {})."""
    options_list = [options or {} for options in options_list]
    return sorted(
        {
            name
            for options in options_list
            for name in options
            if len({_option_text(o.get(name)) for o in options_list}) > 1
        }
    )


def protocol_names(options_list):
    """{``_options_key``: name} of distinct recorded attack options (None: not recorded):
    "preset/noise", with the options in which protocols of one such name differ appended in
    brackets ("cleverhans3_pgd/redraw [nb_iter 10]")."""
    distinct = {_options_key(options): options for options in options_list}
    by_base = collections.defaultdict(list)
    for key, options in distinct.items():
        by_base[_base_name(options)].append(key)
    names = {}
    for base, keys in by_base.items():
        differing = _differing_options([distinct[k] for k in keys]) if len(keys) > 1 else []
        for key in keys:
            shown = ", ".join(
                f"{n} {_option_text((distinct[key] or {}).get(n))}" for n in differing
            )
            names[key] = f"{base} [{shown}]" if shown else base
    return names


def protocol_slug(name):
    """A file-name part of a protocol name: runs of other characters than letters, digits,
    "_" and "." become "-" ("cleverhans3_pgd/redraw [nb_iter 10]" →
    "cleverhans3_pgd-redraw-nb_iter-10", "not recorded" → "not-recorded")."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.") or "protocol"


def _option_text(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _sample_count(key):
    try:
        return int(str(key).split("=", 1)[1])
    except (IndexError, ValueError):
        return math.inf


def _robustness_keys(config):
    keys = set()
    for metrics in config.runs.values():
        keys.update(metrics.get("robustness") or {})
    return sorted(keys, key=_sample_count)


def figure_protocols(configurations):
    """[(key, options, name)]: the attack protocols (``_attack_protocol``: the recorded options
    without the gradient samples; None = not recorded) of every robustness curve of the study,
    key = ``_options_key`` of the options, name from ``protocol_names``, in
    ``_protocol_rank`` order."""
    found = {}
    for config in configurations:
        for metrics in config.runs.values():
            for curve in (metrics.get("robustness") or {}).values():
                if curve:
                    options = _attack_protocol(curve.get("attack_options") or None)
                    found.setdefault(_options_key(options), options)
    names = protocol_names(found.values())
    ordered = sorted(found.items(), key=lambda item: _protocol_rank(item[1]))
    return [(key, options, names[key]) for key, options in ordered]


def _curve_protocol(curve):
    return _options_key(_attack_protocol(curve.get("attack_options") or None))


def protocol_view(configurations, protocol=ONLY_PROTOCOL):
    """The configurations with their robustness curves of one attack protocol only (``protocol``:
    a key of ``figure_protocols``); seeds without such a curve and configurations without any
    are left out, so that a setting's folders of one protocol are told apart by their seeds
    under it.  ONLY_PROTOCOL: the study's one protocol; MixedProtocols when it has several (an
    adversarial figure never mixes protocols)."""
    if protocol == ONLY_PROTOCOL:
        protocols = figure_protocols(configurations)
        if len(protocols) > 1:
            raise MixedProtocols(
                "the robustness curves were attacked under several protocols ("
                + "; ".join(name for _, _, name in protocols)
                + "): name one (figure_protocols)"
            )
        if not protocols:
            return []
        protocol = protocols[0][0]
    view = []
    for config in configurations:
        kept = {}
        for seed, metrics in sorted(config.runs.items()):
            curves = {
                key: curve
                for key, curve in (metrics.get("robustness") or {}).items()
                if curve and _curve_protocol(curve) == protocol
            }
            if curves:
                kept[seed] = dict(metrics, robustness=curves)
        if kept:
            view.append(dataclasses.replace(config, runs=kept))
    return view
