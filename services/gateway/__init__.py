"""Gateway service: the public ReenactService (enroll, reenact, render, edit, persons) composed from the peers."""
