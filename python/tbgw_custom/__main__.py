"""`python -m tbgw_custom --type T --class C [--extensions DIR]... SETTINGS_JSON CONFIG_DIR`

tbgw starts this for a `connectors[]` entry with a `class`. SETTINGS_JSON and CONFIG_DIR are
the two arguments tbgw gives every connector process it supervises (as upstream starts its
out-of-process connectors): `{"name", "id", "grpc_key", "config", "gateway": {"host",
"port"}}` and the configuration directory.
"""

import argparse
import json
import logging
import os
import sys

from .host import run


class _BelowWarning(logging.Filter):
    def filter(self, record):
        return record.levelno < logging.WARNING


def _logging():
    """INFO and below on stdout, warnings and errors on stderr: tbgw logs the lines of each at
    that level under the connector's name."""
    fmt = logging.Formatter("%(levelname)s [%(name)s] %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_BelowWarning())
    out.setFormatter(fmt)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [out, err]
    root.setLevel(logging.INFO)


def main(argv=None):
    p = argparse.ArgumentParser(prog="tbgw_custom", description=__doc__.split("\n\n")[1])
    p.add_argument("--type", required=True, help="the connector type: the extensions folder to search")
    p.add_argument("--class", dest="class_name", required=True, help="the connector class name")
    p.add_argument("--extensions", action="append", default=[], help="a directory with <type>/ folders")
    p.add_argument("settings", help="tbgw's settings JSON")
    p.add_argument("config_dir", help="the configuration directory")
    a = p.parse_args(argv)
    _logging()
    settings = json.loads(a.settings)
    gw = settings.get("gateway", {})
    target = f"{gw.get('host', '127.0.0.1')}:{gw.get('port', 9595)}"
    return run(target, settings["grpc_key"], a.type, a.class_name, a.extensions, a.config_dir)


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads of the class that are not daemons must not keep the process alive: tbgw starts
    # a new one when this one has exited.
    os._exit(code)
