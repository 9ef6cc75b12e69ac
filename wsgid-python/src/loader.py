"""wsgid's app loaders (embedded in the binary): module:callable, Django projects, loader
plugins and a plain app/wsgi.py exposing `application`."""
import importlib
import importlib.util
import inspect
import os
import sys
import traceback


class LoadError(Exception):
    """The app cannot be loaded; the message is one line for the user."""


def _add_path(path):
    if path not in sys.path:
        sys.path.insert(0, path)


def app_base(app_path):
    """The folder put on sys.path: app/ inside the app folder when present, else the folder."""
    app_dir = os.path.join(app_path, "app")
    return app_dir if os.path.isdir(app_dir) else app_path


def load_callable(spec, base):
    """`module:callable` or wsgid's `module.callable` (dotted attributes allowed after `:`)."""
    if ":" in spec:
        module_name, attr = spec.split(":", 1)
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise LoadError(f"--wsgi-app {spec!r}: expected module:callable (or module.callable)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise LoadError(f"module {module_name!r} not found (searched {base} and sys.path)") from None
        raise
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise LoadError(f"{spec!r} is a {type(obj).__name__}, not a callable WSGI app")
    return obj


def django_project(base):
    """The first non-hidden folder under `base` holding settings.py and __init__.py."""
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return None
    for name in names:
        if name.startswith(".") or name.startswith("_"):
            continue
        d = os.path.join(base, name)
        if (os.path.isdir(d) and os.path.isfile(os.path.join(d, "settings.py"))
                and os.path.isfile(os.path.join(d, "__init__.py"))):
            return name
    return None


class DjangoLoader:
    """Django projects as wsgid 0.7 found them."""

    def can_load(self, app_path):
        return django_project(app_base(app_path)) is not None

    def load_app(self, app_path, full_name=None):
        base = app_base(app_path)
        project = django_project(base)
        if project is None:
            raise LoadError(f"no Django project (a folder with settings.py and __init__.py) under {base}")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{project}.settings")
        try:
            from django.core.wsgi import get_wsgi_application
        except ImportError:
            raise LoadError(f"Django project {project!r} found but Django is not installed in "
                            f"{sys.prefix} (use --python or a venv/ in the app folder)") from None
        return get_wsgi_application()


class WsgiPyLoader:
    """A plain app/wsgi.py exposing `application`."""

    def can_load(self, app_path):
        return os.path.isfile(os.path.join(app_base(app_path), "wsgi.py"))

    def load_app(self, app_path, full_name=None):
        return load_callable("wsgi:application", app_base(app_path))


def plugin_loaders(dirs, log):
    """Instances of every class with can_load and load_app found in *.py of `dirs`."""
    loaders = []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for fname in sorted(os.listdir(d)):
            if not fname.endswith(".py") or fname.startswith((".", "_")):
                continue
            path = os.path.join(d, fname)
            modname = "wsgid_plugin_" + os.path.splitext(fname)[0]
            try:
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                spec.loader.exec_module(module)
            except Exception:
                log(f"loader plugin {path} failed to import:\n{traceback.format_exc()}")
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != modname:
                    continue
                if callable(getattr(cls, "can_load", None)) and callable(getattr(cls, "load_app", None)):
                    try:
                        loaders.append(cls())
                    except Exception:
                        log(f"loader plugin {cls.__name__} ({path}) failed to start:\n{traceback.format_exc()}")
    return loaders


def load(app_path, wsgi_app, django, loader_dirs, log):
    """Loads the WSGI app; raises LoadError with a one-line reason when nothing can."""
    app_path = os.path.abspath(app_path)
    if not os.path.isdir(app_path):
        raise LoadError(f"app path {app_path} is not a folder")
    base = app_base(app_path)
    _add_path(base)
    if wsgi_app:
        return load_callable(wsgi_app, base)
    if django:
        return DjangoLoader().load_app(app_path, wsgi_app)
    dirs = [os.path.join(app_path, "plugins")] + list(loader_dirs)
    candidates = plugin_loaders(dirs, log) + [DjangoLoader(), WsgiPyLoader()]
    failures = []
    for loader in candidates:
        name = type(loader).__name__
        try:
            if not loader.can_load(app_path):
                continue
            app = loader.load_app(app_path, wsgi_app)
        except LoadError as e:
            log(f"loader {name} could not load {app_path}: {e}")
            failures.append(f"{name}: {e}")
            continue
        except Exception as e:
            log(f"loader {name} raised while loading {app_path}:\n{traceback.format_exc()}")
            failures.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if app is None or not callable(app):
            log(f"loader {name} returned {app!r}, not a WSGI callable; trying the next one")
            failures.append(f"{name}: returned {type(app).__name__}")
            continue
        return app
    if failures:
        raise LoadError(f"no loader could load {app_path} ({'; '.join(failures)})")
    raise LoadError(f"nothing to load in {app_path}: give --wsgi-app module:callable, "
                    f"or provide app/wsgi.py with `application`, a Django project or a loader plugin")
