"""Backbones: functions that build plain Keras networks from inputs to logits.

Every backbone maps images (or feature vectors) with values in [0, 1] to
``num_classes`` logits; any normalisation is a layer inside the network, so
attacks work in pixel units.
"""

import keras


def mlp(input_shape, num_classes, hidden_units=(128, 128), activation="relu",
        dropout_rate=0.0, weight_decay=0.0, name="mlp"):
    """Flatten → [Dense(h) → activation (→ Dropout)] × len(hidden_units) → Dense(K).

    weight_decay: L2 strength w on every kernel, adding w·Σ‖W‖² to the loss.
    dropout_rate: dropout after each hidden layer (MC dropout keeps it on at
      test time by calling the network with ``training=True``).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
    inputs = keras.Input(shape=tuple(input_shape))
    h = keras.layers.Flatten()(inputs)
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation=activation, kernel_regularizer=regularizer,
                               name=f"hidden_{i}")(h)
        if dropout_rate > 0:
            h = keras.layers.Dropout(dropout_rate, name=f"dropout_{i}")(h)
    logits = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(h)
    return keras.Model(inputs, logits, name=name)
