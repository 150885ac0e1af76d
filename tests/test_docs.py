"""The docs can't rot: every code block in README.md and docs/ that starts with `xlmr` or `python`
runs here, page by page, in order, on tiny inputs (so does an `sh` block that opens with a variable
assignment such as `M=$(python -c ...)`, and a `VAR=value` prefix before `xlmr`/`python` is allowed).

How: each page runs in a fresh directory `work/` whose `../shared` is a tiny fake copy of the real
`shared/` tree (same layout, a few sentences per file), so the commands run exactly as written.
Budget flags are capped (`--epochs 1`, `--max-steps 3`, a small `--vocab-size`, ...) so that a
command meant for minutes takes seconds (DEFAULT_CAPS adds such a flag where a command leaves a large
default). The `xlmr` on their PATH is a client of one warm server (tests/warm_cli.py) that has torch
and xlmr imported and forks a child per command, so a line costs its work, not a fresh interpreter's
imports; `python ...` lines, python blocks and `xlmr serve` run as their own processes. Blocks fenced
as `text` are output transcripts and are not run; a runnable block must be fenced `sh` or `python`.
Benchmark scripts (`python bench/...`) need the real data and minutes to hours; they run with
`make bench`, not here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CAPS = {"--epochs": "1", "--max-steps": "3", "--max-minutes": "0.05", "--vocab-size": "300",
        "--eval-every": "2", "--save-every": "2", "--max-train": "40", "--max-eval": "20", "--steps": "2",
        "--head-warmup-steps": "2"}
# Budgets a command leaves at their default: `tokenizer train` samples 10M characters by default,
# which on the tiny corpus means repeating it (30 s of SentencePiece instead of 1 s); finetune's 3 epochs.
DEFAULT_CAPS = {"xlmr tokenizer train": {"--sample-chars": "200000"}, "xlmr finetune": {"--epochs": "1"}}
SKIP_PREFIXES = ("python bench/",)  # real-data benchmarks (after any `VAR=value` prefix): `make bench`
ENV_PREFIX = re.compile(r"^(?:[A-Za-z_]\w*=[^\s$]\S*\s+)+")  # `XLMR_DATA=../shared/data python ...`
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")  # `M=$(python -c ...)` opening an sh block
SERVER_COMMANDS = ("xlmr serve",)  # long-running: started, checked alive, stopped
HUB_NAMES = ("xlm-roberta-base", "xlm-roberta-large", "bert-base-multilingual-cased")  # need a network


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of every python block, every block whose first command is xlmr or python (after
    any `VAR=value` prefix), and every sh block that opens with a variable assignment. `text` blocks are
    output (which may itself start with `$ xlmr ...` or `xlmr: error: ...`) and never count."""
    out = []
    for lang, code in FENCE.findall(page.read_text(encoding="utf-8")):
        if lang == "text":
            continue
        first = next((l.strip() for l in code.splitlines() if l.strip() and not l.strip().startswith("#")), "")
        first = first.removeprefix("$ ")
        if (lang == "python" or _runs_xlmr_or_python(first)
                or (lang == "sh" and (ASSIGNMENT.match(first) or any(map(_runs_xlmr_or_python, _commands(code)))))):
            out.append((lang, code))
    return out


def _runs_xlmr_or_python(line: str) -> bool:
    """Whether a shell line's command (after any `VAR=value` prefix) is xlmr or python."""
    words = ENV_PREFIX.sub("", line).split(maxsplit=1)
    return bool(words) and words[0] in ("xlmr", "python")


def test_runnable_blocks_are_fenced_as_code():
    """A block that starts with a command must be `sh` or `python`: `text` is only for output."""
    bad = [(p.name, code.splitlines()[0]) for p in PAGES for lang, code in blocks(p) if lang not in ("sh", "python")]
    assert not bad, f"blocks starting with a command but not fenced sh/python: {bad}"


def cap(command: str) -> str:
    """Apply CAPS to one shell command line, and DEFAULT_CAPS where the line leaves the flag out."""
    for flag, value in CAPS.items():
        command = re.sub(rf"(?<!\S){flag}(\s+|=)[^\s-]\S*", f"{flag} {value}", command)
    for prefix, flags in DEFAULT_CAPS.items():
        if ENV_PREFIX.sub("", command).startswith(prefix + " "):
            added = " ".join(f"{flag} {value}" for flag, value in flags.items() if flag not in command.split())
            command = command.replace(prefix + " ", f"{prefix} {added} ", 1) if added else command
    return command


def page_env(sandbox: Path) -> dict[str, str]:
    """The environment the docs commands (and the warm xlmr server) run in."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "XLMR_CACHE": str(sandbox / "cache"),  # multilingual-e5-small converts here, not in the user's cache
            "PATH": f"{sandbox / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The fake `shared/` tree, and `bin/xlmr`: a client of one warm server (tests/warm_cli.py) that
    forks a child per command instead of importing torch and xlmr again for each line."""
    from docs_fixture import make_shared
    from warm_cli import write_client

    root = tmp_path_factory.mktemp("docs")
    make_shared(root / "shared")
    (root / "bin").mkdir()
    path = str(root / "xlmr.sock")
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "warm_cli.py"), path], cwd=root,
                              env=page_env(root))
    try:
        for _ in range(1200):
            if os.path.exists(path) or server.poll() is not None:
                break
            time.sleep(0.1)
        assert os.path.exists(path), f"the warm xlmr server did not start (exit code {server.poll()})"
        write_client(root / "bin" / "xlmr", path)
        yield root
    finally:
        server.kill()
        server.wait()


def run_page(page: Path, sandbox: Path) -> None:
    """Run a page's blocks in order: consecutive sh blocks as one bash script (variables persist)."""
    work = sandbox / page.stem
    work.mkdir()
    env = page_env(sandbox)
    script: list[str] = []

    def flush():
        if script:
            body = "set -euo pipefail\n" + "\n".join(script)
            proc = subprocess.run(["bash", "-c", body], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=900)
            assert proc.returncode == 0, f"{page.name}: commands failed:\n{body}\n{proc.stderr[-3000:]}"
            script.clear()

    for lang, code in blocks(page):
        if lang == "python":
            flush()
            proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, f"{page.name}: python block failed:\n{code}\n{proc.stderr[-2000:]}"
            continue
        for line in _commands(code):
            if ENV_PREFIX.sub("", line).startswith(SKIP_PREFIXES):
                continue
            if line.startswith(SERVER_COMMANDS):
                script.append(_server_check(line))
            elif any(f" {name}" in line for name in HUB_NAMES):  # offline: the documented one-line error
                script.append(f"if {cap(line)} 2> hub.err; then exit 1; fi; grep -q 'Hugging Face hub' hub.err")
            else:
                script.append(cap(line))
    flush()


def _commands(code: str) -> list[str]:
    """Shell lines of a block: `$ ` prompts stripped, comments dropped, continuation lines joined.
    A here-document (`cat > f <<'EOF'` ... `EOF`) stays verbatim inside its command."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out: list[str] = []
    heredoc = None
    for raw in joined.splitlines():
        if heredoc is not None:
            out[-1] += "\n" + raw
            if raw.strip() == heredoc:
                heredoc = None
            continue
        line = raw.strip().removeprefix("$ ")
        if not line.startswith("#") and (m := re.search(r"<<-?\s*'?\"?(\w+)", line)):
            heredoc = m.group(1)
            out.append(line)
            continue
        line = re.sub(r"\s+#.*$", "", line)
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _server_check(line: str) -> str:
    """A long-running server line becomes: start it, wait for /healthz, stop it. It runs as its own
    `python -m xlmr` process, so that `kill` stops the server itself (not a client of the warm one)."""
    line = "python -m " + re.sub(r"--port\s+\d+", "", line) + " --port 8765"
    probe = ("import time, urllib.request\n"
             "for _ in range(240):\n"
             "    try:\n"
             "        urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=2); break\n"
             "    except OSError: time.sleep(0.5)\n"
             "else: raise SystemExit('server did not become healthy')")
    return f"{line} & SERVER=$!; python -c {shlex.quote(probe)}; kill $SERVER; wait $SERVER || true"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_page_commands_run(page, sandbox):
    run_page(page, sandbox)


@pytest.mark.slow
def test_bench_commands_match_their_scripts():
    """`python bench/...` lines need the real data and minutes, so they do not run here; instead every
    option they pass must be one their script's --help lists (a renamed or removed flag fails)."""
    helps: dict[str, str] = {}
    stale = []
    for page in PAGES:
        for lang, code in blocks(page):
            if lang == "python":
                continue
            for line in _commands(code):
                words = ENV_PREFIX.sub("", line).split()
                if words[:1] != ["python"] or len(words) < 2 or not words[1].startswith("bench/"):
                    continue
                script = words[1]
                assert (ROOT / script).is_file(), f"{page.name}: {script} does not exist"
                if script not in helps:
                    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True,
                                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
                    assert proc.returncode == 0, f"{script} --help failed:\n{proc.stderr[-2000:]}"
                    helps[script] = proc.stdout
                stale += [(page.name, script, w) for w in words[2:]
                          if w.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(w.split('=')[0])}(?![\w-])",
                                                                   helps[script])]
    assert helps, "no bench commands found in the docs"
    assert not stale, f"documented bench options that the scripts do not take: {stale}"


# Words that narrate how the project was built or run, not what it does or measured.
HISTORY = re.compile(r"|".join([
    r"\bsessions?\b(?! *(?:=|\(|\.))",  # "session 5"; not code such as `InferenceSession(` or `session.run`
    r"\bissues? *#?\d+", r"\bthe issue(?:'s)?\b", r"\b(?:this|that|the fine-tuning) issue\b",
    r"\bround \d+ of\b", r"\brounds? of work\b",
    r"\bgoals?\b", r"\bno GPU was\b", r"\bGPU was (?:not )?(?:available|lent)\b", r"\blent to this task\b",
    r"\bother (?:jobs|people|engineers|agents|users)\b", r"\bnice 19\b", r"\bhelpers?\b(?= (?:session|agent))",
]), re.I)
# An absolute path on the machine the docs were written on (`../shared/...` and URLs are fine).
MACHINE_PATH = re.compile(r"(?<![\w.~/:-])/(?:work|tmp|home|root|shared)(?:/|\b)")


def doc_texts() -> list[tuple[str, str]]:
    """(name, text) of every page and every bench script (what they print is in their source)."""
    pages = [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in PAGES]
    bench = [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in sorted((ROOT / "bench").iterdir())
             if p.is_file() and p.suffix in (".py", ".sh")]
    return pages + bench


def lint(name: str, text: str) -> list[str]:
    """`name:line: word` for every history word or machine path in `text`."""
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        for pattern in (HISTORY, MACHINE_PATH):
            found += [f"{name}:{i}: {m.group(0)!r} in {line.strip()[:100]!r}" for m in pattern.finditer(line)]
    return found


def test_lint_catches_history_and_machine_paths():
    bad = ["the issue's goals hold", "session 6 made it faster", "(goal: within +-1.5)", "see issue 4",
           "round 3 of work", "No GPU was lent to this task", "shared with other jobs (load 4)",
           "--out /tmp/peft", "from /work/shared/corpus", "/shared/runs/tok32k", "cd /root/x", "/home/me"]
    good = ["on `../shared/corpus`", "XLMR_DATA=../shared/data", "interleaved in rounds", "--rounds 8",
            "`InferenceSession(path)`", "https://github.com/pytorch/pytorch/issues/1234", "runs/tmp/x",
            "load average 4-7 on 2 cores", "measured 2026-11-29"]
    assert all(lint("x", line) for line in bad), [line for line in bad if not lint("x", line)]
    assert not any(lint("x", line) for line in good), [lint("x", line) for line in good if lint("x", line)]


def test_docs_and_bench_speak_of_results_not_history():
    found = [hit for name, text in doc_texts() for hit in lint(name, text)]
    assert not found, f"{len(found)} history words or machine paths:\n" + "\n".join(found)
