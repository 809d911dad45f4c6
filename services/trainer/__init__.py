"""Trainer service: enrollment jobs (self-scan -> personalized generator) with a persistent queue."""
