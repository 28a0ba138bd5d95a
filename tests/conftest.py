"""Shared test set-up: builds are cached by content hash (DACEML_CACHE_DIR), so
compiled programs are shared between tests, xdist workers and runs."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


@pytest.fixture(autouse=True)
def pure_implementations_only(request):
    """Tests check daceml's own implementations: the onnxruntime fallback is off unless a test
    asks for it (``@pytest.mark.onnxruntime_fallback``)."""
    from daceml import config
    allowed = request.node.get_closest_marker("onnxruntime_fallback") is not None
    with config.patch(allow_onnxruntime_fallback=allowed):
        yield


@pytest.fixture
def private_cache(tmp_path):
    """A build cache of this test alone (for tests about the cache itself)."""
    from daceml import config
    with config.patch(cache_dir=str(tmp_path / "cache")):
        yield tmp_path / "cache"
