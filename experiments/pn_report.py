r"""The Prior Network study's report: tables and the adaptive-attack figures.

  python -m experiments.pn_report --sweep_root=runs/pn --output_dir=results/pn \
      --figures_dir=results/figures/pn
  python -m experiments.pn_report --sweep_root=runs/pn_full,runs/pn_full_kldir,runs/pn_full_cw \
      --output_dir=results/pn_full --figures_dir=results/figures/pn_full

Reads SWEEP_ROOT/<configuration>/seed_<S>/metrics.json (``experiments.sweep``
with ``--binary=experiments.cifar_rkl``) and writes OUTPUT_DIR/tables.md
(mean ± sample std (n seeds) per configuration: classification, OOD detection, and the
adaptive attacks' curves, white-box and, where recorded, black-box transfer, one block per
attack method, C&W L2 over max_iterations with its median L2), OUTPUT_DIR/summary.json and
attack_curves.png, or attack_curves_<method>.png per method when the runs used C&W or
several methods (into --figures_dir when given), and uqmix_report.json, the marker of a
uqmix report's folder, into each folder written.  A folder without the marker that already
holds a file the report would write (the user's own tables.md, say) is refused before the runs
are read, naming the files (``uqmix.report_output``); a marked folder is regenerated.
--sweep_root takes several roots (comma-separated) for one report: a folder name found under
several roots gives one configuration per root, named after the attack its runs recorded, e.g.
``mnist_rkl (criterion kl_dir)``.  Exit codes: 1 bad flags; 2 bad data (no finished run under a root,
a metrics.json that is not a JSON object, a ``seed_*`` folder without an integer, seeds of
one folder made with different configurations, one folder name under two roots with the
same recorded attack) or an output folder that cannot be written or holds, unmarked, a file the
report would write; all outputs are written or none.
"""

from absl import app, flags

from experiments import report_cli
from uqmix.studies import pn_report

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "sweep_root",
    None,
    "The sweep's output_root (one folder per configuration); several, comma-separated, make "
    "one report.",
)
flags.DEFINE_string("output_dir", None, "Folder that receives tables.md and summary.json.")
flags.DEFINE_string("figures_dir", None, "Folder for attack_curves.png (default: --output_dir).")
flags.mark_flags_as_required(["sweep_root", "output_dir"])


def main(argv):
    roots = report_cli.sweep_roots(argv, FLAGS.sweep_root)
    return report_cli.write_and_print(
        lambda: pn_report.write_report(roots, FLAGS.output_dir, FLAGS.figures_dir)
    )


if __name__ == "__main__":
    app.run(main)
