"""Weights: on-disk format (io), locating weights (resolve), official checkpoint conversion, SMPL import."""
