"""The two studies uqmix reproduces, built on the library and apart from it.

* ``pn_experiment`` — Prior Networks on images (``python -m experiments.cifar_rkl``);
* ``synthetic_experiment`` — forward vs reverse KL on ``synthetic3`` (``experiments.synthetic_rkl``);
* ``mixture_experiment`` — infinite mixtures, ML vs VI (``experiments.mixture_mnist``);
* ``mixture_report`` / ``pn_report`` — the studies' tables and figures over seeds
  (``pn_attacks``: the attack sections of ``pn_report``).

Each experiment module declares an option table (``OPTIONS``), ``validate_config``, ``run``
and ``summary``; the binaries in ``experiments/`` only parse flags and call them.  The library
(everything in ``uqmix`` outside this package) never imports from here (a test checks it).
"""
