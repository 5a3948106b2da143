"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.api_support import api_settings, running_app


@pytest.fixture(scope="module")
def classify_client(classify_settings: Settings) -> Iterator[TestClient]:
    """The server with every built-in model on tiny checkpoints (Florence-2, ImageNet, CLIP), loaded lazily."""
    settings = api_settings(classify_settings, max_images_per_request=4, max_queue_size=8, preload=False)
    with running_app(settings) as (_, test_client):
        yield test_client
