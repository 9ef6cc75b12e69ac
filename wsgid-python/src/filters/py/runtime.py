"""Gateway side of request filters: registers the compatibility modules, finds filter classes
and calls them. Loaded by the Rust gateway (wsgid/src/filters/python.rs); not for apps."""

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import types


def register_modules(sources):
    """Create the embedded modules [(name, is_package, source)] unless already importable."""
    for name, is_package, source in sources:
        if name in sys.modules:
            continue
        module = types.ModuleType(name)
        module.__file__ = "<wsgid-embedded %s>" % name
        if is_package:
            module.__path__ = []
        sys.modules[name] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


def _is_interface(candidate, interface):
    if candidate is interface:
        return True
    if isinstance(candidate, type):
        if issubclass(candidate, interface):
            return True
        # The same interface from another copy of wsgid (e.g. an old install on sys.path).
        return candidate.__name__ == interface.__name__
    return False


def kinds_of(cls):
    """['pre'], ['post'], both or [] for a class: from `implements`, else from process()'s arity."""
    from wsgid.interfaces.filters import IPreRequestFilter, IPostRequestFilter

    declared = getattr(cls, "implements", None)
    if declared:
        kinds = []
        if any(_is_interface(i, IPreRequestFilter) for i in declared):
            kinds.append("pre")
        if any(_is_interface(i, IPostRequestFilter) for i in declared):
            kinds.append("post")
        return kinds
    process = getattr(cls, "process", None)
    if process is None or not callable(process):
        return []
    try:
        params = list(inspect.signature(process).parameters.values())
    except (TypeError, ValueError):
        return []
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    count = len(positional) - 1  # self
    if count == 2:
        return ["pre"]
    if count == 4:
        return ["post"]
    return []


def _filter_classes(module):
    from plugnplay import Interface

    for obj in list(vars(module).values()):
        if (
            isinstance(obj, type)
            and obj.__module__ == module.__name__
            and not issubclass(obj, Interface)
        ):
            kinds = kinds_of(obj)
            if kinds:
                yield obj, kinds


def _import_file(stem, path):
    """Import plugins/<stem>.py as `wsgid_plugin_<stem>` (the name the app loader uses too,
    so a file holding both loaders and filters runs once)."""
    name = "wsgid_plugin_" + stem
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None) or ""
        if os.path.abspath(existing_file) == os.path.abspath(path):
            return existing
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugin_dir(directory):
    """Filters found in the *.py files of a plugins/ folder, sorted by file name, classes in
    definition order. Returns (filters, errors): filters = [(instance, kinds, label)],
    errors = [(label, traceback text)] for files or classes that could not be loaded."""
    filters, errors = [], []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return filters, errors
    for file_name in names:
        if not file_name.endswith(".py") or file_name.startswith((".", "_")):
            continue
        path = os.path.join(directory, file_name)
        try:
            module = _import_file(file_name[:-3], path)
        except Exception:
            errors.append((path, traceback.format_exc()))
            continue
        for cls, kinds in _filter_classes(module):
            label = "%s:%s" % (file_name[:-3], cls.__name__)
            try:
                filters.append((cls(), kinds, label))
            except Exception:
                errors.append((label, traceback.format_exc()))
    return filters, errors


def load_spec(spec):
    """The filter named `module:Class` (or `module.Class`): (instance, kinds, label).
    Raises with a clear message when it cannot be imported or is not a filter."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError("expected module:Class, got %r" % spec)
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError("%s is a %s, expected a filter class" % (spec, type(obj).__name__))
    kinds = kinds_of(obj)
    if not kinds:
        raise TypeError(
            "%s is not a request filter: it neither lists IPreRequestFilter/IPostRequestFilter "
            "in `implements` nor defines process(m2message, environ) or "
            "process(m2message, status, headers, body)" % spec
        )
    return obj(), kinds, spec


def remember(instances):
    import wsgid.core

    wsgid.core._loaded_filters[:] = instances


def message(server_id, client_id, path, headers, body):
    import wsgid.core

    return wsgid.core.Message(server_id, client_id, path, headers, body)


def call_pre(f, msg, environ):
    f.process(msg, environ)


def call_post(f, msg, status, headers, body):
    result = f.process(msg, status, headers, body)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise TypeError(
            "process() returned %r; expected a (status, headers, body) tuple" % (result,)
        )
    status, headers, body = result
    if isinstance(status, bytes):
        status = status.decode("latin-1")
    status = str(status)
    if body is None:
        raise TypeError("process() returned body None; expected an iterable of bytes")
    return status, [(str(name), str(value)) for (name, value) in headers], body


def call_exception(f, msg, error):
    method = getattr(f, "exception", None)
    if method is not None:
        method(msg, error)


def format_exception(error):
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


class PrefixedBody(object):
    """The app's iterable with the chunks the gateway already pulled (to learn the status)
    put back in front; close() reaches the app's iterable."""

    def __init__(self, first, rest, app_iterable):
        self._first = first
        self._rest = rest
        self._app_iterable = app_iterable

    def __iter__(self):
        for chunk in self._first:
            yield chunk
        for chunk in self._rest:
            yield chunk

    def close(self):
        close = getattr(self._app_iterable, "close", None)
        if close is not None:
            close()
