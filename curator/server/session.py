"""Run one command against a local teacher server that lives only as long as it does:

    python -m curator.server.session --teacher synthetic --error-rate 0.5 --seed 0 -- \\
        curator generate --provider openai-compatible --model synthetic-teacher ...

The server starts on a free port of 127.0.0.1; the command gets ``--base-url
<server>/v1`` appended (and ``CURATOR_API_KEY`` set when unset; the local server checks
no key), runs as a process of its own (so ``curator generate`` talks to the server
through the real openai client over HTTP), and the server stops when it ends. The exit
status is the command's. Used by `distill compare` configs (``[[prepare]]`` steps) and
the demo, where a background server would outlive a failed step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from curator.errors import CuratorError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m curator.server.session [server options] -- COMMAND ...",
              file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="python -m curator.server.session")
    ap.add_argument("--teacher", default=None, help="synthetic (a programmatic teacher)")
    ap.add_argument("--error-rate", type=float, default=0.0)
    ap.add_argument("--replay", action="append", default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None, help="JSONL request log")
    opts = ap.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        print("session: no command after --", file=sys.stderr)
        return 2
    from curator.server import ServerConfig, TeacherServer
    try:
        srv = TeacherServer(ServerConfig(teacher=opts.teacher, error_rate=opts.error_rate,
                                         replay=opts.replay, seed=opts.seed,
                                         log_path=opts.log))
    except CuratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url = srv.start_in_thread()
    head = {"curator": [sys.executable, "-m", "curator.cli"]}.get(command[0], command[:1])
    env = {**os.environ}
    env.setdefault("CURATOR_API_KEY", "local-teacher-needs-no-key")
    try:
        return subprocess.run(head + command[1:] + ["--base-url", f"{url}/v1"], env=env).returncode
    finally:
        srv.stop_thread()


if __name__ == "__main__":
    sys.exit(main())
