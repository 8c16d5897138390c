"""`python -m pdac.serve`: the Grand Challenge invoke server (pdac.serve.server)."""

import sys

from pdac.serve.server import main

sys.exit(main())
