r"""Aggregates a sweep's metrics.json files into tables (mean ± std over seeds).

  python -m experiments.aggregate --output_root=runs/mixture --keys=test.accuracy,ood.auroc

Writes OUTPUT_ROOT/aggregate.json ({"uqmix_aggregate": 1, "binary", "uqmix_version",
"configurations": {configuration: {metric: {mean, std, n}}}}, every scalar metric) and
prints a Markdown table of --keys (all keys if empty).  An aggregate.json there that lacks
the "uqmix_aggregate" field (the user's own file) is never replaced: exit 2 before the runs
are read, naming it.
Exit codes: 1 bad flags; 2 bad data (no finished run, a metrics.json that is
not a JSON object, a ``seed_*`` folder without an integer, seeds of one folder
made with different configurations), an output root that cannot be written or an
aggregate.json there that is not ours.
"""

import os
import sys

from absl import app, flags

from uqmix import report_output, runs, sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("output_root", None, "The sweep's output_root.")
flags.DEFINE_list("keys", [], "Dotted metric keys for the printed table (default: all).")
flags.DEFINE_integer("digits", 4, "Digits after the decimal point.", lower_bound=0)
flags.mark_flag_as_required("output_root")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    path = os.path.join(FLAGS.output_root, report_output.AGGREGATE_FILE)
    try:
        runs.check_output_dir(FLAGS.output_root, flag="output_root")
        report_output.check_aggregate_file(path)  # before the runs are read
        table = sweep.aggregate(sweep.collect(FLAGS.output_root))
        if not table:
            raise ValueError(f"no finished runs (metrics.json) under {FLAGS.output_root}")
        report_output.write_aggregate(path, table)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    keys = FLAGS.keys or sorted(set().union(*(t.keys() for t in table.values())))
    print(sweep.markdown_table(table, keys, digits=FLAGS.digits))


if __name__ == "__main__":
    app.run(main)
