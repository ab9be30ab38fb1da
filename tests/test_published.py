"""The published reference tables (uqmix/studies/published/*.json) and the side-by-side verdicts
of mixture_report and pn_report on hand-written sweep trees with hand-computed verdicts."""

import os
import re

import pytest

from tests.conftest import REPO_ROOT
from uqmix import runs
from uqmix.studies import mixture_report, pn_report, published

PUBLISHED_MD = os.path.join(os.path.dirname(REPO_ROOT), "shared", "PUBLISHED.md")
SECTIONS = {published.MIXTURE: "Infinite mixtures", published.PRIOR_NETWORKS: "Prior Networks"}
NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?"


# -- the transcription -----------------------------------------------------------------------
def _markdown_tables(section):
    """{table number: {row label: {column label: cell text}}} of one paper's section."""
    tables = {}
    for block in re.split(r"\n(?=Table \d+ — )", section)[1:]:
        number = re.match(r"Table (\d+) — ", block)[1]
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if not lines:
            continue  # Table 6 is described in prose only
        split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
        columns = split[0][1:]
        tables[number] = {cells[0]: dict(zip(columns, cells[1:])) for cells in split[2:]}
    return tables


def _published_sections():
    if not os.path.exists(PUBLISHED_MD):
        pytest.skip(f"{PUBLISHED_MD} is not on this machine")
    with open(PUBLISHED_MD, encoding="utf-8") as handle:
        text = handle.read()
    sections = text.split("\n## ")[1:]
    return {
        name: next(s for s in sections if s.startswith("") and title in s.splitlines()[0])
        for name, title in SECTIONS.items()
    }


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_reference_file_transcribes_published_md(name):
    markdown = _markdown_tables(_published_sections()[name])
    reference = published.load_reference(name)
    assert set(reference["tables"]) == set(markdown)
    for number, rows in markdown.items():
        spec = reference["tables"][number]
        assert list(spec["rows"]) == list(rows), number
        for row, by_column in rows.items():
            assert list(spec["rows"][row]) == list(by_column) == spec["columns"], (number, row)
            for column, text in by_column.items():
                cell = spec["rows"][row][column]
                printed = [float(x) for x in re.findall(NUMBER, re.sub(r"Table \d+", "", text))]
                stored = [v for v in (cell["value"], cell["spread"]) if v is not None]
                assert stored == printed, (number, row, column, text)
                if cell["value"] is None:
                    assert text in ("not legible", "–") and cell["note"], (number, row, column)
                if cell["spread"] is None and cell["value"] is not None:
                    assert "±" not in text and cell["note"]


def test_reference_files_state_their_spread():
    mixture = published.load_reference(published.MIXTURE)
    prior_networks = published.load_reference(published.PRIOR_NETWORKS)
    assert (mixture["spread"], mixture["spread_sigmas"], mixture["seeds"]) == (
        "1 std over 10 seeds",
        1.0,
        10,
    )
    assert (prior_networks["spread"], prior_networks["spread_sigmas"], prior_networks["seeds"]) == (
        "± 2σ over 5 initialisations",
        2.0,
        5,
    )
    # "not legible" entries are null with a note
    cell = mixture["tables"]["1"]["rows"]["FMNIST VI"]["1.5"]
    assert cell["value"] is None and "not legible" in cell["note"]


# -- verdicts ----------------------------------------------------------------------------------
MIXTURE_LIKE = {"spread_sigmas": 1.0}
PN_LIKE = {"spread_sigmas": 2.0}


@pytest.mark.parametrize(
    "ours, cell, reference, verdict, difference",
    [
        # band = 2 · 0.0006 = 0.0012
        (0.976, {"value": 0.975, "spread": 0.0006}, MIXTURE_LIKE, published.WITHIN, 0.001),
        (0.9738, {"value": 0.975, "spread": 0.0006}, MIXTURE_LIKE, published.WITHIN, -0.0012),
        (0.9763, {"value": 0.975, "spread": 0.0006}, MIXTURE_LIKE, published.OUTSIDE, 0.0013),
        # printed ± 2σ = 0.1 → σ = 0.05 → band 0.1
        (0.59, {"value": 0.5, "spread": 0.1}, PN_LIKE, published.WITHIN, 0.09),
        (0.39, {"value": 0.5, "spread": 0.1}, PN_LIKE, published.OUTSIDE, -0.11),
        (0.61, {"value": 0.5}, PN_LIKE, published.NO_SPREAD, 0.11),
        (0.61, {"value": None, "spread": None}, PN_LIKE, published.NOT_PRINTED, None),
        (None, {"value": 0.5, "spread": 0.1}, PN_LIKE, published.NOT_RUN, None),
    ],
)
def test_value_verdict(ours, cell, reference, verdict, difference):
    got, diff = published.value_verdict(ours, cell, reference)
    assert got == verdict
    assert diff == (None if difference is None else pytest.approx(difference, abs=1e-12))


@pytest.mark.parametrize(
    "ours, paper, verdict",
    [
        (0.003, 0.001, published.SAME),
        (-0.002, -0.01, published.SAME),
        (-0.003, 0.001, published.REVERSED),
        (0.0, 0.001, published.REVERSED),
        (0.004, 0.0, published.TIE),
        (None, 0.001, published.NOT_RUN),
        (0.001, None, published.NOT_PRINTED),
    ],
)
def test_direction_verdict(ours, paper, verdict):
    assert published.direction_verdict(ours, paper) == verdict


def test_protocol_differences_name_every_shortening():
    reference = {"protocol": {"epochs": 20, "batch": 200}, "seeds": 5}
    full = {s: {"epochs": "20", "batch": 200} for s in range(5)}
    assert published.protocol_differences(full, reference) == []
    assert published.protocol_label([]) == "full protocol"
    short = {0: {"epochs": "3", "batch": 200}, 1: {"epochs": "20"}}
    assert published.protocol_differences(short, reference) == [
        "epochs 20, 3 (full: 20)",
        "batch 200 and unrecorded (full: 200)",
        "2 of 5 seeds",
    ]
    assert published.protocol_label(["2 of 5 seeds"]) == "SHORTENED: 2 of 5 seeds"


def test_read_flags(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text("--epochs=3\n# comment\n--hidden=128,128\n--flag_with_eq=a=b\n")
    assert published.read_flags(str(path)) == {
        "epochs": "3",
        "hidden": "128,128",
        "flag_with_eq": "a=b",
    }
    assert published.read_flags(str(tmp_path / "absent.cfg")) == {}


# -- the mixture report ------------------------------------------------------------------------
FULL_FLAGS = "--batch_size=200\n--steps=30000\n"


def _mixture_run(
    root,
    name,
    seed,
    dataset,
    model,
    accuracy,
    kl_weight=1.0,
    prior_variance=1.0,
    steps=30000,
    entropy_auroc=None,
    flags=FULL_FLAGS,
):
    metrics = {
        "dataset": dataset,
        "model": model,
        "label": f"{model} {kl_weight} {prior_variance}",
        "kl_weight": kl_weight,
        "prior_variance": prior_variance,
        "seed": seed,
        "steps": steps,
        "train_samples": 5,
        "test_samples": 100,
        "test": {"accuracy": accuracy},
    }
    if entropy_auroc is not None:
        metrics["ood"] = {"total_uncertainty": {"auroc": entropy_auroc}}
    folder = os.path.join(root, name, f"seed_{seed}")
    runs.atomic_write_json(os.path.join(folder, runs.METRICS_FILE), metrics)
    with open(os.path.join(folder, runs.FLAGS_FILE), "w", encoding="utf-8") as handle:
        handle.write(flags)


@pytest.fixture()
def mixture_tree(tmp_path):
    root = str(tmp_path / "mixture")
    # MNIST λ = σ² = 1: ML mean 0.974 (published 0.973 ± 0.97e-3: +0.001, band 0.00194 →
    # within), VI mean 0.971 (0.974 ± 0.78e-3: −0.003, band 0.00156 → outside); ML − VI:
    # ours +0.003, published −0.001 → reversed.  Entropy AUROC (Table 3): ML 0.970 (0.976 ±
    # 0.41e-2: band 0.0082 → within), VI 0.930 (0.932): ML − VI +0.040 vs +0.044 → same.
    for seed, (ml, vi) in enumerate([(0.973, 0.970), (0.975, 0.972)]):
        _mixture_run(root, "ml", seed, "mnist", "ml", ml, entropy_auroc=0.97)
        _mixture_run(root, "vi", seed, "mnist", "vi", vi, entropy_auroc=0.93)
    # σ² = 3, ML, shortened to 3,000 steps, one seed: 0.972 vs 0.969 ± 1.18e-3 → outside.
    _mixture_run(root, "ml3", 0, "mnist", "ml", 0.972, prior_variance=3.0, steps=3000)
    return root


def _record(comparison, table, row, column):
    return next(r for r in comparison[table]["values"] if (r["row"], r["column"]) == (row, column))


def test_mixture_verdicts_against_hand_computed_cases(mixture_tree):
    configurations = mixture_report.load_study(mixture_tree)
    comparison = mixture_report.published_comparison(configurations)
    assert set(comparison) == {"1", "2", "3", "4", "5", "7"}
    ml = _record(comparison, "1", "MNIST ML", "1")
    assert (ml["configuration"], ml["verdict"]) == ("ml", published.WITHIN)
    assert ml["difference"] == pytest.approx(0.001) and ml["band"] == pytest.approx(0.00194)
    assert ml["protocol"] == "SHORTENED: 2 of 10 seeds"
    vi = _record(comparison, "1", "MNIST VI", "1")
    assert (vi["verdict"], vi["difference"]) == (published.OUTSIDE, pytest.approx(-0.003))
    ml3 = _record(comparison, "1", "MNIST ML", "3")
    assert ml3["verdict"] == published.OUTSIDE
    assert ml3["protocol"] == "SHORTENED: steps 3000 (full: 30000); 1 of 10 seeds"
    assert _record(comparison, "1", "MNIST ML", "1.5")["verdict"] == published.NOT_RUN
    assert _record(comparison, "1", "FMNIST VI", "1.5")["verdict"] == published.NOT_PRINTED
    table5 = _record(comparison, "5", "MNIST", "ML")
    assert (table5["verdict"], table5["difference"]) == (published.NO_SPREAD, pytest.approx(0.001))
    # Table 2 λ = 1 is the same configuration as Table 1 σ² = 1
    assert _record(comparison, "2", "MNIST ML", "λ = 1")["configuration"] == "ml"
    entropy = _record(comparison, "3", "entropy", "MNIST ML")
    assert (entropy["verdict"], entropy["difference"]) == (published.WITHIN, pytest.approx(-0.006))

    def direction(table, row_or_column):
        found = [
            d
            for d in comparison[table]["directions"]
            if row_or_column in (d["ml"]["row"], d["ml"]["column"])
            and d["ml"]["configuration"] == "ml"
        ]
        (only,) = found
        return published.direction_row(
            [],
            only["ml"]["ours"],
            only["vi"]["ours"],
            only["ml"]["published"],
            only["vi"]["published"],
        )

    assert direction("1", "1") == ["+0.0030", "-0.0010", published.REVERSED]
    assert direction("3", "entropy") == ["+0.0400", "+0.0440", published.SAME]


def test_mixture_tables_md_has_the_side_by_side_section(mixture_tree, tmp_path):
    report = mixture_report.write_report(mixture_tree, str(tmp_path / "out"))
    text = report["tables"]
    assert "## Side by side with the published tables (Däubener & Fischer)" in text
    for table in ("1", "2", "3", "4", "5", "7"):
        assert f"### Table {table}:" in text
    assert (
        "| MNIST VI | 1 | `vi` | 0.9710 ± 0.0014 (2) | 0.974 ± 0.00078 | -0.0030 | 0.0016 "
        "| outside it | SHORTENED: 2 of 10 seeds |"
    ) in text
    summary = runs.read_json(str(tmp_path / "out" / mixture_report.SUMMARY_FILE))
    assert summary["published"]["1"]["values"][0]["row"] == "MNIST VI"


# -- the Prior Network report ------------------------------------------------------------------
def _pn_run(root, name, seed, loss, error, epochs, kind="prior_network"):
    metrics = {
        "model_kind": kind,
        "loss": loss,
        "adversarial_training": False,
        "num_networks": 5 if kind == "ensemble" else 1,
        "error": error,
        "ood_detection": {},
    }
    folder = os.path.join(root, name, f"seed_{seed}")
    runs.atomic_write_json(os.path.join(folder, runs.METRICS_FILE), metrics)
    with open(os.path.join(folder, runs.FLAGS_FILE), "w", encoding="utf-8") as handle:
        handle.write(f"--epochs={epochs}\n--seed={seed}\n")


def test_pn_verdicts_against_hand_computed_cases(tmp_path):
    root = str(tmp_path / "pn")
    _pn_run(root, "rkl", 0, "reverse_kl", 0.005, 3)
    _pn_run(root, "rkl", 1, "reverse_kl", 0.006, 3)  # 0.55 % vs 0.5 ± 0.1 → within
    _pn_run(root, "kl", 0, "forward_kl", 0.008, 3)  # 0.8 % vs 0.6 ± 0.1 → outside
    _pn_run(root, "dnn", 0, "cross_entropy", 0.003, 3)
    _pn_run(root, "ens", 0, "cross_entropy", 0.004, 3, kind="ensemble")  # 0.5, no spread
    _pn_run(root, "rkl_full", 0, "reverse_kl", 0.009, 20)
    _pn_run(root, "kl_full", 0, "forward_kl", 0.007, 20)
    _pn_run(root, "rkl_adv", 0, "reverse_kl", 0.5, 3)
    runs.atomic_write_json(
        os.path.join(root, "rkl_adv", "seed_0", runs.METRICS_FILE),
        {"loss": "reverse_kl", "adversarial_training": True, "error": 0.5},
    )
    comparison = pn_report.published_comparison(pn_report.load_study(root), root)
    by_name = {r["configuration"]: r for r in comparison["values"]}
    assert set(by_name) == {"rkl", "kl", "dnn", "ens", "rkl_full", "kl_full"}  # no -ADV column
    assert by_name["rkl"]["ours"]["mean"] == pytest.approx(0.55)
    assert (by_name["rkl"]["verdict"], by_name["rkl"]["difference"]) == (
        published.WITHIN,
        pytest.approx(0.05),
    )
    assert by_name["rkl"]["band"] == pytest.approx(0.1)
    assert by_name["kl"]["verdict"] == published.OUTSIDE
    assert (by_name["ens"]["column"], by_name["ens"]["verdict"]) == (
        "ensemble of 5",
        published.NO_SPREAD,
    )
    assert by_name["rkl"]["protocol"] == "SHORTENED: epochs 3 (full: 20); 2 of 5 seeds"
    assert by_name["rkl_full"]["protocol"] == "SHORTENED: 1 of 5 seeds"
    pairs = {
        (d["a"]["configuration"], d["b"]["configuration"]): published.direction_row(
            [], d["a"]["ours"], d["b"]["ours"], d["a"]["published"], d["b"]["published"], fmt=".2f"
        )[-1]
        for d in comparison["directions"]
    }
    # 3-epoch runs are never paired with 20-epoch ones
    assert pairs == {
        ("kl", "rkl"): published.SAME,  # +0.25 vs +0.1
        ("dnn", "rkl"): published.TIE,  # −0.25 vs 0
        ("kl_full", "rkl_full"): published.REVERSED,
    }  # −0.2 vs +0.1
    text = pn_report.published_markdown(comparison)
    assert (
        "| `kl` | PN-KL | 0.80 (1) | 0.6 ± 0.1 | +0.20 | 0.10 | outside it "
        "| SHORTENED: epochs 3 (full: 20); 1 of 5 seeds |"
    ) in text
