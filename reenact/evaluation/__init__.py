"""Evaluation harness (issue 6): metrics, baselines and protocols for reenactment, split in phases.

    prepare (CPU, MediaPipe)  driving video (+ self-scan) -> one .npz bundle        reenact.evaluation.bundle
    produce (torch; cpu/cuda) bundle -> output frames + timings of every method     reenact.evaluation.methods
    score   (CPU, MediaPipe + dlib) outputs -> results.json + report.html           reenact.evaluation.score

Metrics are defined in reenact.evaluation.metrics; the methods (nearest-anchor retrieval, 2-D warp,
the paper's per-frame optimization, ours) in reenact.evaluation.methods; both protocols in
reenact.evaluation.suite. CLI: `reenact eval ...` or `python -m reenact.evaluation ...` (no grpc import).
Nothing heavy is imported here.
"""
