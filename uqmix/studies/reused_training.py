"""``--reuse_training_from``: a Prior Network run evaluated and attacked on the networks that
another, finished run of the same training flags trained.

Attacking trained networks with another criterion, method or iteration count (KL-DIR next to
KL-PMF, C&W next to MIM) needs no new training, and comparing attacks on the *same* networks is
the sharper comparison.  The run copies the source run's network folders (checkpoints, seed
records) into its own folder and the usual resume path restores them: nothing is trained that
the source trained, the source is only read.

* The source: ``--reuse_training_from=DIR`` names a finished run folder, or a sweep root whose
  ``<configuration>/seed_<S>`` folder is named like this run's ``output_dir`` (its last two
  parts), so one flag serves a whole sweep (``runs/pn_full`` for
  ``runs/pn_full_kldir/mnist_rkl/seed_0``).  Finished: it has ``metrics.json`` (a run still
  training is never read).
* The same training: every flag of the source's ``config.json`` equals this run's, except
  ``EVALUATION_ONLY`` (evaluation and attack flags) and ``runs.VOLATILE_KEYS``; a flag the
  source predates must be at its default.  Anything else is one error listing the differences,
  before any work.
* Only a run that has not started training copies (a resumed run continues its own folder);
  a copy stopped part-way is finished by the next attempt (``COPY_RECORD``).  The copied
  training seconds (timing.json, else the source's metrics.json) are this run's
  ``train_seconds``; ``metrics.json`` records ``training_reused_from`` when networks were
  copied (``copy_record``).
"""

import os
import shutil

from uqmix import runs, training

FLAG = "reuse_training_from"

# Flags that do not change the trained networks: the test-time data, evaluation and attacks.
EVALUATION_ONLY = frozenset(
    {
        FLAG,
        "test_examples",
        "ood_test_datasets",
        "ood_test_examples",
        "eval_samples",
        "attack",
        "blackbox_transfer",
    }
)


def _evaluation_only(name):
    return name in EVALUATION_ONLY or name.startswith("attack_") or name in runs.VOLATILE_KEYS


def source_run(reuse_from, output_dir):
    """The source run folder of ``--reuse_training_from`` (module doc); ValueError when there
    is none, naming the folders looked at."""
    candidates = [reuse_from]
    parent, name = os.path.split(os.path.normpath(os.path.abspath(output_dir)))
    candidates.append(os.path.join(reuse_from, os.path.basename(parent), name))
    for folder in candidates:
        if runs.is_run_dir(folder):
            if os.path.realpath(folder) == os.path.realpath(output_dir):
                raise ValueError(f"--{FLAG}={reuse_from} is this run's own folder.")
            return folder
    raise ValueError(
        f"--{FLAG}={reuse_from}: neither {candidates[0]} nor {candidates[1]} is a uqmix run "
        "folder; name a finished run of the same training flags, or the sweep root holding it."
    )


def training_differences(source_config, config, defaults):
    """["flag: source → this run", …] over the flags that change the trained networks."""
    source = {k: source_config.get(k, defaults.get(k)) for k in config if not _evaluation_only(k)}
    mine = {k: v for k, v in config.items() if not _evaluation_only(k)}
    return runs.differences(runs.jsonable(source), runs.jsonable(mine))


def check_source(config, defaults, network_dirs):
    """The source folder for ``config`` (``source_run``) after checking that it finished, was
    trained with this run's training flags and holds every network folder in
    ``network_dirs`` (names under the run folder) with a checkpoint; ValueError otherwise."""
    source = source_run(config[FLAG], config["output_dir"])
    if not os.path.isfile(os.path.join(source, runs.METRICS_FILE)):
        raise ValueError(
            f"--{FLAG}: {source} has not finished (no {runs.METRICS_FILE}); reuse a finished run."
        )
    source_config = runs.read_json_object(os.path.join(source, runs.CONFIG_FILE))
    different = training_differences(source_config, config, defaults)
    if different:
        raise ValueError(
            f"--{FLAG}: {source} trained its networks with other flags ("
            + "; ".join(different)
            + "); reuse a run of the same training flags, or drop the flag to train here."
        )
    missing = [
        name for name in network_dirs if not training.has_checkpoint(os.path.join(source, name))
    ]
    if missing:
        raise ValueError(
            f"--{FLAG}: {source} holds no trained network in {', '.join(missing)}; drop the flag "
            "to train here."
        )
    return source


def _source_seconds(source, key):
    seconds = runs.read_seconds(source, key)
    if seconds is None:
        seconds = runs.read_json_object(os.path.join(source, runs.METRICS_FILE)).get(key)
    return seconds


def check_targets(output_dir, names, replaceable=()):
    """Raises ``runs.OutputPathError``, before any work, when a network folder ``names[i]``
    of ``output_dir`` that ``copy_networks`` would replace (it holds no checkpoint) holds
    anything but the files named in ``replaceable`` (the run's own records written before
    training, such as its seed record) and an empty checkpoint folder: those are not the
    run's, and replacing the folder would delete them.  Reads only."""
    for name in names:
        target = os.path.join(output_dir, name)
        if not os.path.lexists(target) or training.has_checkpoint(target):
            continue  # nothing to replace / the run's own trained network: never replaced
        foreign = (
            [name]
            if os.path.islink(target) or not os.path.isdir(target)
            else [
                os.path.join(name, entry)
                for entry in sorted(os.listdir(target))
                if entry not in replaceable
                and not (entry == training.CHECKPOINT_SUBDIR and _is_empty_folder(target, entry))
            ]
        )
        if foreign:
            raise runs.OutputPathError(
                f"--{FLAG}: {output_dir} holds {', '.join(foreign[:5])} where the source's "
                f"network {name} would be copied; nothing is replaced. Move them, or choose "
                "another --output_dir."
            )


def _is_empty_folder(folder, name):
    path = os.path.join(folder, name)
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


COPY_RECORD = "reused_training.json"  # in the run folder: {"source", "networks", "finished"}


def copy_record(output_dir):
    """The record ``copy_networks`` keeps in ``output_dir`` ({"source": absolute path,
    "networks": [folder names], "finished": bool}), or None when the run copied nothing."""
    path = os.path.join(output_dir, COPY_RECORD)
    return runs.read_json_object(path) if os.path.exists(path) else None


def networks_to_copy(source, output_dir, network_dirs, optional_dirs=()):
    """The network folders ``copy_networks`` still has to copy: an unfinished copy's (its
    record) that hold no checkpoint yet; else ``network_dirs`` and those of ``optional_dirs``
    the source has trained, or none when ``output_dir`` has a checkpoint in any of them (the
    run trained them itself: it resumes its own folders) or finished its copy.  ValueError when
    an unfinished copy came from another source (the networks of two runs would be mixed)."""
    record = copy_record(output_dir)
    if record is not None:
        if record["finished"]:
            return []
        if record["source"] != os.path.abspath(source):
            raise ValueError(
                f"--{FLAG}: {output_dir} was copying the networks of {record['source']} when it "
                f"stopped; finish with --{FLAG}={record['source']} (or start another "
                "--output_dir)."
            )
        return [
            name
            for name in record["networks"]
            if not training.has_checkpoint(os.path.join(output_dir, name))
        ]
    names = list(network_dirs) + [
        name for name in optional_dirs if training.has_checkpoint(os.path.join(source, name))
    ]
    if any(training.has_checkpoint(os.path.join(output_dir, name)) for name in names):
        return []
    return names


def copy_networks(
    source, output_dir, network_dirs, optional_dirs=(), seconds_keys=(), replaceable=()
):
    """Copies the network folders ``networks_to_copy`` names from ``source`` into
    ``output_dir`` and sets this run's training seconds under ``seconds_keys`` ((key, folder)
    pairs: the source's seconds of each copied folder's key) in its timing.json.  Returns the
    names copied by this call (empty: nothing to do).

    A target folder without a checkpoint is replaced only when ``check_targets`` (with
    ``replaceable``) allows it: checked for every target before anything is changed.  The
    copy is recorded first (``COPY_RECORD``, unfinished), each folder is copied beside its
    target and renamed into place, then the seconds are set and the record finished: a copy
    stopped anywhere is finished by the next call (a half-copied folder is only ever the
    staging folder, which is cleared), never mistaken for networks the run trained."""
    names = networks_to_copy(source, output_dir, network_dirs, optional_dirs)
    record = copy_record(output_dir)
    if not names and (record is None or record["finished"]):
        return []  # nothing copied here, or a finished copy (an unfinished one goes on below)
    check_targets(output_dir, names, replaceable)
    record_path = os.path.join(output_dir, COPY_RECORD)
    if record is None:
        record = {"source": os.path.abspath(source), "networks": names, "finished": False}
        runs.atomic_write_json(record_path, record)
    for name in names:
        staging = os.path.join(output_dir, f".{name}.uqmix-copy")  # uqmix's name: cleared
        if os.path.lexists(staging):
            shutil.rmtree(staging)
        shutil.copytree(os.path.join(source, name), staging, ignore=_ignore_worker_copies)
        target = os.path.join(output_dir, name)
        if os.path.isdir(target):  # the run's own records only (check_targets): no network
            shutil.rmtree(target)
        os.rename(staging, target)
    for key, name in seconds_keys:
        if name in record["networks"]:
            seconds = _source_seconds(source, key)
            if seconds is not None:  # set, not added: a finishing call must not count twice
                runs.set_seconds(output_dir, key, seconds)
    runs.atomic_write_json(record_path, dict(record, finished=True))
    return names


def _ignore_worker_copies(folder, names):
    return [name for name in names if name.startswith(".workertemp_")]
