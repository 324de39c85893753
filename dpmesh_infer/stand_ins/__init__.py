"""Generated stand-ins for files that cannot ship (weights, SMPL, detector checkpoints, photos).

Used by the tests, ``dpmesh selftest`` and ``dpmesh train config --tiny``; never by the inference path.
"""
