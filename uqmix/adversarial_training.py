"""Generalised adversarial training of Prior Networks (and DNN-ADV), via PriorNetwork's hook.

``AdversarialPriorNetwork`` is a ``PriorNetwork`` whose training step adds one
term built from the in-domain batch (x, y) (Malinin & Gales 2019, §5):

1. a random target class t_b ≠ y_b per example, uniform over the other K − 1
   classes: t = (y + 1 + u) mod K, u uniform on {0, …, K − 2};
2. a step size per example, ε_b = |n_b|, n_b ~ N(0, σ_ε²);
3. targeted FGSM (L∞): x'_b = clip(x_b − ε_b · sign(∇_x ℓ(z(x)_b, t_b)), lo, hi),
   ℓ the model's own per-example loss towards class t (for a Prior Network
   the KL to the target Dir(c·1 + β_in·onehot(t)), for the cross-entropy
   network −log softmax(z)_t) — descending it moves x towards a confident
   prediction of t.  x' is a constant for the weight update;
4. the adversarial term  γ_adv · ℓ_adv(z(x'), y) with
   * Prior Networks: the model's KL (reverse or forward) to the target
     α̂_adv = c·1 + β_adv·onehot(y), β_adv = 1 (``adversarial_target_concentration``),
     divided by β_in when the model normalises its losses by β_in;
   * ``loss="cross_entropy"`` (DNN-ADV, standard adversarial training):
     cross-entropy −log softmax(z(x'))_y.

The term enters the loss as ``PriorNetwork.extra_training_terms`` (averaged
over the global batch) and is reported as the metric ``adversarial_loss``.

Cost: ∇_x in step 3 is taken through the step's own clean forward pass (the
training-mode pass of ``PriorNetwork._loss_terms``, watched by an input tape),
so a step costs one extra backward pass to the inputs plus one forward and
backward pass of the adversarial batch — not a separate forward pass for the
attack.  (Called outside ``train_step``, the hook crafts x' with its own
inference-mode forward pass.)
Random draws come from a ``keras.random.SeedGenerator`` owned by the model, so
they are seeded, checkpointed with the model and resumed exactly.
"""

import keras
import numpy as np
import tensorflow as tf

from uqmix.attacks.norms import optimize_linear
from uqmix.models.prior_network import PriorNetwork


def random_other_classes(labels, num_classes, seed):
    """t = (y + 1 + u) mod K, u uniform on {0, …, K − 2}: uniform over the classes ≠ y."""
    labels = tf.cast(labels, tf.int32)
    shift = keras.random.randint(tf.shape(labels), 0, num_classes - 1, dtype="int32", seed=seed)
    return tf.math.floormod(labels + 1 + shift, num_classes)


def random_step_sizes(batch_size, stddev, seed, dtype=tf.float32):
    """ε_b = |n_b|, n_b ~ N(0, stddev²), [batch_size]."""
    return tf.abs(keras.random.normal([batch_size], stddev=stddev, dtype=dtype, seed=seed))


def targeted_fgsm(logits_fn, loss_fn, x, targets, eps, clip_min=None, clip_max=None):
    """x' = clip(x − eps · sign(∇_x Σ_b loss_fn(logits_fn(x)_b, t_b))) per example.

    eps: [B] per-example step sizes (or a scalar); returns x' with its
    gradient stopped (a constant input for the training step).
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(loss_fn(logits_fn(x), targets))
    return fgsm_descent(x, tape.gradient(loss, x), eps, clip_min, clip_max)


def fgsm_descent(x, grad, eps, clip_min=None, clip_max=None):
    """x' = clip(x − eps · sign(grad)) per example, gradient stopped; eps [B] or scalar."""
    eps = tf.cast(eps, x.dtype)
    if eps.shape.rank == 1:
        eps = tf.reshape(eps, [-1] + [1] * (x.shape.rank - 1))
    adversarial = x - optimize_linear(grad, eps, norm=np.inf)
    if clip_min is not None or clip_max is not None:
        low = -np.inf if clip_min is None else clip_min
        high = np.inf if clip_max is None else clip_max
        adversarial = tf.clip_by_value(adversarial, tf.cast(low, x.dtype), tf.cast(high, x.dtype))
    return tf.stop_gradient(adversarial)


@keras.saving.register_keras_serializable(package="uqmix")
class AdversarialPriorNetwork(PriorNetwork):
    """A ``PriorNetwork`` trained with generalised adversarial training (module docstring).

    epsilon_stddev: σ_ε of the per-example FGSM step |N(0, σ_ε²)| (pixel units).
    adversarial_weight: γ_adv.
    adversarial_target_concentration: β_adv of α̂_adv = c·1 + β_adv·onehot(y).
    clip_min, clip_max: input range the adversarial inputs are clipped to
      (pixels: 0, 1; None for unbounded inputs).
    seed: seed of the model's SeedGenerator for targets and step sizes.
    Other arguments as ``PriorNetwork``.
    """

    extra_term_names = ("adversarial_loss",)

    def __init__(
        self,
        backbone,
        num_classes,
        epsilon_stddev=0.1,
        adversarial_weight=1.0,
        adversarial_target_concentration=1.0,
        clip_min=0.0,
        clip_max=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(backbone, num_classes, **kwargs)
        if not epsilon_stddev > 0:
            raise ValueError(f"epsilon_stddev must be > 0, got {epsilon_stddev}.")
        if not adversarial_weight >= 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}.")
        if not adversarial_target_concentration >= 0:
            raise ValueError(
                "adversarial_target_concentration must be >= 0, got "
                f"{adversarial_target_concentration}."
            )
        if clip_min is not None and clip_max is not None and not clip_min < clip_max:
            raise ValueError(f"clip_min must be < clip_max, got {clip_min}, {clip_max}.")
        self.epsilon_stddev = float(epsilon_stddev)
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_target_concentration = float(adversarial_target_concentration)
        self.clip_min = None if clip_min is None else float(clip_min)
        self.clip_max = None if clip_max is None else float(clip_max)
        self.seed = seed
        # PriorNetwork builds itself in __init__ when its backbone is built, which locks
        # Keras's state tracking; the generator's state is model state (checkpointed, saved),
        # so it is added the way Keras adds variables to a built layer.
        was_locked = self._tracker.locked
        self._tracker.unlock()
        try:
            self.adversarial_seed_generator = keras.random.SeedGenerator(seed)
        finally:
            if was_locked:
                self._tracker.lock()

    def adversarial_loss(self, logits, labels):
        """ℓ_adv per example [B] on adversarial logits (module docstring, step 4): the
        model's loss towards α̂_adv = c·1 + β_adv·onehot(y) (``PriorNetwork.loss_towards``)."""
        return self.loss_towards(logits, labels, self.adversarial_target_concentration)

    def _draw_targets_and_steps(self, x, y):
        targets = random_other_classes(y, self.num_classes, self.adversarial_seed_generator)
        eps = random_step_sizes(
            tf.shape(x)[0], self.epsilon_stddev, self.adversarial_seed_generator, dtype=x.dtype
        )
        return targets, eps

    def adversarial_inputs(self, x, y):
        """Targeted FGSM inputs x' of a batch, with their own inference-mode forward pass."""
        x = tf.convert_to_tensor(x)
        targets, eps = self._draw_targets_and_steps(x, y)
        return targeted_fgsm(
            lambda inputs: self(inputs, training=False),
            self.per_example_loss,
            x,
            targets,
            eps,
            self.clip_min,
            self.clip_max,
        )

    def _loss_terms(self, x, y, x_ood, training):
        """PriorNetwork's forward pass and loss; in training also crafts x' from that pass."""
        if not training:
            return super()._loss_terms(x, y, x_ood, training)
        x = tf.convert_to_tensor(x)
        targets, eps = self._draw_targets_and_steps(x, y)
        with tf.GradientTape(watch_accessed_variables=False) as input_tape:
            input_tape.watch(x)
            loss, unscaled, terms = super()._loss_terms(x, y, x_ood, training)
            crafting_loss = tf.reduce_sum(self.per_example_loss(terms["logits_in"], targets))
        self._crafted_inputs = fgsm_descent(
            x, input_tape.gradient(crafting_loss, x), eps, self.clip_min, self.clip_max
        )
        return loss, unscaled, terms

    def extra_training_terms(self, x, y):
        """{"adversarial_loss": γ_adv · ℓ_adv(z(x'), y)} per example."""
        x_adv = self.__dict__.pop("_crafted_inputs", None)
        if x_adv is None:
            x_adv = self.adversarial_inputs(x, y)
        logits_adv = self(x_adv, training=True)
        return {"adversarial_loss": self.adversarial_weight * self.adversarial_loss(logits_adv, y)}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "epsilon_stddev": self.epsilon_stddev,
                "adversarial_weight": self.adversarial_weight,
                "adversarial_target_concentration": self.adversarial_target_concentration,
                "clip_min": self.clip_min,
                "clip_max": self.clip_max,
                "seed": self.seed,
            }
        )
        return config
