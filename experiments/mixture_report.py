r"""The report of the ML-vs-VI infinite-mixture sweep: tables, figures, summary.

  python -m experiments.mixture_report --sweep_root=runs/mixture --output_dir=results/mixture

Reads SWEEP_ROOT/<config>/seed_<S>/metrics.json (``experiments.sweep`` with
``--binary=experiments.mixture_mnist``) and writes into OUTPUT_DIR
``tables.md`` (mean ± sample std (n seeds) per configuration), the figures of
``uqmix.studies.mixture_report.FIGURES`` (PNG, into --figures_dir when given; those
whose runs are absent are skipped and listed) and ``summary.json``.  Prints the
tables and the files written.
Exit codes: 1 bad flags; 2 bad data (no usable run, a metrics.json that is not a
JSON object, a ``seed_*`` folder without an integer, seeds of one folder made
with different configurations, seeds of a Fig. 10 configuration whose entropy
histograms have different bin edges) or an output folder that cannot be written;
all outputs are written or none.
"""

import sys

from absl import app, flags

from uqmix.studies import mixture_report

FLAGS = flags.FLAGS
flags.DEFINE_string("sweep_root", None, "The sweep's output_root (one folder per configuration).")
flags.DEFINE_string("output_dir", None, "Folder that receives tables.md, figures, summary.json.")
flags.DEFINE_string("figures_dir", None, "Folder for the figures (default: --output_dir).")
flags.DEFINE_list(
    "weight_variance_configs",
    [],
    "Configuration folders shown in weight_variance_bars.png (default: ML/VI at "
    "λ = 1 with σ² ∈ {0.5, 1, 3} and at σ² = 1 with λ = 0.1).",
)
flags.mark_flags_as_required(["sweep_root", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        report = mixture_report.write_report(
            FLAGS.sweep_root,
            FLAGS.output_dir,
            FLAGS.weight_variance_configs or None,
            figures_dir=FLAGS.figures_dir,
        )
    except mixture_report.UnknownConfigurations as error:
        raise app.UsageError(str(error)) from None
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report["tables"])
    for note in report["notes"]:
        print(f"note: {note}")
    for path in report["written"]:
        print(f"wrote {path}")
    for filename, reason in report["skipped"].items():
        print(f"skipped {filename}: {reason}")


if __name__ == "__main__":
    app.run(main)
