"""The two papers' published tables as data, and the verdicts of our numbers against them.

``published/mixture.json`` (Däubener & Fischer) and ``published/prior_networks.json``
(Malinin & Gales) transcribe the tables of ``../shared/PUBLISHED.md`` cell by cell:
``tables[<number>]["rows"][<row label>][<column label>] = {"value", "spread", "note"}``
with the row and column labels of the Markdown tables.  ``value`` is the printed number,
``spread`` the printed ± term (null when the paper prints none), ``note`` why a value or
spread is missing ("not legible in our copy", "not reported", a value taken from another
table).  ``spread_sigmas`` says how many standard deviations the printed spread is
(mixture paper: 1 std over 10 seeds; Prior Network paper: 2σ over 5 initialisations), and
``protocol`` the run settings of the paper's full protocol that a run is checked against.

Verdicts (``value_verdict``, ``direction_verdict``):

* **within the published spread**: |ours − published| ≤ K · σ_pub, where σ_pub = printed
  spread / ``spread_sigmas`` is the paper's standard deviation over seeds and K = 2.
  Why 2: if our seeds scatter as the paper's (std σ), our n-seed mean minus their m-seed
  mean has std σ·√(1/n + 1/m) — 0.66 σ for n = 3, m = 10 and at most 1.1 σ for n ≥ 1,
  m ≥ 5 — so a difference beyond 2 σ_pub is one that seed noise explains in at most about
  5 % of cases (n ≥ 3).  For the Prior Network paper the band is the printed ± 2σ itself.
* **outside it**: a published spread exists and |ours − published| > K · σ_pub.
* **no published spread**: the paper prints the value alone; only the difference is given.
* **direction reversed** (comparisons of two configurations, e.g. ML vs VI): the published
  difference A − B is non-zero and ours has the opposite sign or is zero;
  **same direction** when the signs agree; **published tie** when the published A − B is 0
  (then the paper claims no order and ours is only reported).

Our value is the mean over the seeds of a configuration (``uqmix.sweep.stats_of``).
"""

import json
import math
import os

from uqmix.sweep import format_cell, render_markdown_table

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published")
MIXTURE, PRIOR_NETWORKS = "mixture", "prior_networks"
K = 2.0

WITHIN = "within the published spread"
OUTSIDE = "outside it"
NO_SPREAD = "no published spread"
NOT_RUN = "not run"
NOT_PRINTED = "not printed"
SAME = "same direction"
REVERSED = "direction reversed"
TIE = "published tie"


def load_reference(name):
    """The reference tables of ``name`` (``MIXTURE`` or ``PRIOR_NETWORKS``) as a dict."""
    path = os.path.join(REFERENCE_DIR, f"{name}.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def band(reference, cell):
    """K · σ_pub of a published cell (None without a printed spread)."""
    if cell.get("spread") is None:
        return None
    return K * cell["spread"] / reference["spread_sigmas"]


def value_verdict(ours, cell, reference):
    """(verdict, ours − published) of our mean ``ours`` against a published cell."""
    if cell.get("value") is None:
        return NOT_PRINTED, None
    if ours is None or not math.isfinite(ours):
        return NOT_RUN, None
    difference = ours - cell["value"]
    width = band(reference, cell)
    if width is None:
        return NO_SPREAD, difference
    # a relative tolerance so that a difference equal to the band (up to rounding) is inside
    return (WITHIN if abs(difference) <= width * (1 + 1e-9) else OUTSIDE), difference


def direction_verdict(ours_difference, published_difference):
    """Verdict of our A − B against the published A − B (module docstring)."""
    if published_difference is None:
        return NOT_PRINTED
    if ours_difference is None or not math.isfinite(ours_difference):
        return NOT_RUN
    if math.isclose(published_difference, 0.0, abs_tol=1e-12):
        return TIE
    if ours_difference * published_difference > 0:
        return SAME
    return REVERSED


def read_flags(path):
    """{flag name: value string} of a flags.cfg (``--name=value`` lines); {} when absent."""
    if not os.path.exists(path):
        return {}
    flags = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("--") and "=" in line:
                name, value = line[2:].split("=", 1)
                flags[name] = value
    return flags


def _shown(value):
    """A setting as text, numbers in their shortest form ("3000", not "3000.0")."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _same_setting(value, expected):
    try:
        return math.isclose(float(value), float(expected), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(value) == str(expected)


def protocol_differences(settings_by_seed, reference):
    """How runs differ from the paper's full protocol, as short phrases ([] = the full protocol).

    settings_by_seed: {seed: {setting: value}} read from each run's metrics.json and
    flags.cfg.  Each ``reference["protocol"]`` setting a run has with another value is
    named with the values found ("epochs 3 (full: 20)"); a setting no run records
    is named "not recorded"; fewer seeds than the paper's is "3 of 10 seeds".
    """
    phrases = []
    for setting, expected in reference["protocol"].items():
        found = [s.get(setting) for s in settings_by_seed.values()]
        recorded = sorted({_shown(v) for v in found if v is not None})
        if not recorded:
            phrases.append(f"{setting} not recorded")
        elif None in found or not all(_same_setting(v, expected) for v in recorded):
            shown = ", ".join(recorded) + (" and unrecorded" if None in found else "")
            phrases.append(f"{setting} {shown} (full: {expected})")
    if len(settings_by_seed) < reference["seeds"]:
        phrases.append(f"{len(settings_by_seed)} of {reference['seeds']} seeds")
    return phrases


def protocol_label(phrases):
    return "full protocol" if not phrases else "SHORTENED: " + "; ".join(phrases)


def _number(value, fmt):
    return "—" if value is None else f"{value:{fmt}}"


def published_text(cell):
    """The published cell as printed (value ± spread, shortest form), or its note."""
    if cell.get("value") is None:
        return cell.get("note") or "—"
    text = f"{cell['value']:g}"
    return text + (f" ± {cell['spread']:g}" if cell.get("spread") is not None else "")


def comparison_row(label, ours, cell, reference, protocol, fmt=".4f"):
    """A Markdown row: label, ours (mean ± std (n)), published, difference, band, verdict,
    protocol.  ``ours``: stats {"mean", "std", "n"} or None."""
    mean = ours["mean"] if ours and ours.get("n") else None
    verdict, difference = value_verdict(mean, cell, reference)
    width = band(reference, cell)
    return label + [
        format_cell(ours, fmt) if ours else "—",
        published_text(cell),
        _number(difference, "+" + fmt),
        _number(width, fmt),
        verdict,
        protocol,
    ]


VALUE_HEADER = [
    "ours (mean ± std (n))",
    "published",
    "ours − published",
    f"± {K:g}σ band",
    "verdict",
    "our runs vs the paper's protocol",
]
DIRECTION_HEADER = ["ours A − B", "published A − B", "verdict"]


def direction_row(label, ours_a, ours_b, cell_a, cell_b, fmt=".4f"):
    """A Markdown row comparing A − B of ours and of the paper (``direction_verdict``)."""

    def mean(stats):
        return stats["mean"] if stats and stats.get("n") else None

    ours = None if mean(ours_a) is None or mean(ours_b) is None else mean(ours_a) - mean(ours_b)
    published = (
        None
        if cell_a.get("value") is None or cell_b.get("value") is None
        else cell_a["value"] - cell_b["value"]
    )
    return label + [
        _number(ours, "+" + fmt),
        _number(published, "+" + fmt),
        direction_verdict(ours, published),
    ]


def render(header, rows):
    return render_markdown_table(header, rows)
