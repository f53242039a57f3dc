"""airlock: carry a Kubernetes cluster across an air gap."""

__all__ = ["__version__"]

__version__ = "0.1.0"
