"""`python -m icebergdo.restcatalog [--config FILE | --home DIR] [--host 127.0.0.1] [--port 8181]`.

Serves only the REST catalog, at http://HOST:PORT/catalog, with `[serve.catalog]` of the config
(tokens, clients, anonymous). `icebergdo serve` serves it beside the ingest API; this runner is for
a catalog-only process (and the test suite).
"""

from __future__ import annotations

import argparse
import logging
import sys

from icebergdo.config import Config
from icebergdo.errors import IcebergdoError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icebergdo.restcatalog", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--home", metavar="DIR")
    parser.add_argument("--catalog", metavar="NAME", help="a catalog from .pyiceberg.yaml / PYICEBERG_CATALOG__NAME__*")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8181)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvicorn

        from icebergdo.restcatalog.app import rest_catalog_app
        from icebergdo.restcatalog.local import mounted
        from icebergdo.tables import Tables

        config = Config.resolve(home=args.home, config=args.config, catalog=args.catalog)
        app = mounted(rest_catalog_app(Tables(config)))
    except IcebergdoError as e:
        print(f"icebergdo: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"icebergdo REST catalog on http://{args.host}:{args.port}/catalog", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
