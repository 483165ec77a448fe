import os
import sys

# Tests never touch the network: the Hub client and our downloaders stay offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def data_dir() -> str:
    return DATA


@pytest.fixture(scope="module")
def one_thread():
    """Many small convolutions: one thread avoids OpenMP stalls on the shared 2-core test machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A complete tiny random weight set in the official layout, written once per test module."""
    from ovi_core.tiny import write_tiny_weights

    root = str(tmp_path_factory.mktemp("weights"))
    write_tiny_weights(root)
    return root


@pytest.fixture(scope="module")
def pipe(weights):
    """The pipeline on the module's tiny weights, on CPU, never downloading."""
    from ovi_core.pipeline import OviPipeline

    return OviPipeline.from_weights(weights, device="cpu", download=False)


@pytest.fixture(scope="module")
def broken_weights(tmp_path_factory):
    """Tiny weights whose video VAE is garbage: any run that gets as far as loading it fails on it (and says so)."""
    from ovi_core.tiny import write_tiny_weights

    root = str(tmp_path_factory.mktemp("broken") / "w")
    write_tiny_weights(root)
    with open(os.path.join(root, "Wan2.2-TI2V-5B", "Wan2.2_VAE.pth"), "wb") as f:
        f.write(b"not a checkpoint" * 64)
    return root
