"""Grand Challenge entry point (PANORAMA interface), GC's exec API method: one case per process.

Reads the one venous-phase CT under <input>/images/venous-ct/, writes
<output>/images/pdac-detection-map/detection_map.mha and <output>/pdac-likelihood.json.
Other files beside the scan (inputs.json, clinical information) are ignored.

The case itself is `pdac.serve.gc_case.run_case`, which the invoke server (`python -m pdac.serve`)
runs too.
"""

import sys

from pdac.serve.gc_case import main

if __name__ == "__main__":
    sys.exit(main())
