"""A helper process of ``--training_processes`` (``uqmix.studies.parallel_training``):
``python -m uqmix.studies.training_process SPEC.json`` trains the networks its run assigned
to it, in the run's folder, exactly as the run would (``pn_experiment.train_networks``),
marks each one done as it finishes, and exits 0; any error exits non-zero with its traceback
in the helper's log."""

import sys


def main(argv):
    if len(argv) != 2:
        print("usage: python -m uqmix.studies.training_process SPEC.json", file=sys.stderr)
        return 2
    from uqmix.studies import parallel_training

    config, jobs, parent_pid = parallel_training.read_spec(argv[1])
    parallel_training.die_with_parent(parent_pid)

    from uqmix.attacks import gradient_attacks
    from uqmix.setup_utils import make_strategy, set_seed
    from uqmix.studies import pn_experiment

    config = pn_experiment.validate_config(config)
    set_seed(config["seed"], deterministic=config["deterministic"])
    gradient_attacks.set_jit_compile(config["jit_compile"])
    strategy = make_strategy("default")
    data = pn_experiment.load_data(config)
    for prefix, offset, name in jobs:
        pn_experiment.train_networks(
            config, data, strategy, seed_offset=offset, prefix=prefix, only=[name]
        )
        parallel_training.mark_done(config["output_dir"], name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
