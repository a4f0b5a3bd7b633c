"""The serving contract of the LeNet-5 digit classifier: exactly what ships in `lenet.mar`.

`deploy/archive.py` archives this package whole, so everything here is shipped and nothing here
imports the rest of the project. `predictor.Predictor` is the one way to turn image bytes into
answers: the TorchServe handler, the batch engines, the load-test pool and the benchmarks all
use it.

The constants below are needed by tools that must not import torch or pydantic (the container's
health check, the config renderer), so they live here, once, and import nothing.
"""

# The name the model is registered under (`POST /predictions/lenet`), the archive's file name
# and the default of every client.
MODEL_NAME = "lenet"
# Intra-op torch threads per worker; wins over model-config.yaml's `handler: torch_threads`.
TORCH_THREADS_ENV = "LENET_TORCH_THREADS"
