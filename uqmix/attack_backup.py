"""Backups of long attack evaluations: an interrupted attack curve continues where it stopped.

An adaptive attack curve to 1,000 iterations on a sampled model (MC dropout with
100 masks per gradient) takes hours, longer than a preemptible job or a
session.  ``AttackBackup`` keeps in one folder (file ``uqmix_attack_backup.npz``,
replaced atomically at every save) what the curve functions of ``uqmix.attack_eval``
need to continue such a curve in another process with the same result as an
uninterrupted run:

* ``key``: what identifies the computation — the function and its options, a
  SHA-256 of the inputs, every model's class, configuration and weights, the
  attacks' compile switches and op determinism, the uqmix source fingerprint
  and the library versions (``uqmix.training_cache``).  A backup
  whose key differs (other options, inputs, training or code) is never
  resumed: the curve starts afresh, says why (``log``) and overwrites it at
  its first save.  A file of that name that is not a uqmix attack backup (no
  format marker, or unreadable: saves are atomic, so a half-written file is
  never one of ours) is never overwritten: opening the folder is an error that
  names the file, before any work;
* the models' random-generator states (``training_cache.random_state_variables``:
  the noise of dropout masks and weight draws) at the start, restored before the
  clean predictions are recomputed, and at the saved position;
* the results so far (named arrays), the position (a JSON object: which batch,
  how many iterations) and the iterative attack's state there
  (``uqmix.attacks.IterativeAttackRun.state``).

Checks the curve functions add (``verify``): values recomputed after a resume
(the attack targets, the clean predictions the criterion aims at, the natural
inputs' detection scores) must equal the saved ones, else the backup is dropped
and the curve starts afresh.  Bit-for-bit equality with an uninterrupted run
needs deterministic ops (the tests resume on CPU without XLA to the bit; on a
GPU call ``tf.config.experimental.enable_op_determinism()``, which enters the
key); without them the checks stop a resume whose clean predictions moved, and
a resumed curve is one of the runs the device could have produced.
"""

import hashlib
import io
import json
import math
import os
import time

import keras
import numpy as np
from tensorflow.python.framework import config as tf_config  # op determinism: no public getter

from uqmix import runs, training_cache
from uqmix.attacks import gradient_attacks

BACKUP_FILE = "uqmix_attack_backup.npz"
FORMAT = "uqmix-attack-backup-1"
_FORMAT = "__format__"
_KEY = "__key__"
_POSITION = "__position__"
_STATE_PREFIX = "__attack_state__/"
_ENTRY_RNG_PREFIX = "__entry_rng__/"
_RNG_PREFIX = "__rng__/"


def array_digest(value):
    """SHA-256 (hex) of an array's dtype, shape and bytes."""
    value = np.ascontiguousarray(np.asarray(value))
    digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    digest.update(value.tobytes())
    return digest.hexdigest()


def weights_digest(model):
    """SHA-256 (hex) over the model's weights in order (position, dtype, shape, values; not
    their generated names); the states of its random generators are not weights."""
    digest = hashlib.sha256()
    for index, variable in enumerate(model.weights):
        digest.update(f"{index}\0".encode())
        digest.update(array_digest(variable.numpy()).encode())
    return digest.hexdigest()


def model_record(model, role):
    """What identifies a Keras model in a key: its class, its configuration
    (``canonical_config``: sample counts, dropout rates, sampling modes — what changes the
    numbers besides the weights) and ``weights_digest``.  Anything else (a plain
    function) cannot be identified and is refused."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"backup_dir needs Keras models (their weights and configuration identify the "
            f"computation); {role} is a {type(model).__name__}."
        )
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": canonical_config(model),
        "weights": weights_digest(model),
    }


def canonical_config(model):
    """The canonical JSON text of ``model.get_config()`` (None when it has none) with every
    layer name replaced by its position among the model's layers ("#layer3"): Keras names
    layers by a per-process counter (``dense_7``), so the same model built twice, or in
    another process after other models, has other names but the same configuration."""
    try:
        config = model.get_config()
    except NotImplementedError:
        return None
    text = training_cache.canonical_json(config)
    names = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if layer.name not in names:
            names.append(layer.name)
    for index, name in enumerate(names):
        text = text.replace(json.dumps(name), json.dumps(f"#layer{index}"))
    return text


def computation_key(function, options, inputs, models):
    """The key of an attack computation (a JSON-ready dict): ``function`` (name),
    ``options`` (JSON values), digests of ``inputs`` ({name: array}), ``model_record`` of
    each of ``models`` ({role: Keras model or None}), the attacks' compile switches
    (``uqmix.attacks.gradient_attacks.compile_options``), whether TensorFlow's ops are
    deterministic, the uqmix source fingerprint and the library versions."""
    record = {
        "function": function,
        "options": options,
        "inputs": {name: array_digest(value) for name, value in inputs.items()},
        "models": {
            role: None if model is None else model_record(model, role)
            for role, model in models.items()
        },
        "compile": gradient_attacks.compile_options(),
        "op_determinism": tf_config.is_op_determinism_enabled(),
        "uqmix_source": training_cache.source_fingerprint(),
        "versions": training_cache.library_versions(),
    }
    return json.loads(training_cache.canonical_json(record))


def random_variables(models):
    """The random-generator state variables of ``models`` (each once, in order)."""
    found, seen = [], set()
    for model in models:
        for variable in training_cache.random_state_variables(model):
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append(variable)
    return found


class Pacer:
    """How many iterations to run before the next look at the clock, so that saves come
    about every ``every_seconds``: one iteration first, then as many as the measured
    seconds per iteration fit into ``every_seconds``."""

    def __init__(self, every_seconds):
        every_seconds = float(every_seconds)
        if not (math.isfinite(every_seconds) and every_seconds >= 0):
            raise ValueError(f"backup_every_seconds must be >= 0 and finite, got {every_seconds}.")
        self.every_seconds = every_seconds
        self._per_iteration = None
        self._last_save = time.monotonic()

    def chunk(self, remaining):
        """The iterations of the next piece (at most ``remaining``)."""
        if remaining <= 0:
            return 0
        if self._per_iteration is None:
            return min(1, remaining)
        fits = int(self.every_seconds / max(self._per_iteration, 1e-9))
        return max(1, min(remaining, fits))

    def ran(self, iterations, seconds):
        """A piece of ``iterations`` took ``seconds``."""
        if iterations:
            self._per_iteration = seconds / iterations

    def due(self):
        """True when ``every_seconds`` have passed since the last save."""
        return time.monotonic() - self._last_save >= self.every_seconds

    def saved(self):
        """A save happened now."""
        self._last_save = time.monotonic()


class AttackBackup:
    """The saved progress of one attack computation in ``directory`` (see the module).

    After construction ``resumed`` tells whether a backup of the same ``key`` was found;
    then ``position`` (dict) and ``arrays`` ({name: array}) are its progress and
    ``attack_state`` its attack's state arrays (else {} / {} / []).  Call ``start()``
    before the computation's first random operation and ``resume_rng()`` where it
    continues; ``save`` after each step worth keeping.
    """

    def __init__(self, directory, key, models, log=None):
        if not directory:
            raise ValueError("backup_dir must name a folder.")
        self.directory = str(directory)
        self.path = os.path.join(self.directory, BACKUP_FILE)
        self.key = key
        self._variables = random_variables([m for m in models if m is not None])
        self._log = log
        self._entry_rng = None
        self._reset()
        self._load()

    def _reset(self):
        self.resumed = False
        self.position, self.arrays, self.attack_state = {}, {}, []
        self._saved_entry_rng = None
        self._saved_rng = None

    def say(self, line):
        """One line to the ``log`` given (if any)."""
        if self._log is not None:
            self._log(line)

    def _load(self):
        """Reads a backup of this ``key`` into the attributes; a uqmix backup of another
        computation is ignored (with a line to ``log``) and leaves them fresh; a file that
        is not a uqmix attack backup raises ``FileExistsError`` (it is never overwritten)."""
        if not os.path.lexists(self.path):
            return
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                content = {name: stored[name] for name in stored.files}
            if str(content.pop(_FORMAT)) != FORMAT:
                raise ValueError(f"its format is not {FORMAT!r}")
            key = json.loads(str(content.pop(_KEY)))
            position = json.loads(str(content.pop(_POSITION)))
        except Exception as error:  # saves are atomic: an unreadable file is not ours
            raise FileExistsError(
                f"{self.path} exists and is not a uqmix attack backup ({type(error).__name__}: "
                f"{error}); it is left untouched. Move or delete it, or pass another "
                "backup_dir."
            ) from None
        if key != self.key:
            changed = runs.differences(_flat(key), _flat(self.key))
            self.say(
                f"attack backup {self.path} is of another computation (differs in: "
                f"{'; '.join(changed[:4])}); starting afresh"
            )
            return
        entry, rng, state = {}, {}, {}
        for name in list(content):
            for prefix, into in (
                (_ENTRY_RNG_PREFIX, entry),
                (_RNG_PREFIX, rng),
                (_STATE_PREFIX, state),
            ):
                if name.startswith(prefix):
                    into[int(name[len(prefix) :])] = content.pop(name)
        if len(entry) != len(self._variables) or len(rng) != len(self._variables):
            self.say(
                f"attack backup {self.path} holds {len(entry)} random-generator states, the "
                f"models have {len(self._variables)}; starting afresh"
            )
            return
        self.resumed = True
        self.position = position
        self.arrays = content
        self.attack_state = [state[i] for i in sorted(state)]
        self._saved_entry_rng = [entry[i] for i in range(len(entry))]
        self._saved_rng = [rng[i] for i in range(len(rng))]

    def _rng_values(self):
        """The random-generator states now (NumPy copies, in ``_variables`` order)."""
        return [np.asarray(v.numpy()) for v in self._variables]

    def _assign_rng(self, values):
        """Sets the random-generator states to ``values``."""
        for variable, value in zip(self._variables, values):
            variable.assign(np.asarray(value, dtype=variable.dtype))

    def start(self):
        """At the computation's start: a resumed backup puts the random generators back
        where they were when the computation first started; a fresh one records them."""
        if self.resumed:
            current = self._rng_values()
            if any(not np.array_equal(a, b) for a, b in zip(current, self._saved_entry_rng)):
                self.say(
                    "the models' random generators are put back to where they were when "
                    "this attack first started (its backup continues that computation)"
                )
            self._assign_rng(self._saved_entry_rng)
            self._entry_rng = self._saved_entry_rng
        else:
            self._entry_rng = self._rng_values()

    def verify(self, recomputed):
        """``recomputed``: {name: array} the computation computed again after ``start()``.
        Resumed: True when each equals its saved array; otherwise the backup is dropped
        (the computation goes on afresh from here, with a line to ``log``) and False.
        Either way the arrays are what a save records from now on."""
        recomputed = {name: np.asarray(value) for name, value in recomputed.items()}
        if self.resumed:
            moved = [
                name
                for name, value in recomputed.items()
                if self.arrays.get(name) is None
                or self.arrays[name].shape != value.shape
                or not np.array_equal(self.arrays[name], value)
            ]
            if not moved:
                return True
            self.say(
                f"attack backup {self.path}: {', '.join(moved)} recomputed differ from the "
                "saved ones (not deterministic here); starting afresh"
            )
            self._reset()
        self.arrays.update(recomputed)
        return False

    def resume_rng(self):
        """Where a resumed computation continues: the random generators as they were saved."""
        if self.resumed:
            self._assign_rng(self._saved_rng)

    def save(self, position, arrays=None, attack_state=()):
        """Replaces the backup: ``position`` (JSON object), the named ``arrays`` so far
        (merged into ``self.arrays``), the attack's state arrays and the random-generator
        states now."""
        if self._entry_rng is None:
            raise RuntimeError("AttackBackup.save before start().")
        if arrays:
            self.arrays.update({name: np.asarray(v) for name, v in arrays.items()})
        content = dict(self.arrays)
        content[_FORMAT] = np.asarray(FORMAT)
        content[_KEY] = np.asarray(json.dumps(self.key, sort_keys=True))
        content[_POSITION] = np.asarray(json.dumps(runs.jsonable(position), sort_keys=True))
        for index, value in enumerate(self._entry_rng):
            content[f"{_ENTRY_RNG_PREFIX}{index}"] = value
        for index, value in enumerate(self._rng_values()):
            content[f"{_RNG_PREFIX}{index}"] = value
        for index, value in enumerate(attack_state):
            content[f"{_STATE_PREFIX}{index}"] = np.asarray(value)
        buffer = io.BytesIO()
        np.savez(buffer, **content)
        os.makedirs(self.directory, exist_ok=True)
        runs.atomic_write_bytes(self.path, buffer.getvalue())
        self.position = dict(position)


def _flat(record, prefix=""):
    """{"a.b": value} for a nested dict (for naming what differs between two keys)."""
    flat = {}
    for name, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat
