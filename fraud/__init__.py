"""Domain core of the fraud-detection platform: data contract, simulator, features, metrics.

Nothing here imports `pipelines`, `serving` or `monitoring`; they all import from here, which is
what keeps training and serving from drifting apart.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
