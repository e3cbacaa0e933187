"""ConvRNNs of Nayebi et al. (2018/2022) in PyTorch, with the biological unroll and an
ONNX export following docs/model-format.md."""
import os

# the CPU is shared: spinning OpenMP threads make torch 10-50x slower under contention
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import ArchConfig, ConfigError, get_config, list_archs  # noqa: F401
from .model import ConvRNN, build_model, make_movie, apply_readout  # noqa: F401
