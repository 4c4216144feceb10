"""Packages this project for Apache Beam workers (Dataflow), which import the data pipeline:

    python -m launch.build_data ... --engine=beam --beam_options="--runner=DataflowRunner \
        --project=P --region=R --temp_location=gs://b/tmp --setup_file=./setup.py"

Dataflow runs `pip install .` with this file on every worker: the packages below, and the
requirements a worker needs to read inputs and write shards (requirements.txt, without the
test-only ones). For large fleets, a custom worker image with them installed starts faster
(--sdk_container_image).
"""

import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
_TEST_ONLY = ("pytest", "gcp-storage-emulator")


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [r for r in lines if r and not r.startswith(_TEST_ONLY)]


setuptools.setup(
    name="bert-tf-pretrain",
    version="0.2.0",
    description="Distributed pretraining of BERT-family models on TensorFlow: data pipeline, "
                "training engine, export, fine-tuning and generation",
    packages=setuptools.find_packages(include=["data_pipeline", "data_pipeline.*", "storage",
                                               "storage.*", "configs", "configs.*", "pretrain",
                                               "pretrain.*", "downstream", "downstream.*", "launch",
                                               "launch.*"]),
    package_data={"data_pipeline": ["sample_zh.txt"]},
    install_requires=requirements(),
    python_requires=">=3.10",
)
