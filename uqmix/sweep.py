"""Sweeps: a grid of flagfiles × seeds run as separate processes, then aggregated.

Each run is ``python -m BINARY --flagfile=F --seed=S --output_dir=ROOT/NAME/seed_S
--resume [extra flags]`` where NAME is the flagfile's stem.  A run whose
``metrics.json`` exists is done and skipped, so an interrupted sweep continues
where it stopped (the runs themselves resume from their checkpoints).

``collect`` reads every ``ROOT/NAME/seed_S/metrics.json``; ``aggregate``
flattens the nested metrics to dotted keys and reports, per NAME and key,
mean, standard deviation (ddof = 1; 0 for a single seed) and the number of
seeds.
"""

import collections
import concurrent.futures
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

from uqmix import runs


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    flagfile: str
    seed: int
    output_dir: str

    @property
    def done(self):
        return os.path.exists(os.path.join(self.output_dir, runs.METRICS_FILE))


def config_name(flagfile):
    return os.path.splitext(os.path.basename(flagfile))[0]


def plan(flagfiles, seeds, output_root):
    """The runs of a sweep, in order (flagfile-major)."""
    if not flagfiles:
        raise ValueError("a sweep needs at least one flagfile.")
    if not seeds:
        raise ValueError("a sweep needs at least one seed.")
    for flagfile in flagfiles:
        if not os.path.isfile(flagfile):
            raise ValueError(f"flagfile not found: {flagfile}")
    names = [config_name(f) for f in flagfiles]
    duplicated = [n for n, c in collections.Counter(names).items() if c > 1]
    if duplicated:
        raise ValueError(f"flagfiles must have distinct names; repeated: {duplicated}")
    return [
        Run(name, flagfile, int(seed), os.path.join(output_root, name, f"seed_{int(seed)}"))
        for name, flagfile in zip(names, flagfiles)
        for seed in seeds
    ]


def command(binary, run, extra_flags=()):
    return [sys.executable, "-m", binary, f"--flagfile={run.flagfile}", f"--seed={run.seed}",
            f"--output_dir={run.output_dir}", "--resume", *extra_flags]


def _execute(binary, run, extra_flags):
    os.makedirs(run.output_dir, exist_ok=True)
    log_path = os.path.join(run.output_dir, "log.txt")
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        code = subprocess.call(command(binary, run, extra_flags), stdout=log,
                               stderr=subprocess.STDOUT)
    return run, code, time.time() - start


def run_sweep(binary, runs_to_do, parallel=1, extra_flags=(), log=print):
    """Runs the not-yet-done runs, ``parallel`` processes at a time; returns failures.

    Prints one progress line per finished run ("[k/n] name seed s: ok in 12.3 s").
    """
    todo = [r for r in runs_to_do if not r.done]
    skipped = len(runs_to_do) - len(todo)
    if skipped:
        log(f"{skipped} of {len(runs_to_do)} runs already done; skipping them.")
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(parallel))) as pool:
        futures = [pool.submit(_execute, binary, r, tuple(extra_flags)) for r in todo]
        for k, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            run, code, seconds = future.result()
            status = "ok" if code == 0 else f"FAILED (exit {code}, see {run.output_dir}/log.txt)"
            log(f"[{k}/{len(todo)}] {run.name} seed {run.seed}: {status} in {seconds:.1f} s")
            if code != 0:
                failures.append(run)
    return failures


def lookup(metrics, *path):
    """metrics[path[0]][path[1]]…, or None where a key is missing (a run did not record it)."""
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def flatten(metrics, prefix=""):
    """{"a": {"b": 1.0}, "c": [1, 2]} → {"a.b": 1.0}; non-scalar leaves are dropped."""
    flat = {}
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)):
            flat[path] = float(value)
    return flat


def collect(output_root):
    """{name: {seed: metrics dict}} for every finished run under ``output_root``."""
    found = collections.defaultdict(dict)
    if not os.path.isdir(output_root):
        raise ValueError(f"no sweep results at {output_root}")
    for name in sorted(os.listdir(output_root)):
        config_dir = os.path.join(output_root, name)
        if not os.path.isdir(config_dir):
            continue
        for seed_dir in sorted(os.listdir(config_dir)):
            path = os.path.join(config_dir, seed_dir, runs.METRICS_FILE)
            if seed_dir.startswith("seed_") and os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    found[name][int(seed_dir[len("seed_"):])] = json.load(handle)
    return dict(found)


def mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan"), 0
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0, 1
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var), len(values)


def stats_of(values):
    """{"mean", "std" (sample, ddof = 1; 0 for one value), "n"} of the finite values."""
    mean, std, n = mean_std(values)
    return {"mean": mean, "std": std, "n": n}


def format_cell(stats, fmt=".4f"):
    """"mean ± std (n)"; "value (1)" for a single seed (no spread to show); "—" when no seed
    has the number."""
    if stats is None or not stats["n"]:
        return "—"
    if stats["n"] == 1:
        return f"{stats['mean']:{fmt}} (1)"
    return f"{stats['mean']:{fmt}} ± {stats['std']:{fmt}} ({stats['n']})"


def aggregate(collected):
    """{name: {key: {"mean", "std", "n"}}} over seeds, for every scalar metric."""
    table = {}
    for name, by_seed in collected.items():
        flats = [flatten(m) for m in by_seed.values()]
        keys = sorted(set().union(*flats)) if flats else []
        table[name] = {}
        for key in keys:
            mean, std, n = mean_std([f.get(key) for f in flats])
            table[name][key] = {"mean": mean, "std": std, "n": n}
    return table


def render_markdown_table(header, rows):
    """A Markdown table from a header row and rows of already formatted cells."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}: {row}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(table, keys, names=None, digits=4, key_labels=None):
    """A Markdown table: one row per config name, one column per key, "mean ± std (n)"."""
    names = list(table) if names is None else names
    labels = key_labels or {}
    rows = []
    for name in names:
        cells = [name]
        for key in keys:
            entry = table.get(name, {}).get(key)
            if entry is None or entry["n"] == 0:
                cells.append("–")
            else:
                cells.append(f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f} ({entry['n']})")
        rows.append(cells)
    return render_markdown_table(["config"] + [labels.get(k, k) for k in keys], rows)
