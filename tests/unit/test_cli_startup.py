"""What the console script leaves out at start: only the named command's modules (the same
commands and help as the whole tree), and typer's pydantic conversion for plain values (the
same values and errors as typer's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_cli_help import _help
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param

from airlock.cli.main import COMMAND_MODULES, OWN_COMMANDS, app
from airlock.cli.plainvalues import install


def _modules(info: Any) -> set[str]:
    """The modules whose functions a root group or command runs."""
    sub = getattr(info, "typer_instance", None)
    if sub is None:
        return {info.callback.__module__}
    return {m for c in sub.registered_commands for m in _modules(c)} | {
        m for g in sub.registered_groups for m in _modules(g)
    }


def test_own_commands_name_every_module_that_adds_to_them() -> None:
    roots = [*app.registered_groups, *app.registered_commands]
    ours = {f"airlock.cli.{m}" for m in COMMAND_MODULES}
    own = {i.name: _modules(i) for i in roots if _modules(i) <= ours}  # not the plugins'

    assert set(own) == set(OWN_COMMANDS)
    for name, modules in own.items():
        assert modules == {f"airlock.cli.{m}" for m in OWN_COMMANDS[name]}, name


@pytest.mark.parametrize("name", sorted(OWN_COMMANDS))
def test_a_group_built_alone_helps_as_in_the_whole_tree(name: str) -> None:
    # `-v` first: the console script cannot tell the command, and builds every one
    assert _help(name) == _help("-v", name)


def _command() -> Any:
    sub = typer.Typer()

    @sub.command()
    def every(
        text: str = typer.Option("x", "--text"),
        number: int = typer.Option(0, "--number"),
        ratio: float = typer.Option(0.5, "--ratio"),
        flag: bool = typer.Option(False, "--flag"),
        path: Path = typer.Option(Path("p"), "--path"),
        must: Path = typer.Option(Path("p"), "--must", exists=True),
        texts: list[str] = typer.Option([], "--texts"),
        paths: list[Path] = typer.Option([], "--paths"),
    ) -> None:
        del text, number, ratio, flag, path, must, texts, paths

    return install(typer.main.get_command(sub))


COMMAND = _command()
PARAMS = {p.name: p for p in COMMAND.params}
VALUES = st.one_of(
    st.none(),
    st.text(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.builds(Path, st.text(min_size=1).filter(lambda s: "\0" not in s)),
    st.lists(st.text(), max_size=3),
    st.tuples(st.text(), st.text()),
)


def _convert(runtime: Any, param: Any, value: Any) -> tuple[str, Any]:
    ctx = Context(COMMAND)
    try:
        return "ok", runtime.coerce(value, param=param, ctx=ctx)
    except BadParameter as exc:
        return "error", exc.format_message()
    except ValueError as exc:  # os.stat of a path with a NUL byte, typer's way or ours
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(PARAMS)), value=VALUES)
@example(name="paths", value=("", "\0"))  # os.stat's ValueError: typer's usage error
@example(name="path", value="a\0")
@example(name="text", value="\udcff")  # undecodable argv bytes: pydantic refuses them
@example(name="must", value="/")
def test_plain_values_convert_as_typer_converts_them(name: str, value: Any) -> None:
    param = PARAMS[name]
    ours = _convert(param._runtime_param, param, value)
    typers = _convert(build_runtime_param(param.type_descriptor), param, value)
    assert ours == typers
    assert type(ours[1]) is type(typers[1])
    if isinstance(ours[1], list):
        assert [type(v) for v in ours[1]] == [type(v) for v in typers[1]]


def test_what_is_not_plain_goes_to_typer() -> None:
    param = PARAMS["number"]
    assert _convert(param._runtime_param, param, "12") == ("ok", 12)
    kind, message = _convert(param._runtime_param, param, "twelve")
    assert kind == "error" and "valid integer" in message
    kind, message = _convert(PARAMS["must"]._runtime_param, PARAMS["must"], "/no/such/path")
    assert kind == "error" and "/no/such/path" in message
