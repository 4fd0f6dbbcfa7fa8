"""Tiny random checkpoints with the real V1/V2 shapes, shared by the tool tests."""

from __future__ import annotations

import pytest

from tests._tiny import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_v2(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_v2"), "V2", seed=1)


@pytest.fixture(scope="session")
def tiny_v1(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_v1"), "V1", seed=2)
