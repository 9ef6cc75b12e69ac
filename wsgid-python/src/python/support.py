"""Python-side helpers of the wsgid worker (embedded in the binary)."""


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in bounded blocks, closes it at the end."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        try:
            blksize = int(blksize)
        except (TypeError, ValueError):
            blksize = 65536
        self.blksize = max(1, min(blksize, 1 << 20))
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration
