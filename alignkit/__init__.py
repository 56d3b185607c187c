"""alignkit: reward modelling and DPO, reproducibly."""
__version__ = "0.1.0"
