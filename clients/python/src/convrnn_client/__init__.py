"""Python client of convrnn-serve.

- ``Client(url, api_key=None)``: ``models()``, ``classify(images, ...)``,
  ``activations(images, ...)`` (numpy arrays, or an ``xarray.Dataset`` with ``as_xarray=True``).
- ``open_extraction(dir)``: the output of ``convrnn-serve extract`` as a lazy, memory-mapped
  ``xarray.Dataset``.
- ``layer_view(ds, layer)``: one layer with ``channel``, ``y``, ``x`` dimensions and ``layer``,
  ``region`` coordinates.
- ``convrnn_client.brainscore.ConvRNNBrainModel``: a Brain-Score ``BrainModel``.
- ``convrnn_client.rsa.to_rsatoolbox``: an rsatoolbox ``TemporalDataset`` (needs rsatoolbox).
"""

from ._dataset import layer_view, neuroids
from .client import ClassifyResult, ClassScore, Client, ConvRNNError
from .extraction import open_extraction
from .rsa import to_rsatoolbox

__all__ = [
    "ClassScore",
    "ClassifyResult",
    "Client",
    "ConvRNNError",
    "layer_view",
    "neuroids",
    "open_extraction",
    "to_rsatoolbox",
]
__version__ = "0.1.0"
