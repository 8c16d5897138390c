"""Delivering the pipeline to Grand Challenge (GC): one GC case (`gc_case`), run once per process by
`process.py` (GC's exec API method) or many times by a warm HTTP server (`server`, GC's invoke API method).

Above `infer/`: it owns GC's folder layout, start-up, `/health`, `/invoke` and signals; the pipeline itself
lives in `pdac.infer`. Importing this package imports neither FastAPI nor the models.
"""
