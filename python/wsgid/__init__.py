"""wsgid: runs Python WSGI applications behind Mongrel2.

The ``wsgid`` command (``python -m wsgid``) runs the master; it starts every worker on this
interpreter (or the one ``--python`` names) with the ``_wsgid`` extension loaded into it.
"""

from wsgid._wsgid import BUILD, __version__

__all__ = ["BUILD", "__version__", "main"]


def main():
    """The ``wsgid`` command."""
    from wsgid.__main__ import main as _main

    return _main()
