"""Splices the generated tables into the hand-written reproduction report.

  python -m experiments.splice_report --report=results/REPRODUCTION.md
  python -m experiments.splice_report --report=results/REPRODUCTION.md --check

Every region ``<!-- splice pn_full/tables.md#TITLE -->`` … ``<!-- end splice -->`` of the
report is replaced by the section TITLE of that file (relative to the report's folder),
headings rendered bold (``uqmix.studies.report_splice``).  Run it after a report binary
(``mixture_report``, ``pn_report``) has regenerated a ``tables.md``.  ``--check`` writes nothing
and exits 1 when a region is stale, naming it.  Exit codes: 0 done (or up to date); 1 bad flags
or, with ``--check``, stale regions; 2 a missing report, file or section, a broken region, or a
report that cannot be rewritten (read-only, or in a folder that is not writable: refused before
any work, nothing written).  Text outside the regions is kept byte for byte (CRLF line endings
included).  The report is written atomically, as an editor saves it: a symbolic link
``--report`` stays a link and its target is updated; the file keeps its mode.
"""

import sys

from absl import app, flags

from uqmix.studies import report_splice

FLAGS = flags.FLAGS
flags.DEFINE_string("report", None, "The Markdown report with splice regions.")
flags.DEFINE_bool("check", False, "Write nothing; exit 1 when a region is not up to date.")
flags.mark_flag_as_required("report")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if FLAGS.check:
            stale = report_splice.stale_regions(FLAGS.report)
            for line, name in stale:
                print(f"{FLAGS.report}:{line}: stale region {name}", file=sys.stderr)
            if stale:
                print(
                    f"run: python -m experiments.splice_report --report={FLAGS.report}",
                    file=sys.stderr,
                )
                return 1
            print(f"{FLAGS.report}: every splice region is up to date")
            return 0
        report_splice.splice_file(FLAGS.report)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {FLAGS.report}")
    return 0


if __name__ == "__main__":
    app.run(main)
