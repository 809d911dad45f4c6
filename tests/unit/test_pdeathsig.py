"""reenact.pdeathsig: the wrapped command keeps its pid, runs with its arguments, and is SIGTERMed when its
starter dies (real processes; Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from reenact.pdeathsig import with_parent_death_signal

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_command_runs_in_place_with_its_arguments():
    proc = subprocess.Popen(with_parent_death_signal([sys.executable, "-c", "import os, sys; print(os.getpid(), "
                                                      "sys.argv[1:])", "a b", "c"]),
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    pid, args = out.split(" ", 1)
    assert int(pid) == proc.pid and args.strip() == "['a b', 'c']"  # exec'd in place: Popen's pid is the command's


def test_the_child_gets_sigterm_when_its_starter_dies(tmp_path):
    # a starter process spawns the wrapped `sleep`, reports its pid, then dies without cleaning up
    starter = textwrap.dedent(f"""
        import os, subprocess, sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        from reenact.pdeathsig import with_parent_death_signal
        p = subprocess.Popen(with_parent_death_signal(["sleep", "60"]), start_new_session=True)
        time.sleep(0.5)
        print(p.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=30)
    child = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_a_command_whose_starter_is_already_gone_does_not_run():
    boot = with_parent_death_signal(["true"])
    boot[4] = "1"  # claims a starter pid that is not our parent
    assert subprocess.run(boot, timeout=30).returncode == 143
