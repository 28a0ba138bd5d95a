"""Fixtures of the GUI tests: a tiny ONNX model, servers on 127.0.0.1, an HTTP client,
and headless Chromium (Debian's /usr/bin/chromium driven by Playwright)."""
import os

import numpy as np
import pytest

from gui_helpers import Client

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def build_tiny_model(path: str) -> str:
    """x[4,8] -> Relu -> Sigmoid -> MatMul(w[8,3]) -> Add(bias[3]) -> y: after level 2 and
    InlineAndSimplify, the Relu and Sigmoid maps are a MapFusion match."""
    import onnx
    from onnx import helper
    from daceml.testing.onnx_compare import make_model
    rng = np.random.default_rng(0)
    x = rng.random((4, 8)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Sigmoid", ["a"], ["b"], name="sigmoid"),
             helper.make_node("MatMul", ["b", "w"], ["c"], name="matmul"),
             helper.make_node("Add", ["c", "bias"], ["y"], name="add")]
    model = make_model(nodes, {"x": x}, ["y"], {"w": rng.random((8, 3)).astype(np.float32),
                                               "bias": rng.random(3).astype(np.float32)}, name="tiny")
    onnx.save(model, path)
    return path


TORCH_MODULE_SOURCE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


def example_inputs():
    return (torch.randn(2, 8), )
'''


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("gui_model") / "tiny.onnx"))


@pytest.fixture(scope="session")
def torch_spec(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("gui_torch") / "tinynet.py"
    path.write_text(TORCH_MODULE_SOURCE)
    return f"{path}:TinyNet"


@pytest.fixture
def server(tiny_onnx):
    """A GUI server with the tiny model open (one per test: tests change the session)."""
    from daceml.gui import loading
    from daceml.gui.server import GuiServer
    from daceml.gui.session import Session
    srv = GuiServer(Session(loading.load(tiny_onnx))).start()
    yield srv
    srv.shutdown()


@pytest.fixture
def client(server):
    return Client(server)


def chromium_missing_reason():
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (run scripts/install_chromium.sh as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (it is pinned in requirements.txt)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def screenshot_dir(tmp_path):
    """Where the browser tests save screenshots: $DACEML_GUI_SCREENSHOTS (e.g. docs/screenshots) or a temp dir."""
    target = os.environ.get("DACEML_GUI_SCREENSHOTS")
    if target:
        os.makedirs(target, exist_ok=True)
        return target
    return str(tmp_path)

