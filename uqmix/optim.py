"""Optimisers and learning-rate schedules from flag values.

``make_optimizer(name, learning_rate, ...)``:

* ``"sgd"``: SGD with momentum μ, Nesterov by default:
  v ← μ·v − η_t·g,  θ ← θ + μ·v − η_t·g  (Keras's formulation);
* ``"adam"``: Adam (β1 = 0.9, β2 = 0.999, ε = 1e−7).

Learning rate η_t (``make_learning_rate``): ``"constant"``, or ``"step"``
decay, η_t = η_0 · rate^⌊t / every⌋ (t = optimiser step).

Gradient clipping by *global* norm: g ← g · c / max(‖g‖₂, c) over all
variables together.  Keras 3 clips each replica's partial gradient *before*
it sums them across replicas (``BaseOptimizer.apply``), which under a
``tf.distribute`` strategy clips the wrong vector; the optimisers here first
sum the gradients over replicas, compute the factor c / max(‖Σ_r g_r‖, c)
from the global gradient and scale every replica's part by it, so that the
sum the optimiser then applies is exactly the clipped global gradient, as on
one device.

Weight decay: ``decoupled_weight_decay`` w is Keras's decoupled decay,
θ ← θ − η_t·w·θ each step (AdamW-style).  L2 regularisation in the loss
(classic SGD weight decay) is a backbone option (``weight_decay``), not here.
"""

import keras
import tensorflow as tf

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step")


class _ReplicaConsistentClipping:
    """Mixin: global-norm clipping of the gradient summed over replicas (see module doc)."""

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if not self.global_clipnorm or context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        present = [g for g in grads if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
        clip = tf.cast(self.global_clipnorm, present[0].dtype)
        factor = clip / tf.maximum(tf.linalg.global_norm(summed), clip)
        return [None if g is None else g * tf.cast(factor, g.dtype) for g in grads]


@keras.saving.register_keras_serializable(package="uqmix")
class SGD(_ReplicaConsistentClipping, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with replica-consistent global-norm clipping."""


@keras.saving.register_keras_serializable(package="uqmix")
class Adam(_ReplicaConsistentClipping, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with replica-consistent global-norm clipping."""


def make_learning_rate(learning_rate, schedule="constant", decay_every_steps=None, decay_rate=0.1):
    """η_0 (a float) or the step-decay schedule η_t = η_0 · rate^⌊t / every⌋."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    if schedule == "constant":
        return float(learning_rate)
    if decay_every_steps is None or int(decay_every_steps) < 1:
        raise ValueError(f"step decay needs decay_every_steps >= 1, got {decay_every_steps}.")
    if not 0 < decay_rate <= 1:
        raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate}.")
    return keras.optimizers.schedules.ExponentialDecay(
        float(learning_rate),
        decay_steps=int(decay_every_steps),
        decay_rate=float(decay_rate),
        staircase=True,
    )


def make_optimizer(
    name,
    learning_rate,
    *,
    momentum=0.9,
    nesterov=True,
    schedule="constant",
    decay_every_steps=None,
    decay_rate=0.1,
    clip_norm=None,
    decoupled_weight_decay=None,
):
    """The optimiser ``name`` ("sgd" | "adam") configured as the module docstring says.

    clip_norm: global-norm clipping threshold c (> 0), or None / 0 for none.
    decoupled_weight_decay: w (≥ 0) of θ ← θ − η_t·w·θ, or None / 0 for none.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    lr = make_learning_rate(learning_rate, schedule, decay_every_steps, decay_rate)
    if clip_norm is not None and clip_norm < 0:
        raise ValueError(f"clip_norm must be > 0 (or 0 for none), got {clip_norm}.")
    if decoupled_weight_decay is not None and decoupled_weight_decay < 0:
        raise ValueError(f"decoupled_weight_decay must be >= 0, got {decoupled_weight_decay}.")
    options = {
        "learning_rate": lr,
        "global_clipnorm": float(clip_norm) if clip_norm else None,
        "weight_decay": float(decoupled_weight_decay) if decoupled_weight_decay else None,
    }
    if name == "sgd":
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        return SGD(momentum=float(momentum), nesterov=bool(nesterov), **options)
    return Adam(**options)
