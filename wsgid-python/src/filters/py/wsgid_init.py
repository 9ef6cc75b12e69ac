"""wsgid (compatibility package provided by the Rust gateway for wsgid 0.7 plugins)."""

__version__ = "0.7.0"
