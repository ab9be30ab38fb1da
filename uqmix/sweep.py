"""Sweeps: a grid of flagfiles × seeds run as separate processes, then aggregated.

Each run is ``python -m BINARY --flagfile=F --seed=S --output_dir=ROOT/NAME/seed_S
--resume [extra flags]`` where NAME is the flagfile's stem.  A run is *done*
only when its folder holds ``metrics.json`` and a record (``uqmix.runs``:
binary, uqmix version, every flag) equal to the record of the run asked for,
which is computed by parsing that command line with the binary's option table
(``EXPERIMENT.OPTIONS`` of the binary module, ``uqmix.options.config_from_args``)
before anything runs.  A finished run with another record is *stale*: the
sweep refuses to start and lists every difference, unless ``redo_stale``
deletes those run folders (``uqmix.runs.remove_run_dir``) and runs them again.
For a binary without an option table no record can be computed: every run is
launched with ``--resume`` (the binary itself refuses a folder of another
configuration).  A run folder another process is writing (``uqmix.run_lock``: a
sweep started twice) stops the sweep before it runs anything (``RunsInUseError``,
naming the processes); each run's folder is locked by the sweep from before its
``log.txt`` is written and the lock handed to the binary.  So an interrupted sweep
continues where it stopped (the runs themselves resume from their checkpoints)
and never reuses stale results.

``shell_commands`` gives the same runs as one self-contained shell line each
(``cd CWD && <the local runner's command>``), for a cluster scheduler.

``collect`` reads every ``ROOT/NAME/seed_S/metrics.json`` and refuses a folder
NAME whose seeds were made by different configurations; ``collect_roots`` does so for one
root or several (``sweep_roots``: the reports that read several roots); ``aggregate``
flattens the nested metrics to dotted keys and reports, per NAME and key,
mean, standard deviation (ddof = 1; 0 for a single seed) and the number of
seeds.
"""

import collections
import concurrent.futures
import dataclasses
import importlib
import math
import os
import shlex
import subprocess
import sys
import time

from uqmix import options, run_lock, runs

DONE, TODO, STALE = "done", "todo", "stale"
# Keys that differ between the seeds of one configuration (besides runs.VOLATILE_KEYS).
PER_SEED_KEYS = frozenset({"seed"})


class StaleRunsError(ValueError):
    """Finished runs in the sweep's folders were made by another record than the one asked for."""


class RunsInUseError(ValueError):
    """Run folders of the sweep are being written by other processes (``uqmix.run_lock``)."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    flagfile: str
    seed: int
    output_dir: str

    @property
    def finished(self):
        """metrics.json exists (whatever made it; ``status`` checks the record)."""
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


def run_args(run, extra_flags=()):
    """The flags of one run: flagfile, seed, output_dir, --resume, then ``extra_flags``."""
    return [
        f"--flagfile={run.flagfile}",
        f"--seed={run.seed}",
        f"--output_dir={run.output_dir}",
        "--resume",
        *extra_flags,
    ]


def command(binary, run, extra_flags=()):
    """The command the local runner issues for ``run`` (argv list)."""
    return [sys.executable, "-m", binary, *run_args(run, extra_flags)]


def experiment_of(binary):
    """The option-table experiment of a binary module (its ``EXPERIMENT``), or None.

    Raises ValueError when the module cannot be found.
    """
    try:
        module = importlib.import_module(binary)
    except ModuleNotFoundError as error:
        raise ValueError(f"--binary={binary}: no such module ({error}).") from None
    return getattr(module, "EXPERIMENT", None)


def requested_record(binary, experiment, run, extra_flags=()):
    """The record (``runs.make_record``) the run's command line gives, parsed and validated as
    the binary does; ValueError naming the run when its flags are bad."""
    try:
        config = options.config_from_args(experiment.OPTIONS, run_args(run, extra_flags))
        config = experiment.validate_config(config)
    except ValueError as error:
        raise ValueError(f"{run.name} seed {run.seed}: bad flags: {error}") from None
    return runs.make_record(config, binary)


def status(run, requested):
    """(DONE | TODO | STALE, [differences]) of ``run`` against the ``requested`` record
    (None: unknown, so a finished run is launched again with --resume)."""
    if not run.finished or requested is None:
        return TODO, []
    found = runs.read_record(run.output_dir)
    if found is None:
        return STALE, [f"no run record ({runs.CONFIG_FILE}) next to its {runs.METRICS_FILE}"]
    changed = runs.record_differences(found, requested)
    return (STALE, changed) if changed else (DONE, [])


def check_not_in_use(planned):
    """Raises ``RunsInUseError`` listing every planned run folder that another process holds
    (``run_lock.holder``): a second sweep over the same runs, or a run started by hand."""
    busy = [
        (run, holder)
        for run in planned
        if os.path.isdir(run.output_dir)
        for holder in [run_lock.holder(run.output_dir)]
        if holder
    ]
    if busy:
        listed = "\n".join(f"  {run.output_dir}: {holder}" for run, holder in busy)
        raise RunsInUseError(
            f"{len(busy)} runs of this sweep are being written by other processes:\n{listed}\n"
            "Is the sweep already running? Wait for those processes or stop them, or use "
            "another output root."
        )


def triage(binary, planned, extra_flags=(), redo_stale=False, log=print):
    """The runs still to do.  Refuses runs another process is writing (``check_not_in_use``),
    then checks every run's flags; raises ``StaleRunsError`` listing every stale run and its
    differences unless ``redo_stale``, which deletes those run folders
    (``runs.remove_run_dir``) and keeps them to do."""
    check_not_in_use(planned)
    experiment = experiment_of(binary)
    if experiment is None:
        log(
            f"{binary} has no option table (EXPERIMENT): run records cannot be checked "
            "before running; every run is launched with --resume."
        )
        return list(planned)
    checked = [
        (run, *status(run, requested_record(binary, experiment, run, extra_flags)))
        for run in planned
    ]
    stale = [(run, changed) for run, state, changed in checked if state == STALE]
    if stale and not redo_stale:
        listed = "\n".join(f"  {run.output_dir}: " + "; ".join(changed) for run, changed in stale)
        raise StaleRunsError(
            f"{len(stale)} finished runs were made with another record than requested:\n"
            f"{listed}\nPass --redo_stale to delete and redo them, or use another output root."
        )
    for run, _ in stale:
        runs.remove_run_dir(run.output_dir)
        log(f"{run.output_dir}: stale; deleted, will be redone.")
    todo = [run for run, state, _ in checked if state != DONE]
    skipped = len(planned) - len(todo)
    if skipped:
        log(f"{skipped} of {len(planned)} runs already done; skipping them.")
    return todo


def shell_commands(binary, runs_to_do, extra_flags=(), cwd=None):
    """One self-contained shell line per run: ``cd CWD && <command(binary, run)>``, quoted."""
    cwd = cwd or os.getcwd()
    return [
        f"cd {shlex.quote(cwd)} && {shlex.join(command(binary, run, extra_flags))}"
        for run in runs_to_do
    ]


def _execute(binary, run, extra_flags):
    """Runs one run with its folder locked from before its log.txt is opened to the end
    (``run_lock.handed_to_child``); returns (run, exit code or the ``RunInUseError`` that
    kept it from starting, seconds)."""
    os.makedirs(run.output_dir, exist_ok=True)
    log_path = os.path.join(run.output_dir, "log.txt")
    start = time.time()
    try:
        with run_lock.handed_to_child(run.output_dir) as (fds, env):
            with open(log_path, "a", encoding="utf-8") as log:
                code = subprocess.call(
                    command(binary, run, extra_flags),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=fds,
                    env={**os.environ, **env},
                )
    except run_lock.RunInUseError as error:
        return run, error, time.time() - start
    return run, code, time.time() - start


def run_sweep(binary, runs_to_do, parallel=1, extra_flags=(), log=print, redo_stale=False):
    """Runs the runs not yet done (``triage``), ``parallel`` processes at a time; returns
    failures.  Prints one progress line per finished run ("[k/n] name seed s: ok in 12.3 s").
    """
    todo = triage(binary, runs_to_do, extra_flags, redo_stale=redo_stale, log=log)
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(parallel))) as pool:
        futures = [pool.submit(_execute, binary, r, tuple(extra_flags)) for r in todo]
        for k, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            run, code, seconds = future.result()
            if isinstance(code, run_lock.RunInUseError):
                status_text = f"NOT STARTED ({code})"
            elif code == 0:
                status_text = "ok"
            else:
                status_text = f"FAILED (exit {code}, see {run.output_dir}/log.txt)"
            log(f"[{k}/{len(todo)}] {run.name} seed {run.seed}: {status_text} in {seconds:.1f} s")
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


def _seed_of(config_dir, seed_dir):
    try:
        return int(seed_dir[len("seed_") :])
    except ValueError:
        raise ValueError(
            f"{os.path.join(config_dir, seed_dir)}: a run folder must be named "
            "seed_<integer>; rename or remove it."
        ) from None


def check_same_configuration(config_dir, seed_dirs, per_seed_keys=PER_SEED_KEYS):
    """Raises ValueError when the runs in ``seed_dirs`` (folders under ``config_dir``) have
    records differing in more than ``per_seed_keys`` (the seed): one name must be one
    configuration."""
    reference = None
    for seed_dir in seed_dirs:
        record = runs.read_record(os.path.join(config_dir, seed_dir))
        if record is None:
            continue
        record = dict(
            record, flags={k: v for k, v in record["flags"].items() if k not in per_seed_keys}
        )
        if reference is None:
            reference = (seed_dir, record)
            continue
        changed = runs.record_differences(reference[1], record)
        if changed:
            raise ValueError(
                f"{config_dir} mixes runs of different configurations: "
                f"{reference[0]} → {seed_dir}: {'; '.join(changed)}. Keep one "
                "configuration per folder."
            )


def collect(output_root, per_seed_keys=PER_SEED_KEYS):
    """{name: {seed: metrics dict}} for every finished run under ``output_root``; the seeds
    of one name may differ in ``per_seed_keys`` only (``check_same_configuration``).

    ValueError naming the file or folder for: a missing root, a ``seed_*`` folder
    whose suffix is not an integer, a metrics.json that is not a JSON object, and
    runs of one name made with different configurations (``check_same_configuration``).
    """
    found = collections.defaultdict(dict)
    if not os.path.isdir(output_root):
        raise ValueError(f"no sweep results at {output_root}")
    for name in sorted(os.listdir(output_root)):
        config_dir = os.path.join(output_root, name)
        if not os.path.isdir(config_dir):
            continue
        seeds = {
            d: _seed_of(config_dir, d)
            for d in sorted(os.listdir(config_dir))
            if d.startswith("seed_")
        }
        finished = [
            d for d in seeds if os.path.exists(os.path.join(config_dir, d, runs.METRICS_FILE))
        ]
        check_same_configuration(config_dir, finished, per_seed_keys)
        for seed_dir in finished:
            path = os.path.join(config_dir, seed_dir, runs.METRICS_FILE)
            found[name][seeds[seed_dir]] = runs.read_json_object(path)
    return dict(found)


def sweep_roots(roots):
    """A list of sweep roots from one root (str) or several (a list, in the order given).

    ValueError for an empty list and for a folder given twice, also when spelled differently
    (``runs/x`` and ``runs/x/``: compared by ``os.path.realpath``); empty entries of a
    comma-separated flag are the binaries' to drop, here they are roots like any other.
    """
    roots = [roots] if isinstance(roots, str) else list(roots)
    if not roots:
        raise ValueError("no sweep root given.")
    seen = {}
    for root in roots:
        folder = os.path.realpath(root)
        if folder in seen:
            raise ValueError(
                f"a sweep root is given twice ({seen[folder]} and {root}): {', '.join(roots)}"
            )
        seen[folder] = root
    return roots


def collect_roots(roots, per_seed_keys=PER_SEED_KEYS):
    """[(root, ``collect(root, per_seed_keys)``)] of one sweep root or several
    (``sweep_roots``), in the order given; ValueError for a root without a finished run (as
    for a missing root: a report of several roots never leaves one out silently)."""
    collected = []
    for root in sweep_roots(roots):
        found = collect(root, per_seed_keys)
        if not found:
            raise ValueError(
                f"no finished runs (<configuration>/seed_<S>/{runs.METRICS_FILE}) under {root}"
            )
        collected.append((root, found))
    return collected


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


def format_cell(stats, fmt=".4f", spread=True):
    """ "mean ± std (n)"; "value (1)" for a single seed (no spread to show); "—" when no seed
    has the number.  spread=False: "mean (n)" for any n."""
    if stats is None or not stats["n"]:
        return "—"
    if stats["n"] == 1 or not spread:
        return f"{stats['mean']:{fmt}} ({stats['n']})"
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
                cells.append(
                    f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f} ({entry['n']})"
                )
        rows.append(cells)
    return render_markdown_table(["config"] + [labels.get(k, k) for k in keys], rows)
