"""Dirichlet Prior Network: any backbone's logits z define Dir(α), α = exp(z).

``PriorNetwork(backbone, num_classes, loss=...)`` wraps a Keras model from
inputs to logits and trains it with ``model.fit`` through its own
``train_step`` / ``test_step``.

Training data — each element of the dataset is one of
  * ``(x, y)``: an in-domain batch only;
  * ``((x, x_ood), y)``: an in-domain batch, an OOD batch and the in-domain
    labels — Keras's (x, y) convention with x the pair of input batches,
    exactly what ``uqmix.data.zip_in_and_ood(in_ds, ood_ds)`` yields.
    (``((x, y), x_ood)`` is accepted too: of the nested pair the rank-1
    tensor is taken as the labels.)
Both batches go through ONE forward pass (concatenated along the batch axis,
so batch-norm statistics see both) and are split again afterwards.

Loss, with per-example terms ℓ from ``uqmix.objectives.dirichlet_losses``:

    loss = mean_in ℓ(z, y; β_in) + γ · mean_ood ℓ(z, flat) + Σ regularisation losses
           + Σ ``extra_training_terms`` (a hook, below)

* ``loss="reverse_kl"``: ℓ = KL(Dir(α) ‖ Dir(α̂)) (Malinin & Gales 2019);
* ``loss="forward_kl"``: ℓ = KL(Dir(α̂) ‖ Dir(α)) (Malinin & Gales 2018);
  α̂ = c·1 + β_in·onehot(y) in-domain, the flat c·1 for OOD inputs;
  ``normalize_by_target`` divides both KL terms by β_in (the reference
  implementation's optimiser scaling);
* ``loss="cross_entropy"``: the plain-network (DNN) baseline: in-domain
  cross-entropy; OOD inputs, when given and γ > 0, are trained towards the
  uniform prediction (cross-entropy to uniform = outlier exposure).  To
  ignore OOD data, pass γ = 0 or feed ``(x, y)`` batches only.

Distribution: every mean is a per-example sum divided by the *global* batch
size (``tf.nn.compute_average_loss``) and regularisation losses are divided by
the number of replicas (``tf.nn.scale_regularization_loss``), so the gradients
summed over replicas under a ``tf.distribute`` strategy equal the gradient of
the global-batch loss.  Metrics are Keras ``Mean`` metrics of the per-example
terms, aggregated over replicas by Keras.

Metrics: ``loss``, ``in_domain_loss``, ``ood_loss``, ``accuracy`` (in-domain),
``mean_alpha0_in`` and ``mean_alpha0_ood`` (α0 = Σ_k α_k); the OOD ones only
on steps that have an OOD batch (logs hold the metrics a step updated).

Hook for further training terms (e.g. adversarial training): a subclass sets
``extra_term_names`` (a tuple of names) and overrides
``extra_training_terms(x, y)`` to return a dict name → per-example loss [N]
(weights included).  ``train_step`` calls it inside its gradient tape with the
in-domain batch, adds the global-batch average of each term to the loss and
reports each as a metric of that name.  Evaluation (``test_step``) does not
call it.
"""

import keras
import tensorflow as tf

from uqmix import dirichlet
from uqmix.models.base import PredictiveModelMixin
from uqmix.objectives import dirichlet_losses

LOSSES = ("reverse_kl", "forward_kl", "cross_entropy")


def _unpack_batch(data):
    """(x, y, x_ood or None) from ``(x, y)``, ``((x, x_ood), y)`` or ``((x, y), x_ood)``.

    A nested pair is read by rank: labels are rank 1, inputs rank >= 2, so
    the rank-1 tensor is y.
    """
    if isinstance(data, (tuple, list)) and len(data) == 3 and data[2] is None:
        data = data[:2]  # (x, y, None) from train_on_batch / test_on_batch
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            "PriorNetwork batches must be (x, y) or ((x, x_ood), y) (as made by "
            "uqmix.data.zip_in_and_ood); sample weights and unlabelled batches are not supported, "
            f"got {type(data).__name__} of {len(data) if isinstance(data, (tuple, list)) else 1} "
            "parts."
        )
    first, second = data
    if not isinstance(first, (tuple, list)):
        return first, second, None
    if len(first) != 2:
        raise ValueError(
            "PriorNetwork batches must be (x, y) or ((x, x_ood), y); the nested "
            f"part has {len(first)} elements."
        )
    if _rank(second) == 1:
        return first[0], second, first[1]
    if _rank(first[1]) == 1:
        return first[0], first[1], second
    raise ValueError("PriorNetwork batches ((x, x_ood), y) need labels y of shape [batch].")


def _rank(value):
    return tf.convert_to_tensor(value).shape.rank


def _precision(logits):
    """α0 = Σ_k exp(z_k) per example (guarded α, as the losses use)."""
    return tf.reduce_sum(dirichlet.alpha_from_logits(tf.cast(logits, tf.float32)), axis=-1)


@keras.saving.register_keras_serializable(package="uqmix")
class PriorNetwork(keras.Model, PredictiveModelMixin):
    """A Prior Network around ``backbone`` (a Keras model from inputs to K logits).

    backbone: keras.Model mapping inputs to logits [B, num_classes].
    num_classes: K (checked against the backbone's output).
    loss: "reverse_kl" | "forward_kl" | "cross_entropy" (see the module docstring).
    target_concentration: β_in of the in-domain target α̂ = c·1 + β_in·onehot(y).
    concentration: c, the flat part of every target (the OOD target is c·1).
    ood_weight: γ, the weight of the OOD term.
    normalize_by_target: divide the KL terms by β_in.
    """

    predictive_kind = "dirichlet_logits"
    extra_term_names = ()

    def __init__(
        self,
        backbone,
        num_classes,
        loss="reverse_kl",
        target_concentration=100.0,
        concentration=1.0,
        ood_weight=1.0,
        normalize_by_target=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(f"backbone must be a Keras model, got {type(backbone).__name__}.")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}.")
        num_classes = int(num_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        output_shape = getattr(backbone, "output_shape", None)
        if (
            isinstance(output_shape, tuple)
            and output_shape
            and output_shape[-1] not in (None, num_classes)
        ):
            raise ValueError(
                f"backbone outputs {output_shape[-1]} logits but num_classes is {num_classes}."
            )
        if loss != "cross_entropy" and not target_concentration > 0:
            raise ValueError(f"target_concentration must be > 0, got {target_concentration}.")
        if not concentration > 0:
            raise ValueError(f"concentration must be > 0, got {concentration}.")
        if not ood_weight >= 0:
            raise ValueError(f"ood_weight must be >= 0, got {ood_weight}.")
        self.backbone = backbone
        self.num_classes = num_classes
        self.loss_name = loss
        self.target_concentration = float(target_concentration)
        self.concentration = float(concentration)
        self.ood_weight = float(ood_weight)
        self.normalize_by_target = bool(normalize_by_target)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.in_domain_tracker = keras.metrics.Mean(name="in_domain_loss")
        self.ood_tracker = keras.metrics.Mean(name="ood_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.alpha0_in_tracker = keras.metrics.Mean(name="mean_alpha0_in")
        self.alpha0_ood_tracker = keras.metrics.Mean(name="mean_alpha0_ood")
        self.extra_trackers = {
            name: keras.metrics.Mean(name=name) for name in self.extra_term_names
        }
        if backbone.built and getattr(backbone, "inputs", None):
            # No weights of its own: built as soon as the backbone is, so a model
            # restored from a checkpoint saves and loads without a forward pass.
            self.build(backbone.input_shape)

    # -- forward ------------------------------------------------------------
    def call(self, x, training=False):
        """Logits z [B, K]; α = exp(z)."""
        return self.backbone(x, training=training)

    def predictive_parameters(self, x, num_samples, training=False):
        """Logits z [B, K] (a Dirichlet is closed form: ``num_samples`` is unused)."""
        return self(x, training=training)

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.built = True

    # -- losses ---------------------------------------------------------------
    def per_example_loss(self, logits, labels):
        """ℓ per example [B]; labels None = OOD (flat Dirichlet / uniform) target."""
        return self.loss_towards(logits, labels, self.target_concentration)

    def loss_towards(self, logits, labels, target_concentration):
        """The model's loss per example [B] towards α̂ = c·1 + target_concentration·onehot(y)
        (labels None: c·1): KL(Dir(α) ‖ Dir(α̂)) for "reverse_kl", KL(Dir(α̂) ‖ Dir(α)) for
        "forward_kl", divided by β_in (``self.target_concentration``) when
        ``normalize_by_target``; for "cross_entropy" −log softmax(z)_y, or with labels None the
        cross-entropy to the uniform distribution (no α̂, no division)."""
        logits = tf.cast(logits, tf.float32)
        if self.loss_name == "cross_entropy":
            return dirichlet_losses.cross_entropy_loss(logits, labels)
        loss_fn = (
            dirichlet_losses.reverse_kl_loss
            if self.loss_name == "reverse_kl"
            else dirichlet_losses.forward_kl_loss
        )
        loss = loss_fn(logits, labels, target_concentration, self.concentration)
        return loss / self.target_concentration if self.normalize_by_target else loss

    def extra_training_terms(self, x, y):
        """Hook: dict name → per-example loss [N] for names in ``extra_term_names``; none here."""
        return {}

    def _loss_terms(self, x, y, x_ood, training):
        """Forward pass of in-domain (+ OOD) inputs; the scaled loss and per-example terms."""
        x = tf.convert_to_tensor(x)
        num_in = tf.shape(x)[0]
        inputs = x if x_ood is None else tf.concat([x, tf.cast(x_ood, x.dtype)], axis=0)
        logits = self(inputs, training=training)
        logits_in = logits[:num_in]
        terms = {"logits_in": logits_in, "in": self.per_example_loss(logits_in, y)}
        loss = tf.nn.compute_average_loss(terms["in"])
        unscaled = tf.reduce_mean(terms["in"])
        if x_ood is not None:
            terms["logits_ood"] = logits[num_in:]
            terms["ood"] = self.per_example_loss(terms["logits_ood"], None)
            loss += self.ood_weight * tf.nn.compute_average_loss(terms["ood"])
            unscaled += self.ood_weight * tf.reduce_mean(terms["ood"])
        if self.losses:
            regularization = tf.add_n([tf.cast(term, tf.float32) for term in self.losses])
            loss += tf.nn.scale_regularization_loss(regularization)
            unscaled += regularization
        return loss, unscaled, terms

    def _update_metrics(self, y, terms, unscaled, extra=None):
        self.loss_tracker.update_state(unscaled, sample_weight=tf.shape(terms["in"])[0])
        self.in_domain_tracker.update_state(terms["in"])
        self.accuracy_tracker.update_state(y, terms["logits_in"])
        self.alpha0_in_tracker.update_state(_precision(terms["logits_in"]))
        updated = [
            self.loss_tracker,
            self.in_domain_tracker,
            self.accuracy_tracker,
            self.alpha0_in_tracker,
        ]
        if "ood" in terms:
            self.ood_tracker.update_state(terms["ood"])
            self.alpha0_ood_tracker.update_state(_precision(terms["logits_ood"]))
            updated += [self.ood_tracker, self.alpha0_ood_tracker]
        for name, value in (extra or {}).items():
            self.extra_trackers[name].update_state(value)
            updated.append(self.extra_trackers[name])
        return {metric.name: metric.result() for metric in updated}

    # -- Keras hooks ------------------------------------------------------------
    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.in_domain_tracker,
            self.ood_tracker,
            self.accuracy_tracker,
            self.alpha0_in_tracker,
            self.alpha0_ood_tracker,
            *self.extra_trackers.values(),
        ]

    def train_step(self, data):
        x, y, x_ood = _unpack_batch(data)
        with tf.GradientTape() as tape:
            loss, unscaled, terms = self._loss_terms(x, y, x_ood, training=True)
            extra = self.extra_training_terms(x, y)
            if set(extra) != set(self.extra_term_names):
                raise ValueError(
                    f"extra_training_terms returned {sorted(extra)}, expected "
                    f"extra_term_names {sorted(self.extra_term_names)}."
                )
            for value in extra.values():
                value = tf.cast(value, tf.float32)
                loss += tf.nn.compute_average_loss(value)
                unscaled += tf.reduce_mean(value)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(y, terms, unscaled, extra)

    def test_step(self, data):
        x, y, x_ood = _unpack_batch(data)
        _, unscaled, terms = self._loss_terms(x, y, x_ood, training=False)
        return self._update_metrics(y, terms, unscaled)

    def predict_step(self, data):
        if isinstance(data, (tuple, list)):
            data = data[0]
        return self(data, training=False)

    # -- serialisation ----------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes,
                "loss": self.loss_name,
                "target_concentration": self.target_concentration,
                "concentration": self.concentration,
                "ood_weight": self.ood_weight,
                "normalize_by_target": self.normalize_by_target,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
