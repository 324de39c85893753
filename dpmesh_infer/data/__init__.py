"""Training and evaluation data: the on-disk sample format, converters, the synthetic generator."""
