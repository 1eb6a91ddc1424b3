"""kit.warm: `--parallel` children forked from a server that imported torch once.

A child must start warm (torch already imported), see the caller's environment at the time it
is forked (not the server's at its start), report its exit code or the signal that ended it,
never run the caller's main script again, and die with the caller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from run_support import running_pids

from kit.warm import SERVER, WarmChild

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the warm server is Linux's")

REPORT = """
import json, os, sys
print(json.dumps({"ppid": os.getppid(), "mark": os.environ.get("KIT_TEST_MARK"),
                  "torch": "torch" in sys.modules, "timm": "timm" in sys.modules,
                  "cwd": os.getcwd(), "stdin": sys.stdin.read()}), flush=True)
raise SystemExit(int(os.environ["KIT_TEST_CODE"]))
"""


def spawn(code: str, env: dict, stdin_text: str = ""):
    """A child that execs `code`, with pipes for its stdin and stdout."""
    (child_in, ours_in), (ours_out, child_out) = os.pipe(), os.pipe()
    child = SERVER.spawn(
        code, env, stdin=child_in, stdout=child_out, stderr=2, entry="builtins:exec"
    )
    os.close(child_in), os.close(child_out)
    with os.fdopen(ours_in, "w") as handle:
        handle.write(stdin_text)
    return child, os.fdopen(ours_out)


def test_child_starts_warm_with_the_environment_of_now(tmp_path, monkeypatch):
    SERVER.start()
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "KIT_TEST_MARK": "set after the server started", "KIT_TEST_CODE": "3"}
    child, out = spawn(REPORT, env, "a job line\n")
    report = json.loads(out.readline())
    assert child.wait(timeout=120) == 3
    assert report["ppid"] == SERVER.process.pid and report["ppid"] != os.getpid()
    assert report["mark"] == "set after the server started"
    assert report["torch"] and report["timm"], "the child imported nothing itself"
    assert report["cwd"] == str(tmp_path) and report["stdin"] == "a job line\n"


def test_a_killed_child_reports_the_signal():
    child, out = spawn("import time; print('up', flush=True); time.sleep(600)", dict(os.environ))
    assert out.readline() == "up\n"
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL
    running, _ = spawn("import time; time.sleep(600)", dict(os.environ))
    try:
        with pytest.raises(subprocess.TimeoutExpired):  # a second one, still running
            running.wait(timeout=0.5)
    finally:
        running.kill()
    assert running.wait(timeout=30) == -signal.SIGKILL


def test_scripts_run_once_and_children_die_with_their_caller(tmp_path):
    """A script without a __main__ guard runs its top level once (multiprocessing's forkserver
    would run it again in each child); SIGKILL of it ends the server and the child."""
    marker = tmp_path / "ran.txt"
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys
        with open({str(marker)!r}, "a") as handle:
            handle.write("top level ran\\n")
        from kit.warm import SERVER
        read, write = os.pipe()
        child = SERVER.spawn("import time; time.sleep(600)", dict(os.environ),
                             stdin=read, stdout=2, stderr=2, entry="builtins:exec")
        child.send_signal(0)  # waits for its pid
        print(SERVER.process.pid, child.pid, flush=True)
        import time; time.sleep(600)
        """)
    )
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        server, child = map(int, caller.stdout.readline().split())
        assert marker.read_text() == "top level ran\n"
        caller.kill()
        caller.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and ({server, child} & running_pids()):
            time.sleep(0.2)
        assert server not in running_pids(), "the server outlived its caller"
        assert child not in running_pids(), "the child outlived its caller"
        assert marker.read_text() == "top level ran\n"
    finally:
        caller.kill()


def test_a_server_that_dies_before_forking_is_a_failure_with_a_reason():
    """Status EOF before any pid: the child never ran (exit 1, a reason), not 'killed'."""
    read, write = os.pipe()
    os.close(write)
    child = WarmChild(read)
    assert child.wait(timeout=5) == 1 and "ended before it forked" in child.failure
    read, write = os.pipe()
    os.write(write, b"pid 12345\n")
    os.close(write)
    child = WarmChild(read)  # forked, then the server died: as if the child was killed
    assert child.wait(timeout=5) == -signal.SIGKILL and child.pid == 12345 and not child.failure
