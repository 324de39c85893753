"""Pure batched maths: joint sets and mappings, crops and heatmaps, cameras, rotations."""
