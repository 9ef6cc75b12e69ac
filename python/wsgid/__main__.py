"""Entry point of the ``wsgid`` command: the master runs in Rust (with the GIL released),
workers run on this interpreter unless ``--python`` or an app virtualenv says otherwise."""

import sys

from wsgid import _wsgid


def main():
    code = _wsgid.main(["wsgid"] + sys.argv[1:], sys.executable, _wsgid.__file__)
    sys.exit(code)


if __name__ == "__main__":
    main()
