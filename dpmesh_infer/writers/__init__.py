"""Mesh file writers from numpy, no per-vertex Python (layer 2, beside ``export``).

- :mod:`.obj` — :class:`~.obj.ObjWriter`: Wavefront OBJ bytes, byte-identical to trimesh's export.
- :mod:`.glb` — :class:`~.glb.GlbWriter` (scene.glb with pygltflib: camera, normals, materials, photo quad;
  a template per person count), :class:`~.glb.VertexNormals` / :func:`~.glb.vertex_normals`,
  :class:`~.glb.GlbBuffer` (shared with the video glTF).
"""
