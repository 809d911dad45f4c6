"""Enrollment: from a self-scan video to a personalized generator (MyStyle), as a pure core.

Stages: align -> select -> base -> anchors -> tune -> evaluate -> export. `run_enrollment` is the entry
point; it takes `progress` and `should_stop` callbacks so the trainer service can stream and cancel it.
"""


def run_enrollment_job(job, ctx, cfg):
    """Trainer run_fn (imported lazily: torch and the models load only when a job runs)."""
    from reenact.enroll.job import run_enrollment_job as run

    return run(job, ctx, cfg)
