"""An opt-in, content-addressed cache of finished trainings (``--training_cache=DIR``).

Runs that differ only in how a trained network is *evaluated* (attack protocols,
evaluation lists, example counts) train the same network.  With a cache folder a
binary stores its trained model once and later runs with the same training reuse it:

* the *key* is the SHA-256 of a canonical JSON (sorted keys, no spaces) of the
  ``keyed`` record (``keyed_record``): the binary's name, every configuration
  value except a set of flags the binary names as not affecting training
  (evaluation-only, output and volatile flags; everything else, including any
  flag added later, is in the key), a fingerprint of the uqmix source
  (``source_fingerprint``: any code change misses) and the TensorFlow / Keras
  versions (the numbers of a training depend on them);
* an *entry* is the folder ``DIR/<key>/`` holding ``model.keras`` (the trained
  model, optimizer included) and ``record.json`` (``key``, ``keyed``,
  ``train_seconds`` of the original training, ``source_run`` = its output_dir,
  ``created``, and ``model_random_states``: the model's random-generator states at
  the end of training, which a ``.keras`` file does not hold for Keras' own layers
  such as ``Dropout``, so that a reused model draws the noise a fresh one would);
* ``store`` writes an entry into a temporary folder ``DIR/.tmp-…`` and renames it
  into place: readers see a complete entry or none, and an existing entry is
  never overwritten (two runs storing the same key at once: the first rename
  wins, the other's copy is discarded);
* ``lookup`` returns the entry of a key or None, and raises
  ``TrainingCacheError`` (naming the entry and the fix: delete the folder) for an
  entry that is incomplete or corrupt, so nothing trains on a broken cache.

No entry is ever deleted by uqmix; the cache is a plain folder (``rm -r`` an entry,
or the whole folder, to forget trainings).  Leftover ``.tmp-*`` folders are stores
that were interrupted and can be deleted.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile

import numpy as np

from uqmix import runs

MODEL_FILE = "model.keras"
RECORD_FILE = "record.json"
TEMP_PREFIX = ".tmp-"


class TrainingCacheError(ValueError):
    """An entry of the training cache is incomplete or corrupt (or cannot be loaded)."""


def source_fingerprint(root=None):
    """SHA-256 (hex) over the sorted relative paths and bytes of every ``*.py`` file under
    ``root`` (default: the imported ``uqmix`` package), ``__pycache__`` skipped; each file
    enters as path, length and content, so no two different trees give the same bytes."""
    if root is None:
        import uqmix

        root = os.path.dirname(os.path.abspath(uqmix.__file__))
    paths = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        paths.extend(
            os.path.relpath(os.path.join(folder, name), root)
            for name in names
            if name.endswith(".py")
        )
    digest = hashlib.sha256()
    for relative in sorted(p.replace(os.sep, "/") for p in paths):
        with open(os.path.join(root, relative), "rb") as handle:
            data = handle.read()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def library_versions():
    """{"tensorflow", "keras"}: versions that change the numbers of a training."""
    import keras
    import tensorflow as tf

    return {"keras": keras.__version__, "tensorflow": tf.__version__}


def canonical_json(value):
    """The canonical JSON text of ``value`` (NumPy values converted, sorted keys, compact)."""
    plain = json.loads(runs.json_bytes(value))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def keyed_record(binary, config, excluded):
    """What identifies a training: the binary, every flag of ``config`` not in ``excluded``,
    the uqmix source fingerprint and the library versions (as JSON values)."""
    record = {
        "binary": binary,
        "flags": {k: v for k, v in config.items() if k not in excluded},
        "uqmix_source": source_fingerprint(),
        "versions": library_versions(),
    }
    return json.loads(canonical_json(record))


def key_of(keyed):
    """SHA-256 (hex) of the canonical JSON of a ``keyed_record``: the entry's folder name."""
    return hashlib.sha256(canonical_json(keyed).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Entry:
    """A complete cache entry: its folder and its record."""

    path: str
    record: dict

    @property
    def model_path(self):
        return os.path.join(self.path, MODEL_FILE)

    @property
    def train_seconds(self):
        return float(self.record["train_seconds"])

    @property
    def source_run(self):
        return self.record.get("source_run") or "an unknown run"


def entry_path(cache_dir, key):
    """The (absolute) folder of ``key``'s entry in ``cache_dir``."""
    return os.path.abspath(os.path.join(cache_dir, key))


def _corrupt(path, reason):
    return TrainingCacheError(
        f"--training_cache entry {path} is incomplete or corrupt: {reason}. Delete that "
        f"folder (rm -r {path}) and run again; the run then trains and stores it anew."
    )


def lookup(cache_dir, key, keyed):
    """The ``Entry`` of ``key`` in ``cache_dir``, or None when there is none.

    Raises ``TrainingCacheError`` naming the entry when it is not a folder, lacks
    ``model.keras`` or a readable ``record.json``, or its record's keyed flags do not
    hash to its name or differ from ``keyed``.
    """
    path = entry_path(cache_dir, key)
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        raise _corrupt(path, "not a folder")
    record_path = os.path.join(path, RECORD_FILE)
    if not os.path.isfile(record_path):
        raise _corrupt(path, f"no {RECORD_FILE}")
    try:
        record = runs.read_json_object(record_path)
    except ValueError as error:
        raise _corrupt(path, str(error)) from None
    model_path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise _corrupt(path, f"no {MODEL_FILE}")
    if not zipfile.is_zipfile(model_path):
        raise _corrupt(path, f"{MODEL_FILE} is not a Keras archive (truncated?)")
    stored = record.get("keyed")
    if not isinstance(stored, dict) or key_of(stored) != key:
        raise _corrupt(path, f"the keyed flags in its {RECORD_FILE} do not hash to its name")
    if stored != keyed:
        raise _corrupt(path, f"the keyed flags in its {RECORD_FILE} differ from this run's")
    seconds = record.get("train_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise _corrupt(path, f"no train_seconds in its {RECORD_FILE}")
    if not isinstance(record.get("model_random_states"), list):
        raise _corrupt(path, f"no model_random_states in its {RECORD_FILE}")
    return Entry(path, record)


def random_state_variables(model):
    """The model's variables that are not weights: the states of its random generators."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def random_states(model):
    """The values of the model's random-generator states (lists, in variable order)."""
    return [np.asarray(v.numpy()).tolist() for v in random_state_variables(model)]


def _folder_mode():
    """0777 minus the umask (execute bits where the file mode has read bits)."""
    mode = runs.file_mode()
    return mode | ((mode & 0o444) >> 2)


def store(cache_dir, key, keyed, model, model_path, train_seconds, source_run):
    """Stores the trained ``model`` (whose ``.keras`` file is ``model_path``) as the entry of
    ``key``; returns the entry's path, or None when an entry of that key exists already
    (it is never overwritten).  Written into ``cache_dir/.tmp-…`` and renamed into place."""
    final = entry_path(cache_dir, key)
    if os.path.lexists(final):
        return None
    os.makedirs(cache_dir, exist_ok=True)
    temp = tempfile.mkdtemp(dir=cache_dir, prefix=f"{TEMP_PREFIX}{key[:16]}-")
    try:
        with open(model_path, "rb") as handle:
            runs.atomic_write_bytes(os.path.join(temp, MODEL_FILE), handle.read())
        record = {
            "key": key,
            "keyed": keyed,
            "train_seconds": float(train_seconds),
            "source_run": os.path.abspath(source_run),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model_random_states": random_states(model),
        }
        runs.atomic_write_json(os.path.join(temp, RECORD_FILE), record)
        os.chmod(temp, _folder_mode())
        try:
            os.rename(temp, final)  # fails when ``final`` exists (not empty): never overwritten
        except OSError:
            if os.path.lexists(final):  # another run stored the same training meanwhile
                shutil.rmtree(temp, ignore_errors=True)
                return None
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def restore(model, entry):
    """Loads ``entry``'s weights, optimizer state and random-generator states into ``model``,
    a freshly built and compiled model of the same configuration; returns the seconds spent.
    A model that does not fit the entry is a ``TrainingCacheError`` naming it."""
    from uqmix import training

    start = time.perf_counter()
    training._build_optimizer(model)  # so that the optimizer's step and moments load too
    variables = random_state_variables(model)
    states = entry.record["model_random_states"]
    try:
        model.load_weights(entry.model_path)
        if len(states) != len(variables):
            raise ValueError(
                f"{len(states)} random-generator states recorded, the model has {len(variables)}"
            )
        for variable, state in zip(variables, states):
            variable.assign(np.asarray(state, dtype=variable.dtype))
    except Exception as error:  # any failure to load is this entry's, named as such
        raise _corrupt(
            entry.path, f"its model does not load into this run's model ({error})"
        ) from None
    return time.perf_counter() - start
