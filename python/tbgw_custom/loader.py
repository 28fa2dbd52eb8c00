"""Finds a custom connector class the way upstream's `TBModuleLoader.import_module` does: every
`.py` file (not `__*`) of `<dir>/<type>/` in each search directory is imported until one
defines a class of exactly that name."""

import importlib.util
import inspect
import logging
import os

log = logging.getLogger("tbgw_custom")

UPSTREAM_DEB_EXTENSIONS = "/var/lib/thingsboard_gateway/extensions"


def upstream_package_dirs():
    """`extensions`, `connectors` and `grpc_connectors` of an installed upstream package (where
    its example `extensions/serial` lives), when it is importable."""
    try:
        import thingsboard_gateway  # noqa: F401  pylint: disable=import-outside-toplevel
    except Exception:  # noqa: BLE001
        return []
    root = os.path.dirname(os.path.abspath(thingsboard_gateway.__file__))
    return [os.path.join(root, d) for d in ("extensions", "connectors", "grpc_connectors")]


def search_dirs(extra):
    """The directories searched, in order: `extra` (tbgw's, e.g. `extensions` beside
    tb_gateway.json), upstream's Debian path, then the upstream package's own folders."""
    dirs = list(extra) + [UPSTREAM_DEB_EXTENSIONS] + upstream_package_dirs()
    seen, out = set(), []
    for d in dirs:
        d = os.path.abspath(d)
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def share_paths_with_upstream_loader(extra):
    """Makes upstream's `TBModuleLoader` (which custom connectors call to load their
    converters) search tbgw's directories first."""
    try:
        from thingsboard_gateway.tb_utility.tb_loader import TBModuleLoader  # pylint: disable=import-outside-toplevel
    except Exception:  # noqa: BLE001
        return
    if not TBModuleLoader.PATHS:
        TBModuleLoader.find_paths()
    for d in reversed([os.path.abspath(p) for p in extra]):
        if d not in TBModuleLoader.PATHS:
            TBModuleLoader.PATHS.insert(0, d)


class ClassNotFound(Exception):
    """No file of the search directories defines the class."""


def find_class(connector_type, class_name, dirs):
    """The class `class_name` from `<dir>/<connector_type>/*.py`; errors of files that fail to
    import are collected into the exception when the class is not found."""
    errors = []
    for base in dirs:
        folder = os.path.join(base, connector_type)
        if not os.path.isdir(folder):
            continue
        for file in sorted(os.listdir(folder)):
            if file.startswith("__") or not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            module_name = f"tbgw_ext_{connector_type}_{file[:-3]}"
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                if spec is None or spec.loader is None:
                    continue
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except Exception as e:  # noqa: BLE001 - a broken neighbour file must not hide the class
                errors.append(f"{path}: {type(e).__name__}: {e}")
                continue
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if name == class_name:
                    log.info("Imported %s from %s", class_name, path)
                    return cls
    detail = "; ".join(errors) if errors else "no file defines it"
    raise ClassNotFound(f"class `{class_name}` not found in {[os.path.join(d, connector_type) for d in dirs]}: {detail}")
