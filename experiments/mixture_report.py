r"""The report of the ML-vs-VI infinite-mixture sweep: tables, figures, summary.

  python -m experiments.mixture_report --sweep_root=runs/mixture --output_dir=results/mixture
  python -m experiments.mixture_report --sweep_root=runs/mixture,runs/mixture_grid \
      --output_dir=results/mixture_all --figures_dir=results/figures/mixture_all

Reads SWEEP_ROOT/<config>/seed_<S>/metrics.json (``experiments.sweep`` with
``--binary=experiments.mixture_mnist``) and flags.cfg; --sweep_root takes several roots
(comma-separated, empty entries ignored) for one report: a folder name found under one root
keeps its name, one found under several gives a configuration per root named
``<root label>/<folder>`` (the root's basename, or the root as given when two roots share a
basename), and --weight_variance_configs names configurations so.  Folders of one setting
under one root or several: the one with most seeds is used for what needs one (the earlier
root given among equals; the notes say which).  Writes into OUTPUT_DIR
``tables.md`` (mean ± sample std (n seeds) per configuration), the figures of
``uqmix.studies.mixture_report.FIGURES`` (PNG, into --figures_dir when given; those
whose runs are absent are skipped and listed), ``summary.json`` and, into each folder
written, ``uqmix_report.json``, the marker of a uqmix report's folder.  A folder without the
marker that already holds a file the report would write (the user's own tables.md, say) is
refused before the runs are read, naming the files (``uqmix.report_output``); a marked folder
is regenerated.  Prints the tables and the files written.
Exit codes: 1 bad flags; 2 bad data (a root without a usable run, a root given twice, a
metrics.json that is not a JSON object, a ``seed_*`` folder without an integer, seeds of one folder made
with different configurations, seeds of a Fig. 10 configuration whose entropy
histograms have different bin edges) or an output folder that cannot be written or holds,
unmarked, a file the report would write; all outputs are written or none.
"""

from absl import app, flags

from experiments import report_cli
from uqmix.studies import mixture_report

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "sweep_root",
    None,
    "The sweep's output_root (one folder per configuration); several, comma-separated, make "
    "one report (a folder name under several roots: `<root label>/<folder>` per root).",
)
flags.DEFINE_string("output_dir", None, "Folder that receives tables.md, figures, summary.json.")
flags.DEFINE_string("figures_dir", None, "Folder for the figures (default: --output_dir).")
flags.DEFINE_list(
    "weight_variance_configs",
    [],
    "Configurations shown in weight_variance_bars.png, named as in tables.md: the folder, "
    "`<root label>/<folder>` for a folder name under several roots (default: ML/VI at "
    "λ = 1 with σ² ∈ {0.5, 1, 3} and at σ² = 1 with λ = 0.1).",
)
flags.mark_flags_as_required(["sweep_root", "output_dir"])


def main(argv):
    roots = report_cli.sweep_roots(argv, FLAGS.sweep_root)

    def write_report():
        try:
            return mixture_report.write_report(
                roots,
                FLAGS.output_dir,
                FLAGS.weight_variance_configs or None,
                figures_dir=FLAGS.figures_dir,
            )
        except mixture_report.UnknownConfigurations as error:  # a bad flag: exit code 1
            raise app.UsageError(str(error)) from None

    return report_cli.write_and_print(write_report)


if __name__ == "__main__":
    app.run(main)
