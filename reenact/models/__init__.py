"""StyleGAN2 networks (NVlabs names), checkpoints (weights + architecture + provenance), converters for
NVlabs `.pkl` and rosinality `.pt` checkpoints, and the personalized latent space P+.

Submodules are imported explicitly (`from reenact.models.stylegan2 import Generator`); importing this
package does no work.
"""
