"""Other ways to run a folder run than the local three-stage :class:`dpmesh_infer.batch.BatchRunner`.

- :mod:`.ray_data`: ``dpmesh predict ... --engine ray``, the same per-image work on a Ray Data actor
  pool (one pipeline per worker, one GPU each); the driver keeps the manifest, the lock and the summary.

Nothing here imports an engine's own dependency (ray) until a run asks for that engine.
"""
