"""s4g: Sample4Geo cross-view geo-localisation with a Rust-accelerated sampler."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s4g")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
