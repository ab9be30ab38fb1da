"""Seeded N(0, 1) noise that is cheap on CPU: Box–Muller on stateless counter-based uniforms.

For independent u₁, u₂ ~ U[0, 1) (``tf.random.stateless_uniform``: Philox, or ThreeFry in XLA,
23-bit resolution like every float32 uniform in TF), Box–Muller gives two
independent standard normals

    r = sqrt(−2 log(1 − u₁)),   z₁ = r cos(2π u₂),   z₂ = r sin(2π u₂) = r cos(2π(u₂ − ¼)),

so n normals cost n uniforms; |z| ≤ 5.64, the same tail cut as TF's own
normal kernel.  The same law as ``tf.random.stateless_normal``, only cheaper
on CPU: TF's kernel evaluates log/sin/cos one scalar at a time, whereas here
they are vectorised TF ops, or (``standard_normal_xla``) one XLA kernel of
a few fused vector loops, where cos(2πt) is an even polynomial after range
reduction (|error| ≤ 2e−7, float32 resolution) because XLA's CPU cosine is
scalar and slow, and the uniforms come from ThreeFry-2x32 (20 rounds; Salmon
et al. 2011, JAX's default generator) instead of Philox-4x32-10: ThreeFry
needs only 32-bit adds, rotations and xors, which XLA:CPU vectorises, while
Philox's 32×32→64-bit multiplies stay scalar (uniforms 1.5× faster, the whole
XLA noise kernel 1.5× faster; bench/RESULTS.md).  TF's CPU kernel outside XLA
has no working ThreeFry, so the plain-op ``box_muller`` keeps Philox.
Measured in bench/mixture_step.py.

The noise is a pure function of ``seed`` (int32 [2]): layers draw it from
their ``keras.random.SeedGenerator`` (``stateless_seed``).
"""

import math

import tensorflow as tf

_TWO_PI = 2.0 * math.pi
# Taylor coefficients of cos y in y² up to y¹², for |y| ≤ π/2 (truncation error < 1e−8).
_COS_COEFFICIENTS = tuple((-1) ** k / math.factorial(2 * k) for k in range(7))


def stateless_seed(seed_generator):
    """Next int32 [2] seed of a ``keras.random.SeedGenerator`` for ``tf.random.stateless_*`` ops."""
    seed = seed_generator.next()
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return seed


def cos_two_pi(t):
    """cos(2πt) for real t, as an even polynomial after range reduction (float32).

    |error| ≤ 2e−7 (float32 resolution).  For XLA kernels, where it fuses into
    a few vector instructions while XLA's CPU cosine is scalar; float64
    inputs use ``tf.cos``.
    """
    if t.dtype == tf.float64:
        return tf.cos(_TWO_PI * t)
    s = tf.abs(t - tf.round(t))  # cos is even and 1-periodic in t: s ∈ [0, ½]
    flip = s > 0.25
    s = tf.where(flip, 0.5 - s, s)  # cos 2π(½ − s) = −cos 2πs: s ∈ [0, ¼]
    y2 = tf.square(_TWO_PI * s)
    value = _COS_COEFFICIENTS[-1]
    for coefficient in reversed(_COS_COEFFICIENTS[:-1]):
        value = coefficient + y2 * value
    return tf.where(flip, -value, value)


def _uniform_pairs(shape, seed, dtype, alg="philox"):
    """(shape, size, u [2, ⌈size/2⌉]): i.i.d. U[0, 1) uniforms of the counter-based
    generator ``alg`` ("philox", or "threefry" inside XLA only) in the working float dtype."""
    work_dtype = tf.float64 if dtype == tf.float64 else tf.float32
    shape = tf.convert_to_tensor(shape, tf.int32)
    size = tf.reduce_prod(shape)
    uniforms = tf.random.stateless_uniform(
        tf.stack([2, (size + 1) // 2]), seed=seed, dtype=work_dtype, alg=alg
    )
    return shape, size, uniforms


def _radius(u):
    return tf.sqrt(tf.math.log(1.0 - u) * -2.0)  # sqrt(−2 log(1 − u₁))


def _to_shape(pairs, size, shape, dtype):
    return tf.cast(tf.reshape(tf.reshape(pairs, [-1])[:size], shape), dtype)


def box_muller(shape, seed, dtype=tf.float32):
    """N(0, 1) numbers of ``shape`` (module doc), with plain TF ops (``tf.cos``)."""
    shape, size, u = _uniform_pairs(shape, seed, dtype)
    phases = tf.constant([[0.0], [0.5 * math.pi]], u.dtype)  # cos, then sin
    pairs = _radius(u[0]) * tf.cos(_TWO_PI * u[1] - phases)  # [2, ⌈n/2⌉]
    return _to_shape(pairs, size, shape, dtype)


def box_muller_for_xla(shape, seed, dtype=tf.float32):
    """``box_muller`` with the polynomial ``cos_two_pi`` and ThreeFry uniforms: for tracing
    inside XLA programs only (TF's CPU kernel outside XLA cannot run ThreeFry)."""
    shape, size, u = _uniform_pairs(shape, seed, dtype, alg="threefry")
    phases = tf.constant([[0.0], [0.25]], u.dtype)
    pairs = _radius(u[0]) * cos_two_pi(u[1] - phases)
    return _to_shape(pairs, size, shape, dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _box_muller_xla(shape, seed, dtype):
    return box_muller_for_xla(shape, seed, dtype)


def standard_normal_xla(shape, seed, dtype=tf.float32):
    """``box_muller`` as one XLA kernel (compiled once per shape; the same law, other numbers)."""
    return _box_muller_xla(tf.convert_to_tensor(shape, tf.int32), seed, tf.as_dtype(dtype))


def standard_normal(shape, seed, dtype=tf.float32, jit_compile=False):
    """N(0, 1) noise of ``shape`` from the int32 [2] ``seed`` (``box_muller``).

    jit_compile: one XLA kernel (cheaper per call on CPU, compiled once per
    shape) instead of a few TF ops.  The two give the same law but not the
    same numbers (the XLA kernel uses ThreeFry instead of Philox).
    """
    if jit_compile:
        return standard_normal_xla(shape, seed, dtype)
    return box_muller(tf.convert_to_tensor(shape, tf.int32), seed, tf.as_dtype(dtype))
