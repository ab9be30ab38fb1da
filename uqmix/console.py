"""What the experiment binaries print: no TF/absl INFO noise, the model that trains, progress.

One shared helper for every binary (``experiments.options_binary`` calls
``quiet_logs`` before TensorFlow is imported and again once absl has parsed the
flags):

* ``quiet_logs``: TensorFlow's C++ INFO lines (``TF_CPP_MIN_LOG_LEVEL=1``),
  Python's ``tensorflow`` logger and absl's Python logging at WARNING.  The
  lines TensorFlow's shared libraries print while they load (before absl's
  C++ logging is initialised, so no environment variable reaches them: the
  oneDNN / CUDA-driver / CPU-feature notices) are filtered out of file
  descriptor 2 during ``import tensorflow``; every other line is passed on.
  An explicit ``--verbosity`` / ``TF_CPP_MIN_LOG_LEVEL`` of the user wins.
* ``announce``: "Training reverse_kl (2/2)" before each ``fit``.
* ``progress``: one time-stamped line per finished piece of a long evaluation.

No TensorFlow import at module level: this module must run before it.
"""

import os
import re
import sys
import tempfile
import time

# An INFO line of absl's C++ logging ("I1130 12:00:00.000000 123 file.cc:42] ..."; before
# absl is initialised the time is "00:00:<seconds since the epoch>"), the
# warning absl prints before its initialisation, and the continuation line of TF's
# CPU-feature notice.
_NOISE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ \S+:\d+\] |"
    r"WARNING: All log messages before absl::InitializeLog\(\) is called|"
    r"To enable the following instructions: .* rebuild TensorFlow)"
)


def is_noise(line):
    """True for a TF/absl INFO line (and the two load-time notices that go with them)."""
    return bool(_NOISE.match(line))


def _import_tensorflow_filtered():
    """``import tensorflow`` with fd 2 captured; replays the captured lines except noise."""
    if "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): import plainly
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines(True)
                if not is_noise(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_logs(verbosity_flag_present=False):
    """Silences TF/absl INFO logging (see the module docstring); safe to call repeatedly.

    verbosity_flag_present: the user passed absl's ``--verbosity``; their level is kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    _import_tensorflow_filtered()
    import logging

    from absl import logging as absl_logging

    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if not verbosity_flag_present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def announce(name, index=None, total=None, stream=None):
    """Prints "Training <name> (<index>/<total>)" (or "Training <name>") and returns it."""
    line = f"Training {name}" + (f" ({index}/{total})" if total and total > 1 else "")
    print(line, file=stream or sys.stdout, flush=True)
    return line


def progress(message, enabled=True, stream=None):
    """Prints "[HH:MM:SS] message" when ``enabled`` (a binary's ``verbose`` > 0)."""
    if enabled:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=stream or sys.stdout, flush=True)
