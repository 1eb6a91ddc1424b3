"""What a fold imports, and a process that has imported it to fork `--parallel` children from.

Importing torch, timm, albumentations and kit's training modules takes about 5 s of a core; a
`--parallel` child that did it itself would start that much later, and N children would take N
times that CPU. On Linux the children are forked from one warm server (`python -m kit.warm`)
that made those imports once: a child then starts in milliseconds and shares the server's pages.

The server is kit's own rather than multiprocessing's forkserver, because that one imports the
caller's main script again in every child (a notebook's or a script's top level would run once
per child). This module imports no torch on purpose: `kit train --parallel` starts the server
while it parses its options, so the server's imports overlap the driver's own. The server lives
as long as the process that started it (it exits when that process's socket closes), so the next
`--parallel` call of a notebook or a sweep finds it warm. It only ever forks: it has not run a
torch op, so no OpenMP or CUDA state is forked.

Protocol: one SOCK_SEQPACKET message per child, a JSON {"entry", "argv", "env", "cwd"} with four file
descriptors: the child's stdin, stdout, stderr and a status pipe on which the server writes
`pid <n>` when it forks and `exit <code>` (negative: the signal) when the child ends.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

# imports everything a fold needs at its top (kit modules import at module level): the warm
# server, a Ray worker's warm-up and the benchmarks' driver import it before the first fold
WARM_MODULES = ("kit.cluster",)
CHILD_ENTRY = "kit.cluster:main"  # what a forked child runs: main(argv) -> exit code
MESSAGE_BYTES = 1 << 20  # one request (argv and environment) fits in this


class WarmServer:
    """The driver's handle on the warm server: start it once, then fork children from it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.control: socket.socket | None = None
        self.process: subprocess.Popen | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (its imports go on in the background); nothing if it runs."""
        with self.lock:
            if self.running():
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                # it imports from where this process does (a checkout put on sys.path too)
                path = os.pathsep.join(entry for entry in sys.path if entry)
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "kit.warm", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": path},
                )
            self.control = ours

    def spawn(
        self, argv, env: dict, stdin: int, stdout: int, stderr: int, entry: str = CHILD_ENTRY
    ):
        """Fork a child running entry(argv) ("module:function", its return value the exit code)
        with these descriptors; returns at once (the child starts when the server's imports are
        done) a Popen-like WarmChild."""
        self.start()
        status_read, status_write = os.pipe()
        request = {"entry": entry, "argv": argv, "env": env, "cwd": os.getcwd()}
        message = json.dumps(request).encode()
        try:
            with self.lock:
                socket.send_fds(self.control, [message], [stdin, stdout, stderr, status_write])
        finally:
            os.close(status_write)
        return WarmChild(status_read)


class WarmChild:
    """A child of the warm server, with the part of subprocess.Popen's interface kit uses."""

    def __init__(self, status: int) -> None:
        self.status = status  # read unbuffered: select() must see every line still to come
        self.pid: int | None = None
        self.returncode: int | None = None
        self.failure = ""  # why it never ran, when the server could not fork it

    def _read(self, timeout: float | None) -> bool:
        """Take the status lines that are there (waiting up to timeout); False on timeout."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.status, selectors.EVENT_READ)
            if not selector.select(timeout):
                return False
        data = os.read(self.status, 4096)  # whole lines: each is one short write
        for word, value in (line.split() for line in data.decode().splitlines()):
            if word == "pid":
                self.pid = int(value)
            else:
                self.returncode = int(value)
        if not data:  # the server closed it: after `exit`, or it died
            os.close(self.status)
            if self.returncode is None and self.pid is None:  # it never forked the child
                self.returncode = 1
                self.failure = (
                    "the warm server (python -m kit.warm) ended before it forked the child"
                )
            elif self.returncode is None:  # the server died before it could say: as if killed
                self.returncode = -signal.SIGKILL
        return True

    def poll(self) -> int | None:
        while self.returncode is None and self._read(0):
            pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._read(left):
                raise subprocess.TimeoutExpired("kit.warm child", timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        while self.pid is None and self.returncode is None:
            self._read(None)  # it has not been forked yet: wait for its pid
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


SERVER = WarmServer()  # one per process: every --parallel call of the process shares it


def start_warm_server() -> None:
    """Start the warm server now, on Linux (elsewhere children are spawned and import)."""
    if sys.platform == "linux":
        SERVER.start()


def spawn_child(argv: list[str], env: dict, **pipes):
    """A `--parallel` child running CHILD_ENTRY(argv): forked from the warm server on Linux, else
    a new interpreter (`python -m kit.cluster ...`). pipes: stdin, stdout, stderr for Popen."""
    if sys.platform != "linux":
        return subprocess.Popen([sys.executable, "-m", "kit.cluster", *argv], env=env, **pipes)
    return SERVER.spawn(argv, env, **pipes)


# ---------------------------------------------------------------------------------------------
# the server side: `python -m kit.warm FD`


def serve(control: socket.socket) -> None:
    """Import WARM_MODULES, then fork a child per request until the driver's socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    for module in WARM_MODULES:
        importlib.import_module(module)
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd says a child ended
    status: dict[int, int] = {}  # child pid -> its status pipe
    with selectors.DefaultSelector() as selector:
        selector.register(control, selectors.EVENT_READ)
        selector.register(wakeup_read, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is control:
                    message, fds, _, _ = socket.recv_fds(control, MESSAGE_BYTES, 4)
                    if not message:  # the driver is gone: so are we (children die with us)
                        return
                    server_fds = [control.fileno(), wakeup_read, wakeup_write, *status.values()]
                    pid = _fork(json.loads(message), fds, server_fds)
                    status[pid] = fds[3]
                    with contextlib.suppress(OSError):  # a driver that gave up on it
                        os.write(fds[3], f"pid {pid}\n".encode())
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup_read, 4096)
                    _reap(status)


def _fork(request: dict, fds: list[int], server_fds: list[int]) -> int:
    """Fork a child for one request; in the server, the child's pid."""
    server = os.getpid()
    pid = os.fork()
    if pid:
        for fd in fds[:3]:
            os.close(fd)
        return pid
    code = 1
    try:  # the child: its own descriptors, environment and signals, then the fold loop
        die_with_server(server)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd, target in zip(fds[:3], (0, 1, 2), strict=True):
            os.dup2(fd, target)
        for fd in {*fds, *server_fds}:  # only the server's own: libraries keep theirs
            with contextlib.suppress(OSError):
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        module, _, name = request["entry"].partition(":")
        code = getattr(importlib.import_module(module), name)(request["argv"]) or 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def die_with_server(server: int) -> None:
    """SIGKILL this child when the server dies (PR_SET_PDEATHSIG): the server exits when its
    caller does, so a killed driver leaves no child training; a server already gone ends it now."""
    import ctypes  # Linux's libc, as the server only runs there

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != server:
        os._exit(1)


def _reap(status: dict[int, int]) -> None:
    while status:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, f"exit {os.waitstatus_to_exitcode(wait_status)}\n".encode())
            os.close(fd)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
