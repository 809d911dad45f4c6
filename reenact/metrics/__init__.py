"""Evaluation metrics: identity (dlib), image quality (PSNR), landmark errors."""
