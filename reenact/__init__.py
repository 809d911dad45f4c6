"""reenact: facial reenactment through a personalized generator, as gRPC services."""
