"""Shared fixtures: a tiny random Gemma-2 (fast tests) and the real Gemma-3-270M demo model (slow tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1]))  # benchmarks/ (not installed) holds the S3 test server

from tiny_model import KJV, save_tiny_model

# Tests never touch the network: hub names must fail fast and clearly, as on an offline machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gemma2"))


@pytest.fixture(scope="session")
def kjv_file() -> Path:
    return KJV


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on loopback; AWS_ENDPOINT_URL and dummy credentials point every client at it."""
    from benchmarks.s3_server import moto_server

    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The real Gemma-3-270M, converted once from its PyPI GGUF and cached under $HFG_CACHE."""
    from pipeline.demo import demo_model

    return demo_model()


@pytest.fixture(scope="session")
def small_truth(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic model (tests/synthetic_models.py), built by SAELens once per session."""
    import torch
    from synthetic_models import small_spec

    from harvest.synthetic.model import load_or_build

    return load_or_build(small_spec(), tmp_path_factory.mktemp("synthetic-cache"), torch.device("cpu"))
