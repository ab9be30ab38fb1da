r"""Aggregates a sweep's metrics.json files into tables (mean ± std over seeds).

  python -m experiments.aggregate --output_root=runs/mixture --keys=test.accuracy,ood.auroc

Writes OUTPUT_ROOT/aggregate.json (every scalar metric: mean, std, n) and
prints a Markdown table of --keys (all keys if empty).
"""
from absl import app, flags

from uqmix import runs, sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("output_root", None, "The sweep's output_root.")
flags.DEFINE_list("keys", [], "Dotted metric keys for the printed table (default: all).")
flags.DEFINE_integer("digits", 4, "Digits after the decimal point.")
flags.mark_flag_as_required("output_root")


def main(argv):
    del argv
    try:
        table = sweep.aggregate(sweep.collect(FLAGS.output_root))
    except ValueError as error:
        raise app.UsageError(str(error))
    if not table:
        raise app.UsageError(f"no finished runs (metrics.json) under {FLAGS.output_root}")
    runs.atomic_write_json(f"{FLAGS.output_root}/aggregate.json", table)
    keys = FLAGS.keys or sorted(set().union(*(t.keys() for t in table.values())))
    print(sweep.markdown_table(table, keys, digits=FLAGS.digits))


if __name__ == "__main__":
    app.run(main)
