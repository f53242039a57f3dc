"""`make docs-check`: the docs' airlock commands against the CLI as it is.

Every `airlock ...` command in README.md and docs/*.md (fenced or indented code blocks, except
blocks marked as `text`, `yaml`, `json` or `toml`; and inline code spans) and every example
under a command's --help is parsed by the real command tree: the subcommands exist, every flag
exists on that command, values convert, required arguments are there. Nothing runs. A synopsis
written with `|`, `[...]` or `...`, and an inline span that names a command in prose, are not
whole command lines: only their subcommands and flags are checked. An inline span that is a
flag (`--split SIZE`) must be an option of some airlock command. Exit 1 with
`file:line: problem` for each one found.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from airlock.cli.helpstyle import tidy
from airlock.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs")
SKIP_LANGUAGES = {"text", "yaml", "yml", "json", "toml", "python", "diff"}
GLOBAL = {"--json", "--debug", "--progress", "--help", "-v", "--verbose", "--version"}
_AIRLOCK = re.compile(r"(?:^|[\s;&|(`])((?:\S*/)?airlock(?:\s[^`#;&|)]*)?)")
_SYNOPSIS = re.compile(r"\s\|\s|\[|\.\.\.|…")
_INLINE = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class Found:
    where: str  # file:line
    text: str  # the command as written (from `airlock` on), or a flag
    whole: bool = True  # a whole command line (else: only its words and flags are checked)


def _blocks(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, whole) of every code line worth checking (continuation lines
    joined), and of inline spans (`whole` False) that start with airlock or a flag."""
    lines = text.splitlines()
    in_fence, language, prose_before = False, "", True
    pending, start = "", 0
    for n, line in enumerate(lines, 1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence:
            in_fence, language = not in_fence, fence.group(1).lower()
            continue
        code = in_fence and language not in SKIP_LANGUAGES
        indented = not in_fence and prose_before and line.startswith("    ") and line.strip()
        if not (code or indented):
            prose_before = not line.strip() or (prose_before and not line.startswith("    "))
            for m in _INLINE.finditer(line.replace("\\|", "|")):  # a table's escaped pipes
                if m.group(1).startswith(("airlock ", "--")):
                    yield n, m.group(1), False
            continue
        if not pending:
            start = n
        pending += line.strip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            yield start, pending.strip(), True
            pending = ""


def find_commands(path: Path) -> list[Found]:
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    out = []
    for n, line, whole in _blocks(path.read_text()):
        if line.startswith("--"):
            out.append(Found(f"{shown}:{n}", line, whole=False))
            continue
        for m in _AIRLOCK.finditer(line):
            text = m.group(1).strip()
            words = text.split()
            if len(words) > 1 and not words[1].startswith((".", ":")):
                out.append(Found(f"{shown}:{n}", text, whole))
    return out


def _long_flags(command: Any) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def _every_flag(command: Any) -> set[str]:
    subs = getattr(command, "commands", {})
    return _long_flags(command).union(*(_every_flag(c) for c in subs.values()))


def check_flag(text: str, root: Any) -> str | None:
    flag = text.split()[0].split("=", 1)[0]
    if flag in GLOBAL or flag in _every_flag(root):
        return None
    return f"no airlock command has the option {flag}"


def check(text: str, root: Any, *, whole: bool = True) -> str | None:
    """None when `text` (from the word airlock on) parses; else what is wrong."""
    if text.startswith("--"):
        return check_flag(text, root)
    text = re.sub(r"\s(2?>|<)\s*\S+", " ", text)  # redirections
    try:
        words = shlex.split(text)[1:]
    except ValueError as exc:
        return f"cannot split {text!r}: {exc}"
    command, ctx, path = root, None, ["airlock"]
    words = [w for w in words if w.split("=", 1)[0] not in GLOBAL or w.startswith("--progress")]
    words = [w for i, w in enumerate(words) if not (i and words[i - 1] == "--progress")]
    words = [w for w in words if not w.startswith("--progress")]
    while getattr(command, "commands", None) and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name.isupper():  # a placeholder (`airlock COMMAND --help`)
            return None
        sub = command.commands.get(name)
        if sub is None:
            return f"`{' '.join(path)}` has no subcommand {name!r}"
        command, path = sub, [*path, name]
    if getattr(command, "commands", None):
        return f"`{' '.join(path)}` needs a subcommand"
    if _SYNOPSIS.search(text) or not whole:
        flags = set(re.findall(r"(?:^|[\s\[|])(--?[a-zA-Z][\w-]*)", text))
        unknown = sorted(flags - _long_flags(command) - GLOBAL)
        return f"`{' '.join(path)}` has no option {', '.join(unknown)}" if unknown else None
    try:
        ctx = command.make_context(" ".join(path), list(words), resilient_parsing=False)
        ctx.close()
    except Exception as exc:  # click's usage errors, whatever click calls them
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"`{' '.join(path)}`: {message}"
    return None


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [f for f in files if f.exists()]


def help_examples(command: Any, path: str = "airlock") -> Iterator[Found]:
    for line in (command.epilog or "").splitlines():
        if line.strip().startswith("airlock "):
            for m in _AIRLOCK.finditer(line.strip()):
                yield Found(f"{path} --help", m.group(1).strip())
    for name, sub in getattr(command, "commands", {}).items():
        yield from help_examples(sub, f"{path} {name}")


def main() -> int:
    root = tidy(typer.main.get_command(app))
    found = [c for f in doc_files() for c in find_commands(f)] + list(help_examples(root))
    problems = [
        f"{c.where}: {p}" for c in found if (p := check(c.text, root, whole=c.whole)) is not None
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"docs-check: {len(found)} commands, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
