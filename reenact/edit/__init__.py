"""Latent edits in a person's P+ space (METHOD.md section 8), no grpc inside.

`directions`: semantic directions found from the self-scan's own anchors (mouth opening, smile, eye
opening, yaw, pitch), user-supplied W directions, and applying edits to (alpha, delta) points while
staying inside P_beta. Importing this package does no work.
"""

from reenact.edit.directions import (
    MAX_STRENGTH,
    SEMANTIC,
    Direction,
    anchor_attributes,
    apply_edits,
    edited_ws,
    load_anchors,
    semantic_directions,
    w_direction,
)

__all__ = ["MAX_STRENGTH", "SEMANTIC", "Direction", "anchor_attributes", "apply_edits", "edited_ws",
           "load_anchors", "semantic_directions", "w_direction"]
