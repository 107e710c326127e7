"""A fork server for local runs: the heavy libraries (torch, diffusers, transformers, torch-fidelity)
are imported once, and every `semtok` command of the workflow runs in a forked copy of that warm
process instead of paying several seconds of imports per job. On the tiny default DAG (≈140 short
jobs on 2 cores) this is the difference between minutes of imports and none.

The workflow starts it (`compute.forkserver: true`, local execution only) and sets
SEMTOK_FORKSERVER to its socket; `semtok.cli.main.main` then hands its argv, working directory,
environment and standard streams to the server, which forks a child that runs the command exactly as
the process itself would have: the same output on the same streams (a `SystemExit` message too), the
same exit status. The client forwards SIGTERM/SIGINT/SIGUSR1/SIGHUP to the child (so training still
checkpoints on a signal) and exits with the child's exit status. If the server cannot be reached the
command simply runs in-process.

No orphans: the server exits when its parent (Snakemake) goes away, and a child receives SIGTERM (the
signal a job checkpoints on) when the server exits or is killed, or when its client (the rule's
process) goes away, so that no job outlives the run and races a rerun for its checkpoint folder.

Forking is safe here because the server only imports: it never starts threads, an OpenMP pool or CUDA.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path

from semtok.utils.process import die_with_parent, install_job_handler

ENV = "SEMTOK_FORKSERVER"
CHILD_ENV = "SEMTOK_IN_FORKSERVER"
PRELOAD = (
    "torch",
    "torchvision",
    "diffusers.models.autoencoders.autoencoder_kl",
    "diffusers.models.transformers.transformer_sd3",
    "transformers.models.siglip.modeling_siglip",
    "torch_fidelity",
    "lpips",
    "accelerate",
    "webdataset",
    "semtok.jobs.data",
    "semtok.jobs.teachers",
    "semtok.jobs.encode",
    "semtok.jobs.tokenizer",
    "semtok.jobs.generator",
    "semtok.jobs.evaluation",
    "semtok.jobs.report",
)
_HEADER = struct.Struct("!I")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
PARENT_POLL_S = 0.5  # how often the server checks that its parent is still there


def _send(conn: socket.socket, obj: object, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    payload = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(conn, [payload], fds)
    else:
        conn.sendall(payload)


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[object, list[int]]:
    if with_fds:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, with_fds)
    else:
        msg, fds = conn.recv(1 << 20), []
    if not msg:
        raise ConnectionError("fork server connection closed")
    (size,) = _HEADER.unpack(msg[: _HEADER.size])
    data = msg[_HEADER.size :]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("fork server connection closed mid-message")
        data += chunk
    return json.loads(data), list(fds)


# ---------------------------------------------------------------------------------------------
# Client (called by semtok.cli.main.main)


def delegate(argv: list[str]) -> int | None:
    """Run `semtok argv` in the fork server; None when there is no reachable server."""
    path = os.environ.get(ENV)
    if not path or os.environ.get(CHILD_ENV) or not Path(path).exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        return None
    child: list[int] = []  # the job's pid, once the server has forked it
    pending: list[int] = []  # signals received before that

    def forward(signum: int, _frame: object) -> None:
        if not child:
            pending.append(signum)
            return
        try:
            os.kill(child[0], signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    with conn:
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        try:
            _send(conn, request, [0, 1, 2])
            (reply, _) = _recv(conn)
        except (ConnectionError, OSError):  # the server went away before it took the job: run it here
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for signum in pending:
                os.kill(os.getpid(), signum)
            return None
        child.append(int(reply["pid"]))
        for signum in pending:
            forward(signum, None)
        try:
            (result, _) = _recv(conn)
        except ConnectionError:
            print(
                f"semtok: the command's process {child[0]} (fork server) ended without an exit status: "
                "killed by a signal",
                file=sys.stderr,
            )
            return 1
        return int(result["status"])


# ---------------------------------------------------------------------------------------------
# Server


def _exit_status(exc: SystemExit) -> int:
    """The exit status the interpreter gives an uncaught SystemExit, printing its message as it does."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _watch_client(conn: socket.socket, finished: threading.Event) -> None:
    """In the child: when the client (the rule's process) goes away before the job has finished, it
    was killed; stop the job as a terminated one (a training job checkpoints)."""
    try:
        conn.recv(1)
    except OSError:
        pass
    if not finished.is_set():
        os.kill(os.getpid(), signal.SIGTERM)


def _run_command(argv: list[str]) -> int:
    """`semtok argv` as `python -m semtok.cli` would run it in-process; returns its exit status."""
    try:
        from semtok.cli.dispatch import run

        return run(argv)
    except SystemExit as exc:
        return _exit_status(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:  # report like the interpreter would, then fail
        traceback.print_exc()
        return 1


def _child(conn: socket.socket, server: int) -> None:
    """In the forked child: become the client's process, run the command, report its status."""
    die_with_parent(signal.SIGTERM, server)
    request, fds = _recv(conn, with_fds=3)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CHILD_ENV] = "1"
    sys.argv = ["semtok", *request["argv"]]
    for sig in (*FORWARDED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    install_job_handler()  # as `semtok.cli.main.entry` in a process of its own
    _send(conn, {"pid": os.getpid()})
    finished = threading.Event()
    threading.Thread(target=_watch_client, args=(conn, finished), daemon=True).start()
    status = _run_command(request["argv"])
    finished.set()
    atexit._run_exitfuncs()  # what the interpreter runs at exit (logging.shutdown flushes handlers, ...)
    sys.stdout.flush()
    sys.stderr.flush()
    _send(conn, {"status": status})
    os._exit(status)


def _fork_job(conn: socket.socket, server: socket.socket) -> None:
    """Fork a child for the job on `conn`; the child never returns into the server's loop."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.getpid()
    if os.fork() == 0:
        try:
            server.close()
            conn.settimeout(None)
            _child(conn, pid)
        finally:
            os._exit(1)  # only reached if the child itself failed (its status is sent by _child)
    conn.close()


def serve(path: Path, parent: int, preload: list[str]) -> None:
    for name in preload:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up the socket on terminate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    server.settimeout(PARENT_POLL_S)
    ready = path.with_name(path.name + ".ready")
    ready.write_text(str(os.getpid()))
    try:
        while os.getppid() == parent:
            try:
                conn, _ = server.accept()
            except (TimeoutError, InterruptedError):
                continue
            _fork_job(conn, server)
    finally:
        server.close()
        path.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semtok.cli.forkserver", description=__doc__)
    parser.add_argument("--socket", required=True, help="Unix socket path")
    parser.add_argument(
        "--parent", type=int, default=os.getppid(), help="the pid of the parent; exit when it is gone"
    )
    parser.add_argument(
        "--preload", nargs="*", default=list(PRELOAD), help="modules to import before serving"
    )
    args = parser.parse_args(argv)
    serve(Path(args.socket), args.parent, args.preload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
