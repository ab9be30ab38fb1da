"""A stand-in experiment binary for the sweep tests: writes metrics from its seed."""
from absl import app, flags

from uqmix import runs

flags.DEFINE_integer("seed", 0, "")
flags.DEFINE_string("output_dir", None, "")
flags.DEFINE_bool("resume", False, "")
flags.DEFINE_float("scale", 1.0, "")
flags.DEFINE_bool("fail", False, "")
flags.DEFINE_list("offsets", [], "added to the accuracy (a flag whose value holds commas)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.fail:
        raise SystemExit("asked to fail")
    runs.atomic_write_json(f"{FLAGS.output_dir}/metrics.json",
                           {"test": {"accuracy": FLAGS.scale * FLAGS.seed
                                     + sum(float(o) for o in FLAGS.offsets)}, "name": "x"})


if __name__ == "__main__":
    app.run(main)
