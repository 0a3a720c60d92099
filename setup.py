"""tf_unilth: finding and transforming winning lottery tickets with tf_keras and tfmot."""

import setuptools

setuptools.setup(
    name="tf_unilth",
    version="0.1.0",
    description=(
        "Lottery-ticket methods (LTH, DLTH, UniLTH, UniDLTH) as a TensorFlow "
        "Model Optimization extension for tf_keras."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tf_unilth", "tf_unilth.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow~=2.21.0",
        "tf_keras~=2.21.0",
        "tensorflow-model-optimization==0.8.1",
        "tensorflow-datasets>=4.9.10,<4.10",
        # TFDS 4.9.10 imports it when locating builder code but does not declare it.
        "importlib_resources",
        "absl-py>=1.4",
        "matplotlib>=3.7",
        "tensorboard",
        "numpy",
        # LiteRT interpreter: tf_unilth.export checks every .tflite it writes.
        "ai-edge-litert",
    ],
    extras_require={
        "test": ["pytest>=7"],
    },
)
