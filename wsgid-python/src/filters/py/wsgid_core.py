"""wsgid.core: the names wsgid 0.7 filters use (`Message`, `log`)."""

import logging

log = logging.getLogger("wsgid")

HEADER_UPLOAD_START = "x-mongrel2-upload-start"
HEADER_UPLOAD_DONE = "x-mongrel2-upload-done"

# Instances of the filters the gateway loaded, in order (for plugnplay's `implementors()`).
_loaded_filters = []


class Message(object):
    """A parsed Mongrel2 request, as wsgid 0.7's `wsgid.core.Message`.

    server_id: the sender (handler's send_ident); client_id: the connection id, a str as in
    0.7; path: the raw request path; headers: dict of Mongrel2's headers (str values, a list
    for a repeated header); body: the inline body (bytes; empty for an async upload).
    """

    def __init__(self, server_id, client_id, path, headers, body):
        self.server_id = server_id
        self.client_id = client_id
        self.path = path
        self.headers = headers
        self.body = body

    def is_disconnect(self):
        return self.path == "@*" and self.headers.get("METHOD") == "JSON"

    def is_upload_start(self):
        return HEADER_UPLOAD_START in self.headers and not self.is_upload_done()

    def is_upload_done(self):
        start = self.headers.get(HEADER_UPLOAD_START, "start")
        finish = self.headers.get(HEADER_UPLOAD_DONE, "done")
        return start == finish

    @property
    def async_upload_path(self):
        return self.headers.get(HEADER_UPLOAD_START, None)

    def __repr__(self):
        return "<wsgid.core.Message client_id=%s path=%r>" % (self.client_id, self.path)
