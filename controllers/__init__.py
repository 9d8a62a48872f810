"""Reconcilers, autoscaling, metric sources, Kubernetes I/O and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokenworks")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
