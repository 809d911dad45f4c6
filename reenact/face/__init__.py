"""Pure core of the landmarks service (no grpc): MediaPipe face mesh (mesh), FFHQ alignment (align),
temporal smoothing (smooth), video face tracking (tracker) and landmark attributes (attributes).
Nothing is loaded at import time; MediaPipe graphs live inside FaceMesh / FaceTracker objects."""
