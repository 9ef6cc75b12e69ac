"""Minimal stand-in for plugnplay (the plugin library wsgid 0.7 filters were written with).

Only what a wsgid filter module needs so that `from plugnplay import Plugin, Interface`
works unchanged: `Interface` (a marker base for interfaces) and `Plugin` (a base class for
implementations, which declare `implements = [SomeInterface, ...]`). wsgid itself finds the
filter classes; no plugin manager runs here.
"""

__version__ = "0.1-wsgid"
__all__ = ["Interface", "Plugin"]


class Interface(object):
    """Marker base class for public interfaces."""

    @classmethod
    def implementors(klass):
        """Instances of the loaded wsgid filters implementing this interface."""
        import wsgid.core
        return [f for f in wsgid.core._loaded_filters if klass in getattr(type(f), "implements", ())]


class Plugin(object):
    """Base class for plugins; a subclass lists its interfaces in `implements`."""

    implements = []


def set_plugin_dirs(*dirs):
    """Accepted for compatibility; wsgid loads plugins/ itself."""


def load_plugins():
    """Accepted for compatibility; wsgid loads plugins/ itself."""
