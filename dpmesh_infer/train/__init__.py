"""Training: VQ-VAE pose prior pre-training (:mod:`.vqvae`). Stages never import this package.

Nothing heavy runs on import; import the submodules you need.
"""
