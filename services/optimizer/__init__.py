"""Optimizer service: per-frame latent optimization in the person's P+ space (targets in, latents out)."""
