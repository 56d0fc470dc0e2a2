"""Read the YAML config once, at the edge: every problem named with file, line and field."""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from insan_edge.config.family import cross_check
from insan_edge.config.presets import deep_merge, detect_preset, preset_values
from insan_edge.config.root import Config
from insan_edge.errors import ConfigError, ConfigProblem

Loc = tuple[str | int, ...]
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from and which preset filled the gaps."""

    config: Config
    path: Path
    preset: str
    preset_reason: str
    digest: str


class _Located:
    """Builds plain Python data from a YAML node tree, remembering each value's line."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {}
        self.problems: list[ConfigProblem] = []
        self._scalar = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, (*loc, "<key>"))
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    self._problem(key_node, loc, "a key must be a plain word")
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    first = self.lines.get((*loc, key))
                    self._problem(
                        key_node,
                        (*loc, key),
                        f"'{key}' appears twice in the same section (first on line {first}); keep one",
                    )
                    continue
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*loc, key))
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        if _yaml11_only(node):
            return node.value  # the text the parent typed; pydantic converts it where needed
        return self._scalar.construct_object(node, deep=True)

    def _problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(
            ConfigProblem(self.file, node.start_mark.line + 1, _dotted(loc), message)
        )


_BOOL_TAG = "tag:yaml.org,2002:bool"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_OCTAL_1_1 = re.compile(r"^[-+]?0[0-7_]+$")


def _yaml11_only(node: yaml.ScalarNode) -> bool:
    """A plain scalar only YAML 1.1 reads as non-text: yes/no/on/off, 19:30 (= 1170), 0700 (= 448).

    Kept as text, a name ``no`` stays "no", ``start: 19:30`` stays "19:30" and ``0700`` is not
    silently 448; bool and int fields still accept "no", "on", "010" (pydantic parses them).
    """
    if node.style is not None:  # quoted: already text
        return False
    if node.tag == _BOOL_TAG:
        return node.value.lower() not in ("true", "false")
    if node.tag in _NUMBER_TAGS:
        return ":" in node.value or bool(_OCTAL_1_1.match(node.value))
    return False


def _dotted(loc: Loc) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part + 1}]")  # parents count from 1
        elif part != "<key>":
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def _line_for(lines: dict[Loc, int], loc: Loc) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Names of the settings valid at ``loc`` (for 'did you mean')."""
    annotation: Any = model
    for part in loc:
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif origin in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
        while typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _friendly(error: dict[str, Any]) -> str:
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    given = error.get("input")
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        known = _fields_at(Config, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = (
            f"; did you mean '{close[0]}'?"
            if close
            else (f"; known settings here: {', '.join(known)}" if known else "")
        )
        return f"'{loc[-1]}' is not a setting insan-edge knows{hint}"
    message = str(error["msg"])
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    message = _PLAIN.get(kind, message.replace("Input should be", "should be"))
    ctx = error.get("ctx") or {}
    if kind in ("too_short", "too_long"):
        n = int(ctx.get("min_length" if kind == "too_short" else "max_length", 0))
        word = "at least" if kind == "too_short" else "at most"
        entries = "entry" if n == 1 else "entries"
        return f"needs {word} {n} {entries} (found {ctx.get('actual_length')})"
    if kind in _PLAIN or kind in ("literal_error", "enum"):
        if given is None:
            return "is empty: write a value after the ':' (or indented on the lines below)"
        shown = repr(given)
        if isinstance(given, (dict, list)):
            shown = "a section" if isinstance(given, dict) else "a list"
        return f"{message} (found: {shown})"
    return message


# pydantic's wording names Python types; a parent edits YAML.
_PLAIN: dict[str, str] = {
    "int_parsing": "should be a whole number",
    "int_type": "should be a whole number",
    "float_parsing": "should be a number",
    "float_type": "should be a number",
    "bool_parsing": "should be true or false",
    "bool_type": "should be true or false",
    "string_type": "should be text",
    "dict_type": "should be a section of indented 'name: value' lines",
    "model_type": "should be a section of indented 'name: value' lines",
    "list_type": "should be a list, for example [a, b]",
}


def _problems(error: ValidationError, file: str, lines: dict[Loc, int]) -> list[ConfigProblem]:
    out = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        out.append(ConfigProblem(file, _line_for(lines, loc), _dotted(loc), _friendly(dict(item))))
    return out


def parse_config(
    text: str, file: str = "<config>", device_tree: Path | None = None
) -> LoadedConfig:
    """Validate config text; raise ConfigError listing every problem found."""
    import hashlib

    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [
                ConfigProblem(
                    file,
                    None,
                    "",
                    f"the file is larger than {MAX_CONFIG_BYTES // 1024} KB; is it the right file?",
                )
            ]
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        hint = "check the indentation and that every ':' has a space after it"
        unclosed = ("while parsing a flow", "while scanning a quoted")
        if exc.context_mark and (exc.context or "").startswith(unclosed):
            # an unclosed [ { or quote: the problem is found later (often past the end of the
            # file); the line that opened it is the one to fix
            mark = exc.context_mark
            hint = "check that the '[', '{' or quote opened on this line is closed"
        line = mark.line + 1 if mark else None
        what = exc.problem or "not valid YAML"
        message = f"this is not valid YAML ({what}); {hint}"
        raise ConfigError([ConfigProblem(file, line, "", message)]) from None
    if node is None:
        raise ConfigError(
            [
                ConfigProblem(
                    file, 1, "", "the file is empty; start from configs/family.example.yaml"
                )
            ]
        )
    located = _Located(file)
    data = located.build(node)
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    file,
                    1,
                    "",
                    "the file must be a set of 'key: value' settings with 'system:' and 'families:' sections",
                )
            ]
        )
    problems = list(located.problems)
    system = data.get("system") if isinstance(data.get("system"), dict) else {}
    assert isinstance(system, dict)
    preset = system.get("preset")
    if isinstance(preset, str) and preset in {"jetson", "development", "child-safe", "production"}:
        reason = "set in the config"
    elif preset is None:
        preset, reason = detect_preset(device_tree) if device_tree else detect_preset()
    else:
        preset, reason = "", ""  # invalid: validation below reports it
    if preset:
        data = {**data, "system": deep_merge(preset_values(preset), system)}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, file, located.lines)
        config = None
    if config is not None:
        for loc, message in cross_check(dict(config.families)):
            problems.append(
                ConfigProblem(file, _line_for(located.lines, loc), _dotted(loc), message)
            )
    if problems or config is None:
        problems.sort(key=lambda p: (p.line or 0, p.field))
        raise ConfigError(problems)
    return LoadedConfig(
        config, Path(file), preset, reason, hashlib.sha256(text.encode()).hexdigest()[:12]
    )


def load_config(path: Path, device_tree: Path | None = None) -> LoadedConfig:
    """Read and validate ``path``; unreadable files are ConfigErrors too."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [
                ConfigProblem(
                    str(path), None, "", "no such file; start from configs/family.example.yaml"
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, "", f"cannot read the file: {exc.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigProblem(str(path), line, "", "the file is not UTF-8 text; save it as UTF-8")]
        ) from None
    return parse_config(text, str(path), device_tree)
