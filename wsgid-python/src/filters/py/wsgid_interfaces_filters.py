"""Request filter interfaces of wsgid 0.7 (`wsgid.interfaces.filters`).

A filter class lists the interfaces it implements (`implements = [IPreRequestFilter]`) and
defines the matching methods. Filters live in the app folder's plugins/ or are named with
`--filter module:Class`.
"""

from plugnplay import Interface


class IPreRequestFilter(Interface):
    """Runs before the WSGI app; may change `environ` in place (the app sees the change)."""

    def process(self, m2message, environ):
        pass


class IPostRequestFilter(Interface):
    """Runs after the WSGI app.

    `process(m2message, status, headers, body)` runs when the app returned (any status, a 500
    included) and returns `(status, headers, body)`. `body` is the app's iterable, untouched:
    return it as is to keep the response streamed, or return another iterable to replace it.
    `exception(m2message, e)` runs instead of `process` when the app raised.
    """

    def process(self, m2message, status, headers, body):
        return (status, headers, body)

    def exception(self, m2message, e):
        pass
