"""The container image's ENTRYPOINT: Grand Challenge's API method, fixed when the image is built.

The Dockerfile's `ARG API_METHOD` (invoke by default, or exec) sets both the image's
`org.grand-challenge.api-method` label, which tells GC how to run it, and `$PDAC_API_METHOD`, read here:

- invoke: the warm server (`pdac.serve.server`) on 0.0.0.0:4743, /input -> /output, one case per request;
- exec: one case and exit, exactly `process.py` (`pdac.serve.gc_case.main`; the server is not even imported).

Arguments are passed on (e.g. `--input`, `--output`; `--port` for invoke).
"""

import logging
import os
import sys

from pdac.logs import setup_logging

API_METHOD_ENV = "PDAC_API_METHOD"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    method = os.environ.get(API_METHOD_ENV, "invoke").strip().lower()  # GC reads its label case-insensitively
    if method == "exec":
        from pdac.serve.gc_case import main as run_one_case

        return run_one_case(argv)
    if method == "invoke":
        from pdac.serve.server import main as serve

        return serve(["--host", "0.0.0.0", *argv])
    setup_logging()
    logging.getLogger("pdac.serve").error("$%s must be 'invoke' or 'exec' (the image's API method), got %r",
                                          API_METHOD_ENV, method)
    return 2


if __name__ == "__main__":
    sys.exit(main())
