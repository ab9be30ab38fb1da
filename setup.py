"""uqmix: uncertainty quantification with mixture models (TF2 / Keras 3 / TFP)."""

from setuptools import find_packages, setup

setup(
    name="uqmix",
    version="0.1.0",
    description=(
        "Infinite mixtures (ML vs VI), Prior Networks with reverse KL, and "
        "adversarial attacks on them, on TensorFlow 2 / Keras 3 / TFP."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["uqmix", "uqmix.*", "experiments", "experiments.*"]),
    package_data={"experiments": ["configs/*.cfg"], "uqmix.studies": ["published/*.json"]},
    install_requires=[
        # Keras 3 on the TensorFlow backend.  TF 2.16+ ships Keras 3 as `keras`.
        "tensorflow>=2.18,<2.22",
        # TFP 0.25 imports only with tf-keras present (its Keras-2 layers);
        # tf-keras must match the TensorFlow minor version.
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.18,<2.22",
        "tensorflow-datasets>=4.9,<5",
        "keras>=3.6,<4",
        "numpy>=1.26,<3",
        "matplotlib>=3.8,<4",
        "absl-py>=2.1,<3",
        # tf.summary (keras.callbacks.TensorBoard) needs the tensorboard package,
        # which TensorFlow no longer installs itself.
        "tensorboard>=2.18,<2.22",
        "scikit-learn>=1.4,<2",
    ],
    extras_require={
        # mpmath: the extreme-concentration Dirichlet KL check (tests/test_dirichlet_losses.py).
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "mpmath>=1.3,<2",
            # lint + format check in .ci/run; the minor version pinned: formatting rules change
            "ruff>=0.17.6,<0.18",
        ],
    },
)
