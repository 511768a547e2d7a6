"""HyperT5: hypermodels that write PEFT parameters for a frozen T5 (JAX/Flax)."""

import setuptools

CORE = [
    # The model, the train step, `hypert5.bench` and `hypert5.plan` need only these:
    # no TensorFlow, so they run on accelerator images that lack it.
    "absl-py",
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "ml-collections>=1.0",
    "numpy",
    "sentencepiece",
    "safetensors",
    "tensorboardX",
    "tqdm",
]
DATA = [
    "seqio>=0.0.19",
    "tensorflow",
    "tensorflow-text",
    "tensorflow-datasets",
    "importlib_resources",  # tensorflow-datasets imports it on this stack
    "pyarrow",  # P3 parquet shards
]
EVAL = ["rouge-score", "scikit-learn", "matplotlib"]
# `hypert5.input_bench --pipeline=grain`: Grain's mixing and shuffling, measured against ours.
BENCH = ["grain"]
# Only the HuggingFace comparisons and PEFT export need torch. Pin the CPU build that
# ships with the target machines: an unpinned torch pulls a multi-GB CUDA build.
HF = ["transformers>=5.0", "torch==2.13.0", "peft>=0.17"]

setuptools.setup(
    name="hypert5",
    version="0.1.0",
    description=__doc__,
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["hypert5", *(f"hypert5.{p}" for p in setuptools.find_packages("hypert5")),
              "hypert5_tasks"],
    package_dir={"hypert5": "hypert5", "hypert5_tasks": "tasks"},
    package_data={"hypert5_tasks": ["data/*"]},
    install_requires=CORE,
    extras_require={
        "data": DATA,
        "eval": EVAL,
        "hf": HF,
        "bench": BENCH,
        "test": DATA + EVAL + HF + BENCH + ["pytest", "pytest-xdist", "ruff"],
    },
)
