r"""The Prior Network study's report: tables and the adaptive-attack figure.

  python -m experiments.pn_report --sweep_root=runs/pn --output_dir=results/pn \
      --figures_dir=results/figures/pn

Reads SWEEP_ROOT/<configuration>/seed_<S>/metrics.json (``experiments.sweep``
with ``--binary=experiments.cifar_rkl``) and writes OUTPUT_DIR/tables.md
(mean ± sample std (n seeds) per configuration), OUTPUT_DIR/summary.json and
attack_curves.png (into --figures_dir when given).  Exit codes: 1 bad flags; 2 bad data (no
finished run, a metrics.json that is not a JSON object, a ``seed_*`` folder
without an integer, seeds of one folder made with different configurations) or
an output folder that cannot be written; all outputs are written or none.
"""

import sys

from absl import app, flags

from uqmix.studies import pn_report

FLAGS = flags.FLAGS
flags.DEFINE_string("sweep_root", None, "The sweep's output_root (one folder per configuration).")
flags.DEFINE_string("output_dir", None, "Folder that receives tables.md and summary.json.")
flags.DEFINE_string("figures_dir", None, "Folder for attack_curves.png (default: --output_dir).")
flags.mark_flags_as_required(["sweep_root", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        report = pn_report.write_report(FLAGS.sweep_root, FLAGS.output_dir, FLAGS.figures_dir)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report["tables"])
    for path in report["written"]:
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
