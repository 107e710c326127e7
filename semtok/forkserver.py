"""A fork server for local runs: the heavy libraries (torch, diffusers, transformers, torch-fidelity)
are imported once, and every `semtok` command of the workflow runs in a forked copy of that warm
process instead of paying several seconds of imports per job. On the tiny default DAG (≈140 short
jobs on 2 cores) this is the difference between minutes of imports and none.

The workflow starts it (`compute.forkserver: true`, local execution only) and sets
SEMTOK_FORKSERVER to its socket; `semtok.cli.main` then hands its argv, working directory,
environment and standard streams to the server, which forks a child that runs the command exactly as
the process itself would have. The client forwards SIGTERM/SIGINT/SIGUSR1 to the child (so training
still checkpoints on a signal) and exits with the child's exit status. If the server cannot be
reached the command simply runs in-process. The server exits when its parent (Snakemake) goes away.

Forking is safe here because the server only imports: it never starts threads, an OpenMP pool or CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

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
    "semtok.models.tokenizer",
    "semtok.models.generator",
    "semtok.train.loop",
    "semtok.eval.features",
    "semtok.eval.metrics",
)
_HEADER = struct.Struct("!I")


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
# Client (called by semtok.cli.main)


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
    with conn:
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        _send(conn, request, [0, 1, 2])
        (reply, _) = _recv(conn)
        child = int(reply["pid"])

        def forward(signum: int, _frame: object) -> None:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, forward)
        try:
            (result, _) = _recv(conn)
        except ConnectionError:
            return 1  # the child died without reporting (killed)
        return int(result["status"])


# ---------------------------------------------------------------------------------------------
# Server


def _child(conn: socket.socket) -> None:
    """In the forked child: become the client's process and run the command."""
    request, fds = _recv(conn, with_fds=3)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CHILD_ENV] = "1"
    sys.argv = ["semtok", *request["argv"]]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _send(conn, {"pid": os.getpid()})
    status = 1
    try:
        from semtok.cli import main

        status = main(request["argv"])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # report like the interpreter would, then fail
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            _send(conn, {"status": status})
        finally:
            os._exit(status)


def serve(path: Path, parent: int) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up the socket on terminate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    server.settimeout(2.0)
    ready = path.with_name(path.name + ".ready")
    ready.write_text(str(os.getpid()))
    try:
        while os.getppid() == parent:
            try:
                conn, _ = server.accept()
            except (TimeoutError, InterruptedError):
                continue
            if os.fork() == 0:
                server.close()
                conn.settimeout(None)
                _child(conn)
            conn.close()
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
    parser = argparse.ArgumentParser(prog="python -m semtok.forkserver", description=__doc__)
    parser.add_argument("--socket", required=True, help="Unix socket path")
    parser.add_argument("--parent", type=int, default=os.getppid(), help="exit when this process is gone")
    args = parser.parse_args(argv)
    serve(Path(args.socket), args.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
