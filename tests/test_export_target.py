"""uqmix.export_target: a run's --export_dir never replaces files that are not its own export,
and a SavedModel appears in it whole or not at all."""

import json
import os

import numpy as np
import pytest

from tests.test_cifar_rkl import _tiny
from uqmix import export_target, runs
from uqmix.studies import pn_experiment


def _tree(folder):
    """{relative path: bytes} of every file under ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def _foreign_model(folder):
    os.makedirs(os.path.join(folder, "variables"))
    for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
        with open(os.path.join(folder, name), "w") as f:
            f.write(f"another model's {name}")
    return _tree(folder)


def _export(export_dir, output_dir, files):
    """What a run's export does, with ``files`` standing in for the SavedModel."""
    with export_target.installing(export_dir, output_dir) as path:
        for name, text in files.items():
            with open(os.path.join(path, name), "w") as f:
                f.write(text)


def _no_staging_left(parent):
    assert not [n for n in os.listdir(parent) if ".uqmix-" in n], os.listdir(parent)


def test_new_missing_or_empty_folder_gets_the_export_with_its_record(tmp_path):
    run = str(tmp_path / "run")
    for export_dir in (tmp_path / "new" / "model", tmp_path / "empty"):
        if export_dir.name == "empty":
            export_dir.mkdir()
        export_target.check_export_dir(str(export_dir), run)
        _export(str(export_dir), run, {"saved_model.pb": "ours"})
        assert (export_dir / "saved_model.pb").read_text() == "ours"
        record = json.loads((export_dir / export_target.EXPORT_RECORD).read_text())
        assert record == {"output_dir": os.path.abspath(run)}
        assert export_target.is_export_of(str(export_dir), run)
        _no_staging_left(str(export_dir.parent))


def test_same_run_replaces_its_earlier_export_whole(tmp_path):
    run, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    _export(export_dir, run, {"saved_model.pb": "first", "stale_only_in_first": "x"})
    export_target.check_export_dir(export_dir, run)  # a resumed run may export again
    _export(export_dir, run, {"saved_model.pb": "second"})
    assert set(os.listdir(export_dir)) == {"saved_model.pb", export_target.EXPORT_RECORD}
    assert open(os.path.join(export_dir, "saved_model.pb")).read() == "second"
    _no_staging_left(str(tmp_path))


@pytest.mark.parametrize("holder", ["foreign files", "another run's export"])
def test_folder_of_other_files_is_refused_and_untouched(tmp_path, holder):
    export_dir = str(tmp_path / "models")
    if holder == "foreign files":
        before = _foreign_model(export_dir)
        message = "holds files that are not an export of this run \\(saved_model.pb, variables\\)"
    else:
        _export(export_dir, str(tmp_path / "other_run"), {"saved_model.pb": "theirs"})
        before = _tree(export_dir)
        message = f"holds the export of another run \\(--output_dir={tmp_path / 'other_run'}\\)"
    with pytest.raises(runs.OutputPathError, match=message + "; nothing is replaced"):
        export_target.check_export_dir(export_dir, str(tmp_path / "run"))
    assert _tree(export_dir) == before


def test_an_export_dir_that_is_a_file_is_refused_before_any_work(tmp_path):
    """The library path (``mixture_experiment.run`` / ``pn_experiment.run`` from Python) checks
    the export folder as the binaries' flag check does: not only at install, after training."""
    export_file = tmp_path / "model.bin"
    export_file.write_text("user data")
    with pytest.raises(runs.OutputPathError, match="--export_dir=.*is a file, not a folder"):
        export_target.check_export_dir(str(export_file), str(tmp_path / "run"))
    assert export_file.read_text() == "user data"
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]


@pytest.mark.parametrize("where", ["the run folder", "a folder containing it"])
def test_export_into_or_above_the_run_folder_is_refused(tmp_path, where):
    run = tmp_path / "runs" / "run"
    export_dir = run if where == "the run folder" else tmp_path / "runs"
    with pytest.raises(runs.OutputPathError, match="is the run folder .* or contains it"):
        export_target.check_export_dir(str(export_dir), str(run))
    export_target.check_export_dir(str(run / "saved_model"), str(run))  # inside it: fine


def test_failed_export_leaves_the_folder_as_it_was(tmp_path):
    run, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    _export(export_dir, run, {"saved_model.pb": "good"})
    before = _tree(export_dir)
    with pytest.raises(RuntimeError, match="write failed"):
        with export_target.installing(export_dir, run) as path:
            with open(os.path.join(path, "saved_model.pb"), "w") as f:
                f.write("half")
            raise RuntimeError("write failed")
    assert _tree(export_dir) == before
    _no_staging_left(str(tmp_path))


def test_folder_filled_by_someone_else_during_the_run_is_not_replaced(tmp_path):
    run, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    export_target.check_export_dir(export_dir, run)  # missing at the start of the run
    with pytest.raises(runs.OutputPathError, match="filled by someone else") as refused:
        with export_target.installing(export_dir, run) as path:
            with open(os.path.join(path, "saved_model.pb"), "w") as f:
                f.write("ours")
            before = _foreign_model(export_dir)  # meanwhile another process writes there
    assert _tree(export_dir) == before
    staging = str(refused.value).rsplit("The export is in ", 1)[1].rstrip(".")
    assert open(os.path.join(staging, "saved_model.pb")).read() == "ours"


def test_experiment_exports_a_loadable_model_and_refuses_another_runs_folder(tmp_path):
    import tensorflow as tf

    export_dir = str(tmp_path / "export")
    metrics = pn_experiment.run(_tiny(tmp_path, export_dir=export_dir))
    assert metrics["export_dir"] == export_dir
    assert export_target.is_export_of(export_dir, str(tmp_path / "run"))
    served = tf.saved_model.load(export_dir).signatures["predict"](
        images=tf.zeros([2, 32, 32, 3], tf.float32)
    )
    assert np.all(np.isfinite(served["mean"].numpy()))
    np.testing.assert_allclose(served["mean"].numpy().sum(-1), 1.0, rtol=1e-5)
    before = _tree(export_dir)
    other_run = tmp_path / "other"
    with pytest.raises(runs.OutputPathError, match="holds the export of another run"):
        pn_experiment.run(_tiny(tmp_path, export_dir=export_dir, output_dir=str(other_run)))
    assert not other_run.exists()  # refused before any work
    assert _tree(export_dir) == before
