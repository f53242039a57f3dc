"""Command-line values converted without pydantic where they are plainly right already.

typer converts every parameter's value, defaults and absent options included, through a
pydantic `TypeAdapter` it builds for that parameter the first time: the first command line
parsed imports pydantic (~0.1 s) and builds a schema per parameter, before any command starts,
also for commands that never use pydantic (`airlock version`). `install` gives each parameter
of the built command tree a converter that returns, unchanged, what pydantic would return
unchanged: a `str` that is valid Unicode, an `int`, `float` or `bool` of its exact type, a path
(as `Path`, checked by typer's own path check), a list of those. Anything else (a value to
convert, an Enum, a parser, a path check that fails) goes to typer's own converter, built on
first use: its result and its error messages are typer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

if TYPE_CHECKING:
    from typer._click import Context
    from typer.core import _TyperParameter
    from typer.models import ParameterInfo

__all__ = ["install"]

_NOT_PLAIN = object()  # the value needs typer's own converter
_PLAIN_TYPES = (str, int, float, bool, Path)


def install(command: Any) -> Any:
    """Every parameter of `command` and its subcommands whose type is a plain one (str, int,
    float, bool, Path or a list of one) converts plain values without pydantic; returns
    `command`."""
    try:
        from typer._coercion import RuntimeParam, build_runtime_param
    except ImportError:  # another typer: its own conversion stays
        return command
    plain_param = _plain_param_class(RuntimeParam, build_runtime_param)
    _walk(command, plain_param)
    return command


def _walk(command: Any, plain_param: type[Any]) -> None:
    for param in getattr(command, "params", []):
        _install_one(param, plain_param)
    _plain_help_option(command, plain_param)
    for sub in getattr(command, "commands", {}).values():
        _walk(sub, plain_param)


def _install_one(param: Any, plain_param: type[Any]) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(param, "_runtime_param", 0) is not None:
        return
    if _supported(descriptor.annotation, descriptor.parameter_info):
        param._runtime_param = plain_param(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            descriptor=descriptor,
        )


def _plain_help_option(command: Any, plain_param: type[Any]) -> None:
    """--help is made per context, not kept in `params`: given its converter as it is made."""
    make = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            _install_one(option, plain_param)
        return option

    command.get_help_option = get_help_option


def _supported(annotation: Any, info: ParameterInfo) -> bool:
    if info.parser is not None or getattr(info, "click_type", None) is not None:
        return False
    if info.min is not None or info.max is not None or info.path_type is not None:
        return False
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation) or (None,)
    return annotation in _PLAIN_TYPES


def _plain_param_class(base: type[Any], build: Any) -> type[Any]:
    """A typer RuntimeParam (made here: typer's module is imported only when it is used)."""

    @dataclass(frozen=True)
    class PlainParam(base):  # type: ignore[misc]
        descriptor: Any = None
        _full: list[Any] = field(default_factory=list, compare=False, repr=False)

        def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
            done = _plain(self.annotation, value, self.parameter_info, param, ctx)
            if done is not _NOT_PLAIN:
                return done
            if not self._full:
                self._full.append(build(self.descriptor))
            return self._full[0]._coerce_value(value, param=param, ctx=ctx)

    return PlainParam


def _plain(
    annotation: Any, value: Any, info: ParameterInfo, param: _TyperParameter, ctx: Context
) -> Any:
    if get_origin(annotation) is list:
        if not isinstance(value, list | tuple):
            return _NOT_PLAIN
        (item_type,) = get_args(annotation)
        items = [_plain_one(item_type, item, info, param, ctx) for item in value]
        return _NOT_PLAIN if any(i is _NOT_PLAIN for i in items) else items
    return _plain_one(annotation, value, info, param, ctx)


def _plain_one(
    annotation: Any, value: Any, info: ParameterInfo, param: _TyperParameter, ctx: Context
) -> Any:
    if annotation is str:
        return value if type(value) is str and _unicode(value) else _NOT_PLAIN
    if annotation is int or annotation is float or annotation is bool:
        return value if type(value) is annotation else _NOT_PLAIN
    if annotation is Path:
        return _plain_path(value, info, param, ctx)
    return _NOT_PLAIN


def _plain_path(value: Any, info: ParameterInfo, param: _TyperParameter, ctx: Context) -> Any:
    """A path as pydantic makes it (`Path(text)`), then typer's own check (exists, readable,
    ...); a check that fails is left to typer's converter, whose message names the value as
    given."""
    from typer._click.exceptions import BadParameter
    from typer._param_types import coerce_cli_path

    if type(value) is str and _unicode(value):
        value = Path(value)
    elif not isinstance(value, Path):
        return _NOT_PLAIN
    try:
        return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
    except (BadParameter, ValueError):  # a NUL byte: typer's converter makes it a usage error
        return _NOT_PLAIN


def _unicode(text: str) -> bool:
    """pydantic refuses a str it cannot encode (a lone surrogate from undecodable argv bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
