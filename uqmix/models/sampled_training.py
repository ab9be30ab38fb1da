"""The ``train_step``/``test_step`` shared by models trained on sampled logits [S, B, K].

A model mixes in ``SampledTrainingMixin`` and implements

* ``training_logits(x, training)`` → logits [S, B, K] of S components
  (a model whose ``step_noise`` returns noise also takes ``noise=``)
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

A model whose random numbers are cheaper as their own XLA kernel may return them from
``step_noise(x)``: the step then draws them first and runs the forward and backward pass
as a second XLA program (``jit_compile=True``) that takes them as an input
(``training_logits(x, training, noise=...)``); the optimizer update and the metrics stay
TF ops.  Inside one XLA program XLA:CPU's random numbers cost about 3× a separate
kernel (bench/RESULTS.md, issue 16), so this split is the fast CPU step; under
``compile(jit_compile=True)`` the whole step is one program and ``step_noise`` is not used.
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
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")  # of correct_b

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

    def step_noise(self, x):
        """Random numbers of one training step drawn outside its XLA program, or None
        (default: the model draws its own inside ``training_logits``)."""
        return None

    def _objective_terms(self, x, y, training, noise=None):
        given = {} if noise is None else {"noise": noise}
        logits = full_precision(self.training_logits(x, training=training, **given))
        data_loss = self.per_example_data_loss(y, logits)  # [B]
        term, reported = self.regularization_loss()
        term = tf.cast(term, data_loss.dtype)
        scaled_loss = tf.nn.compute_average_loss(data_loss) + tf.nn.scale_regularization_loss(term)
        return logits, data_loss, (term, reported), scaled_loss

    @staticmethod
    def _step_statistics(y, logits, data_loss, regularizer):
        """The scalars and per-example values the trackers average, computed where the
        logits are (inside the nested XLA program of the split step): nll = mean_b data_loss_b,
        loss = nll + term, the reported regularizer, and correct_b = [argmax_k log p̄_bk = y_b]
        with log p̄ = log (1/S) Σ_s softmax(logits_s) the mixture's mean prediction."""
        term, reported = regularizer
        nll = tf.reduce_mean(data_loss)
        log_mean_probs = uncertainty.log_mean_probs(tf.nn.log_softmax(logits, axis=-1))
        predicted = tf.argmax(log_mean_probs, axis=-1, output_type=tf.int32)
        correct = tf.cast(tf.equal(predicted, tf.cast(tf.reshape(y, [-1]), tf.int32)), nll.dtype)
        return {"loss": nll + term, "nll": nll, "regularizer": reported, "correct": correct}

    def _update_trackers(self, statistics):
        self.loss_tracker.update_state(statistics["loss"])
        self.nll_tracker.update_state(statistics["nll"])
        self.regularizer_tracker.update_state(statistics["regularizer"])
        self.accuracy_tracker.update_state(statistics["correct"])
        return {m.name: m.result() for m in self.metrics}

    def _gradients(self, x, y, noise=None):
        """(∇ scaled loss, ``_step_statistics``) of one batch."""
        with tf.GradientTape() as tape:
            logits, data_loss, regularizer, scaled_loss = self._objective_terms(
                x, y, training=True, noise=noise
            )
            scaled_loss = self.optimizer.scale_loss(scaled_loss)  # mixed_float16: loss scaling
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        return gradients, self._step_statistics(y, logits, data_loss, regularizer)

    def train_step(self, data):
        x, y = self._unpack(data)
        noise = None if tf.executing_eagerly() or self.jit_compile else self.step_noise(x)
        if noise is None:
            gradients, statistics = self._gradients(x, y)
        else:  # traced once per trace of the step: a nested XLA program fed the noise
            compiled = tf.function(self._gradients, jit_compile=True)
            gradients, statistics = compiled(x, y, noise)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(statistics)

    def test_step(self, data):
        x, y = self._unpack(data)
        logits, data_loss, regularizer, _ = self._objective_terms(x, y, training=False)
        return self._update_trackers(self._step_statistics(y, logits, data_loss, regularizer))
