"""The ``train_step``/``test_step`` shared by models trained on sampled logits [S, B, K].

A model mixes in ``SampledTrainingMixin`` and implements

* ``training_logits(x, training)`` → logits [S, B, K] of S components
  (S = 1 for a plain network, S weight samples for an infinite mixture,
  M members for an ensemble);
* ``per_example_data_loss(labels, logits)`` → [B], the data term of its
  objective per example;
* ``regularization_loss()`` → (term, reported): the scalar term added once
  per step (e.g. (λ/N)·KL or the L2 penalty) and the scalar reported as the
  regularizer metric (e.g. the unweighted KL, or the term itself).

The step minimises  Σ_b data_loss_b / global_batch + regularization / replicas:
per-example losses are averaged over the *global* batch and the regularizer
is split over replicas (``tf.nn.compute_average_loss`` /
``tf.nn.scale_regularization_loss``), so under a ``tf.distribute`` strategy
the gradients the optimizer sums over replicas are those of the full-batch
loss.  Reported metrics: ``loss`` (data term + regularizer, unscaled),
``nll`` (the data term), the reported regularizer under ``regularizer_metric_name``
and ``accuracy`` of the mixture's mean prediction (1/S) Σ_s softmax(logits_s).
"""

import keras
import tensorflow as tf

from uqmix import uncertainty
from uqmix.layers import full_precision


class SampledTrainingMixin:
    """Custom ``train_step``/``test_step`` for models with logits [S, B, K]."""

    regularizer_metric_name = "regularizer"

    def training_logits(self, x, training):  # pragma: no cover - abstract
        raise NotImplementedError

    def per_example_data_loss(self, labels, logits):  # pragma: no cover - abstract
        raise NotImplementedError

    def regularization_loss(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _make_trackers(self):
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")
        self.regularizer_tracker = keras.metrics.Mean(name=self.regularizer_metric_name)
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.nll_tracker,
            self.regularizer_tracker,
            self.accuracy_tracker,
        ]

    @staticmethod
    def _unpack(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("Training and evaluation need labels: pass (x, y) batches.")
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by this model's objective.")
        return x, y

    def _objective_terms(self, x, y, training):
        logits = full_precision(self.training_logits(x, training=training))
        data_loss = self.per_example_data_loss(y, logits)  # [B]
        term, reported = self.regularization_loss()
        term = tf.cast(term, data_loss.dtype)
        scaled_loss = tf.nn.compute_average_loss(data_loss) + tf.nn.scale_regularization_loss(term)
        return logits, data_loss, (term, reported), scaled_loss

    def _update_trackers(self, y, logits, data_loss, regularizer):
        term, reported = regularizer
        nll = tf.reduce_mean(data_loss)
        self.loss_tracker.update_state(nll + term)
        self.nll_tracker.update_state(nll)
        self.regularizer_tracker.update_state(reported)
        mean_probs = tf.exp(uncertainty.log_mean_probs(tf.nn.log_softmax(logits, axis=-1)))
        self.accuracy_tracker.update_state(y, mean_probs)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = self._unpack(data)
        with tf.GradientTape() as tape:
            logits, data_loss, regularizer, scaled_loss = self._objective_terms(x, y, training=True)
            scaled_loss = self.optimizer.scale_loss(scaled_loss)  # mixed_float16: loss scaling
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(y, logits, data_loss, regularizer)

    def test_step(self, data):
        x, y = self._unpack(data)
        logits, data_loss, regularizer, _ = self._objective_terms(x, y, training=False)
        return self._update_trackers(y, logits, data_loss, regularizer)
