"""Backbones: functions that build plain Keras networks from inputs to logits.

Every backbone maps images (or feature vectors) with values in [0, 1] to
``num_classes`` logits; any normalisation is a layer inside the network, so
attacks work in pixel units.
"""

import keras
import numpy as np


def _check_common(num_classes, dropout_rate, weight_decay):
    """Checks the options every backbone has; returns the kernel regularizer (or None)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def mlp(
    input_shape,
    num_classes,
    hidden_units=(128, 128),
    activation="relu",
    dropout_rate=0.0,
    weight_decay=0.0,
    name="mlp",
):
    """Flatten → [Dense(h) → activation (→ Dropout)] × len(hidden_units) → Dense(K).

    weight_decay: L2 strength w on every kernel, adding w·Σ‖W‖² to the loss.
    dropout_rate: dropout after each hidden layer (MC dropout keeps it on at
      test time by calling the network with ``training=True``).
    """
    regularizer = _check_common(num_classes, dropout_rate, weight_decay)
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Flatten()(inputs)
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(
            units, activation=activation, kernel_regularizer=regularizer, name=f"hidden_{i}"
        )(h)
        if dropout_rate > 0:
            h = keras.layers.Dropout(dropout_rate, name=f"dropout_{i}")(h)
    logits = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(h)
    return keras.Model(inputs, logits, name=name)


# -- convolutional backbones ---------------------------------------------------------------

# VGG-16 (configuration "D" of Simonyan & Zisserman), the usual CIFAR variant: 13 conv layers
# in 5 blocks, each block closed by 2x2 max pooling ("M"), then one hidden dense layer.
VGG16_LAYERS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def _image_shape(input_shape, min_size, name):
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"{name} needs image inputs (height, width, channels), got {shape}.")
    if min(shape[:2]) < min_size:
        raise ValueError(
            f"{name} needs images of at least {min_size}x{min_size} pixels, got "
            f"{shape[0]}x{shape[1]}."
        )
    return shape


def input_normalization(normalization, channels, name="input_normalization"):
    """A layer x ↦ (x − mean) / std per channel, or None when ``normalization`` is None.

    normalization: (mean, std), each a float or a sequence of ``channels``
    floats, in pixel units ([0, 1] images); std > 0.  The constants are part of
    the model (saved with it), so attacks and serving take raw [0, 1] pixels.
    """
    if normalization is None:
        return None
    mean, std = normalization
    mean = [float(v) for v in np.broadcast_to(np.asarray(mean, np.float64), (channels,))]
    std = np.broadcast_to(np.asarray(std, np.float64), (channels,))
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"normalization needs finite means and std > 0, got {normalization}.")
    return keras.layers.Normalization(
        axis=-1, mean=mean, variance=[float(s) ** 2 for s in std], name=name
    )


def _conv_block(h, filters, regularizer, batchnorm, name, batchnorm_momentum=0.99):
    """Conv 3x3 (same padding) → [BatchNorm] → ReLU."""
    h = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=not batchnorm,
        kernel_regularizer=regularizer,
        name=f"{name}_conv",
    )(h)
    if batchnorm:
        # synchronized: batch statistics of the global batch under tf.distribute, so a
        # multi-replica step computes what a single-device step on the same batch computes.
        h = keras.layers.BatchNormalization(
            momentum=batchnorm_momentum, synchronized=True, name=f"{name}_bn"
        )(h)
    return keras.layers.Activation("relu", name=f"{name}_relu")(h)


def _classifier_head(h, num_classes, dense_units, dropout_rate, regularizer, name_prefix=""):
    """Flatten → [Dropout → Dense(units, ReLU)]* → Dropout → Dense(K) logits."""
    h = keras.layers.Flatten(name=f"{name_prefix}flatten")(h)
    for i, units in enumerate(dense_units):
        if dropout_rate > 0:
            h = keras.layers.Dropout(dropout_rate, name=f"{name_prefix}dropout_{i}")(h)
        h = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"{name_prefix}dense_{i}"
        )(h)
    if dropout_rate > 0:
        h = keras.layers.Dropout(dropout_rate, name=f"{name_prefix}dropout_out")(h)
    return keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(h)


def small_convnet(
    input_shape,
    num_classes,
    filters=(32, 64),
    dense_units=(128,),
    dropout_rate=0.0,
    weight_decay=0.0,
    batchnorm=False,
    normalization=None,
    batchnorm_momentum=0.99,
    name="small_convnet",
):
    """A small convnet for 28×28 images (MNIST-like); works for any size ≥ 2^len(filters).

    [Normalization] → for each f in ``filters``: two (Conv3x3(f) → [BN] → ReLU),
    MaxPool 2x2 → Flatten → [Dropout → Dense(u, ReLU)] for u in ``dense_units``
    → [Dropout] → Dense(K) logits.
    weight_decay: L2 strength w on every kernel (adds w·Σ‖W‖² to the loss).
    batchnorm: BatchNorm after each conv (synchronised across replicas), with
      moving averages of momentum ``batchnorm_momentum``.
    dropout_rate: dropout before each dense layer (MC dropout calls the network
      with ``training=True``).
    normalization: (mean, std) per channel, a layer inside the model (see
      ``input_normalization``); inputs stay pixels in [0, 1].
    """
    regularizer = _check_common(num_classes, dropout_rate, weight_decay)
    if not filters or min(filters) < 1:
        raise ValueError(f"filters must be positive integers, got {filters}.")
    shape = _image_shape(input_shape, 2 ** len(filters), "small_convnet")
    inputs = keras.Input(shape=shape)
    h = inputs
    norm = input_normalization(normalization, shape[-1])
    if norm is not None:
        h = norm(h)
    for block, f in enumerate(filters):
        for i in range(2):
            h = _conv_block(
                h, int(f), regularizer, batchnorm, f"block{block + 1}_{i + 1}", batchnorm_momentum
            )
        h = keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(h)
    logits = _classifier_head(h, num_classes, dense_units, dropout_rate, regularizer)
    return keras.Model(inputs, logits, name=name)


def vgg16(
    input_shape,
    num_classes,
    width_multiplier=1.0,
    dense_units=(512,),
    dropout_rate=0.0,
    weight_decay=0.0,
    batchnorm=True,
    normalization=None,
    batchnorm_momentum=0.99,
    name="vgg16",
):
    """VGG-16-style convnet for 32×32 colour images (CIFAR, SVHN).

    [Normalization] → 13 × (Conv3x3 → [BN] → ReLU) in five blocks of
    ``VGG16_LAYERS`` channels (× ``width_multiplier``, at least 1), each block
    closed by MaxPool 2x2 (32×32 → 1×1) → classifier head as ``small_convnet``.
    width_multiplier: scales every conv width and dense layer (e.g. 1/16 for a
      fast smoke test).  Other options as ``small_convnet``.
    """
    regularizer = _check_common(num_classes, dropout_rate, weight_decay)
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}.")
    shape = _image_shape(input_shape, 32, "vgg16")
    inputs = keras.Input(shape=shape)
    h = inputs
    norm = input_normalization(normalization, shape[-1])
    if norm is not None:
        h = norm(h)
    block, conv = 1, 1
    for entry in VGG16_LAYERS:
        if entry == "M":
            h = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(h)
            block, conv = block + 1, 1
            continue
        filters = max(1, int(round(entry * width_multiplier)))
        h = _conv_block(
            h, filters, regularizer, batchnorm, f"block{block}_{conv}", batchnorm_momentum
        )
        conv += 1
    dense_units = [max(1, int(round(u * width_multiplier))) for u in dense_units]
    logits = _classifier_head(h, num_classes, dense_units, dropout_rate, regularizer)
    return keras.Model(inputs, logits, name=name)


BACKBONES = ("mlp", "small_convnet", "vgg16")


def build_backbone(
    name,
    input_shape,
    num_classes,
    *,
    dropout_rate=0.0,
    weight_decay=0.0,
    batchnorm=None,
    normalization=None,
    width_multiplier=1.0,
    hidden_units=(128, 128),
    batchnorm_momentum=0.99,
    model_name=None,
):
    """The backbone ``name`` (one of ``BACKBONES``) with the options that apply to it.

    batchnorm None: the backbone's default (on for vgg16, off for small_convnet;
      the MLP has none).  normalization / width_multiplier: ignored by the MLP
      (its inputs are flattened pixels; width applies to vgg16 only).
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    common = {
        "dropout_rate": dropout_rate,
        "weight_decay": weight_decay,
        "name": model_name or name,
    }
    if name == "mlp":
        return mlp(input_shape, num_classes, hidden_units=tuple(hidden_units), **common)
    if name == "small_convnet":
        return small_convnet(
            input_shape,
            num_classes,
            batchnorm=bool(batchnorm),
            normalization=normalization,
            batchnorm_momentum=batchnorm_momentum,
            **common,
        )
    return vgg16(
        input_shape,
        num_classes,
        width_multiplier=width_multiplier,
        batchnorm=True if batchnorm is None else bool(batchnorm),
        normalization=normalization,
        batchnorm_momentum=batchnorm_momentum,
        **common,
    )
