"""insan-edge: private, on-box family recommendations."""

__version__ = "0.1.0"
