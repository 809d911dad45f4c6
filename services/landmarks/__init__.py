"""Landmarks service: MediaPipe face mesh tracking, FFHQ-style alignment and temporal smoothing."""
