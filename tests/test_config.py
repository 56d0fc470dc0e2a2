"""The config file parents edit: the example, presets, broken files and YAML 1.1 gotchas.

Broken fixtures live in tests/data/broken/; each starts with a comment saying what is wrong, so
the line numbers asserted here can be checked by opening the file.
"""

from __future__ import annotations

import re
import types
import typing
from datetime import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from insan_edge.config import (
    CATEGORIES,
    RATINGS,
    Config,
    Family,
    LoadedConfig,
    Member,
    Role,
    SafetyLevel,
    TimeRestriction,
    load_config,
    parse_config,
)
from insan_edge.config.family import DAY_NAMES
from insan_edge.config.presets import detect_preset, preset_values
from insan_edge.config.system import PRESETS, SystemSettings
from insan_edge.errors import ConfigError, ConfigProblem

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "family.example.yaml"
DATA = Path(__file__).resolve().parent / "data"
BROKEN = DATA / "broken"
JETSON_MODEL = DATA / "jetson" / "device-tree-model"
RPI_MODEL = DATA / "raspberry-pi" / "device-tree-model"
GIB = 2**30

# One small family, appended to a `system:` section by the tests below.
FAMILY = """\
families:
  smith:
    members:
      emma:
        name: Emma
        age: 8
        role: child
"""


@pytest.fixture
def no_device_tree(tmp_path: Path) -> Path:
    """A device-tree model path that does not exist: what a PC looks like."""
    return tmp_path / "no-device-tree" / "model"


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.field, p.message) for p in exc.value.problems]


def parse(text: str, device_tree: Path) -> LoadedConfig:
    return parse_config(text, "test.yaml", device_tree=device_tree)


# --- the commented example ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> LoadedConfig:
    return load_config(EXAMPLE)


def test_example_loads_with_its_preset(example: LoadedConfig) -> None:
    assert example.preset == "development"
    assert example.preset_reason == "set in the config"
    assert example.path == EXAMPLE
    assert re.fullmatch(r"[0-9a-f]{12}", example.digest)
    assert list(example.config.families) == ["smith"]


def test_example_values_match_its_comments(example: LoadedConfig) -> None:
    system = example.config.system
    assert system.model.path is None  # "empty = the embedded Gemma 3 270M"
    assert system.model.context_length == 2048
    assert system.model.temperature == 0.7
    assert system.model.repeat_penalty == 1.15
    assert system.recommendations.max_count == 10
    assert system.recommendations.cache_seconds == 300  # "within 5 minutes", not the preset's 30
    assert system.training.enabled is True
    assert system.training.min_interactions_for_training == 50
    assert system.training.retraining_threshold == 20
    assert system.training.max_training_memory_mb == 1536  # not the development preset's 4096
    assert system.training.safety_threshold == 0.95  # "must pass 95% of the safety checks"
    assert system.training.fallback_to_general_model is True
    assert system.training.learning_rate == pytest.approx(2e-4)
    assert system.log_level == "debug"  # not in the file: from the development preset
    assert system.paths.state_dir == Path("/var/lib/insan-edge")
    assert system.paths.socket == Path("/run/insan-edge/api.sock")

    smith = example.config.families["smith"]
    assert smith.display_name == "The Smith family"
    assert list(smith.members) == ["dad", "mom", "emma", "leo"]
    emma, leo = smith.members["emma"], smith.members["leo"]
    assert (emma.name, emma.age, emma.role) == ("Emma", 8, Role.child)
    assert emma.avoided_topics == ["spiders"]
    assert emma.effective_safety_level is SafetyLevel.strict
    assert leo.effective_safety_level is SafetyLevel.moderate
    assert smith.members["dad"].role is Role.parent
    assert smith.members["dad"].interests == ["cooking", "cycling", "board games"]
    assert smith.preferences.communication_style == "playful"
    assert smith.safety.max_content_rating == "PG-13"
    assert smith.safety.blocked_topics == ["violence", "gambling", "horror"]

    (rule,) = smith.safety.time_restrictions
    assert rule.name == "no screens on school nights"
    assert rule.day_set() == {"sun", "mon", "tue", "wed", "thu"}
    assert (rule.start, rule.end) == (time(19, 30), time(7, 0))  # crosses midnight
    assert rule.members == ["emma", "leo"]
    # "screen = video_game, show, movie, video"
    assert rule.category_set() == {"video_game", "show", "movie", "video"}


def _comment_choices(text: str, first: str) -> list[str]:
    """The `a | b | c` choices of the comment that lists ``first`` first."""
    for line in text.splitlines():
        comment = line.partition("#")[2]
        found = re.search(rf"(?<![\w-]){re.escape(first)}(?:\s*\|\s*[\w-]+)+", comment)
        if found:
            return [choice.strip() for choice in found.group(0).split("|")]
    raise AssertionError(f"no comment lists '{first} | ...'")


def test_example_comments_list_exactly_the_allowed_values() -> None:
    text = EXAMPLE.read_text("utf-8")
    assert _comment_choices(text, "G") == list(RATINGS)
    assert _comment_choices(text, "strict") == [level.value for level in SafetyLevel]
    assert _comment_choices(text, "friendly") == ["friendly", "playful", "concise", "detailed"]
    assert _comment_choices(text, "jetson") == list(PRESETS)
    assert "screen = video_game, show, movie, video" in text


# --- presets -----------------------------------------------------------------------------------


Leaf = tuple[tuple[str, ...], Any]


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[Leaf]:
    out: list[Leaf] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def _get(model: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = model
    for part in path:
        value = getattr(value, part)
    return value


def test_preset_files_are_the_known_presets() -> None:
    shipped = {p.stem for p in (ROOT / "insan_edge" / "config" / "presets").glob("*.yaml")}
    assert shipped == set(PRESETS) == {"jetson", "development", "child-safe", "production"}
    linked = {p.stem for p in (ROOT / "configs" / "presets").glob("*.yaml")}
    assert linked == shipped  # configs/presets is a symlink to the package's presets


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_applies_and_validates(name: str, no_device_tree: Path) -> None:
    values = preset_values(name)
    assert values, f"preset {name} is empty"
    SystemSettings.model_validate(values)  # every key is a real setting

    loaded = parse(f"system:\n  preset: {name}\n" + FAMILY, no_device_tree)
    assert loaded.preset == name
    assert loaded.preset_reason == "set in the config"
    for path, value in _leaves(values):
        assert _get(loaded.config.system, path) == value, ".".join(path)


@pytest.mark.parametrize(
    ("name", "setting", "preset_value", "mine"),
    [
        ("jetson", ("model", "n_gpu_layers"), "auto", 0),
        ("development", ("training", "retraining_threshold"), 5, 7),
        ("development", ("log_level",), "debug", "warning"),
        ("child-safe", ("safety", "rating_cap"), "PG", "G"),
        ("child-safe", ("training", "safety_threshold"), 0.99, 0.97),
        ("production", ("training", "max_training_memory_mb"), 3072, 2048),
    ],
)
def test_explicit_value_wins_over_preset(
    name: str, setting: tuple[str, ...], preset_value: Any, mine: Any, no_device_tree: Path
) -> None:
    assert _get_dict(preset_values(name), setting) == preset_value
    yaml_lines = [f"system:\n  preset: {name}\n"]
    for depth, key in enumerate(setting):
        leaf = depth == len(setting) - 1
        yaml_lines.append("  " * (depth + 1) + f"{key}:" + (f" {mine}\n" if leaf else "\n"))
    loaded = parse("".join(yaml_lines) + FAMILY, no_device_tree)
    assert _get(loaded.config.system, setting) == mine
    # the preset's other values still apply
    for path, value in _leaves(preset_values(name)):
        if path != setting:
            assert _get(loaded.config.system, path) == value, ".".join(path)


def _get_dict(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for part in path:
        value = value[part]
    return value


# --- broken configs ----------------------------------------------------------------------------

TR = "families.smith.safety.time_restrictions[1]"
EMMA = "families.smith.members.emma"

BROKEN_CASES = [
    # (fixture, line, field, phrase in the message)
    ("wrong_type_age", 9, f"{EMMA}.age", "should be a whole number (found: 'eight')"),
    ("unknown_setting_typo", 4, "system.trainig", "did you mean 'training'?"),
    ("unknown_member_in_time_restriction", 16, f"{TR}.members[2]", "'sam' is not a member"),
    ("bad_time_25", 13, f"{TR}.start", "'25:00' is not a time of day"),
    ("bad_time_7pm", 13, f"{TR}.start", "'7pm' is not a time of day: write it as HH:MM"),
    ("time_without_colon", 13, f"{TR}.start", "'0700' is not a time of day"),
    ("unknown_rating", 12, "families.smith.safety.max_content_rating",
     "should be 'G', 'PG', 'PG-13' or 'R' (found: 'NC-17')"),
    ("duplicate_member", 11, EMMA, "'emma' appears twice in the same section (first on line 7)"),
    ("duplicate_family", 11, "families.smith",
     "'smith' appears twice in the same section (first on line 5)"),
    ("yaml_bad_indentation", 9, "", "not valid YAML"),
    ("yaml_unclosed_bracket", 11, "", "'[', '{' or quote opened on this line is closed"),
    ("yaml_unclosed_quote", 15, "", "'[', '{' or quote opened on this line is closed"),
    ("missing_age", 7, f"{EMMA}.age", "is required but missing"),
    ("unknown_role", 10, f"{EMMA}.role", "'grandparent' or 'other' (found: 'teenager')"),
    ("negative_age", 9, f"{EMMA}.age", "should be greater than or equal to 0"),
    ("empty_families", 4, "families", "needs at least 1 entry"),
    ("families_without_value", 4, "families", "is empty"),
    ("unknown_day", 13, f"{TR}.days", "'funday' is not a day"),
    ("day_range", 13, f"{TR}.days", "'mon-fri' is not a day"),
    ("unknown_category", 15, f"{TR}.restricted", "'tablet' is not a category"),
    ("bad_family_id", 5, "families.The Smiths", "'The Smiths' cannot be used as a name here"),
    ("bad_member_id", 7, "families.smith.members.Emma", "use lowercase letters"),
    ("unknown_preset", 3, "system.preset", "'child-safe' or 'production' (found: 'jetsn')"),
    ("top_level_list", 1, "", "must be a set of 'key: value' settings"),
    ("empty", 1, "", "the file is empty"),
    ("only_comments", 1, "", "the file is empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fixture", "line", "field", "phrase"), BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES]
)
def test_broken_config_names_line_field_and_fix(
    fixture: str, line: int, field: str, phrase: str, no_device_tree: Path
) -> None:
    path = BROKEN / f"{fixture}.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path, device_tree=no_device_tree)
    (problem,) = exc.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), line, field)
    assert phrase in problem.message
    # the file's first line says what is broken; make sure the fixture still matches its line
    text = path.read_text("utf-8")
    assert problem.line is not None and (problem.line <= text.count("\n") or not text)
    # the printed form is "file:line: field: message"
    shown = f"{path}:{line}: {field}: " if field else f"{path}:{line}: "
    assert str(problem).startswith(shown)
    assert str(problem) in str(exc.value)


def test_several_problems_are_all_reported_in_line_order(no_device_tree: Path) -> None:
    path = BROKEN / "several_problems.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path, device_tree=no_device_tree)
    got = problems_of(exc)
    assert [(line, field) for line, field, _ in got] == [
        (4, "system.trainig"),
        (11, "families.smith.members.emma.age"),
        (16, "families.smith.members.leo.role"),
        (17, "families.smith.members.emma"),  # the duplicate; found before validation
    ]
    assert "did you mean 'training'" in got[0][2]
    assert "'eight'" in got[1][2]
    assert "'teenager'" in got[2][2]
    assert "appears twice" in got[3][2]
    assert str(exc.value).startswith("4 problems in the config:\n")


def test_not_utf8_is_reported_with_its_line(tmp_path: Path, no_device_tree: Path) -> None:
    path = tmp_path / "latin1.yaml"
    text = f"system:\n  preset: development\n{FAMILY}"
    path.write_bytes(text.encode().replace(b"Emma", b"Ren\xe9e"))  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as exc:
        load_config(path, device_tree=no_device_tree)
    assert problems_of(exc) == [(7, "", "the file is not UTF-8 text; save it as UTF-8")]
    assert exc.value.problems[0].file == str(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (problem,) = exc.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), None, "")
    assert "no such file" in problem.message
    assert str(problem).startswith(f"{path}: no such file")


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("age: 8", "age: [8]", 8, f"{EMMA}.age", "should be a whole number (found: a list)"),
        ("age: 8", "age: {years: 8}", 8, f"{EMMA}.age", "should be a whole number (found: a section)"),
        ("age: 8", "age:", 8, f"{EMMA}.age", "is empty: write a value after the ':'"),
        (FAMILY.split("members:\n")[1], "      emma: Emma\n", 6, EMMA,
         "should be a section of indented 'name: value' lines (found: 'Emma')"),
    ],
)  # fmt: skip
def test_wrong_shapes_are_described_in_yaml_words(
    old: str, new: str, line: int, field: str, message: str, no_device_tree: Path
) -> None:
    text = f"system:\n  preset: development\n{FAMILY}"
    assert old in text
    text = text.replace(old, new)
    with pytest.raises(ConfigError) as exc:
        parse(text, no_device_tree)
    ((got_line, got_field, got_message),) = problems_of(exc)
    assert (got_line, got_field) == (line, field)
    assert got_message.startswith(message)


def test_tab_indentation_is_a_yaml_error(no_device_tree: Path) -> None:
    text = f"system:\n  preset: development\n{FAMILY}".replace("        age: 8", "\tage: 8")
    with pytest.raises(ConfigError) as exc:
        parse(text, no_device_tree)
    ((line, field, message),) = problems_of(exc)
    assert (line, field) == (8, "")
    assert "not valid YAML" in message and "indentation" in message


def test_utf8_bom_and_non_ascii_names_load(tmp_path: Path, no_device_tree: Path) -> None:
    path = tmp_path / "bom.yaml"
    text = f"system:\n  preset: development\n{FAMILY}".replace("Emma", "Zoë")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # what Windows Notepad used to write
    loaded = load_config(path, device_tree=no_device_tree)
    assert loaded.config.families["smith"].members["emma"].name == "Zoë"


def test_cross_check_is_not_run_on_an_invalid_config() -> None:
    """Documents a limit: an unknown time-restriction member is reported once the rest is valid."""
    text = (BROKEN / "unknown_member_in_time_restriction.yaml").read_text("utf-8")
    with pytest.raises(ConfigError) as exc:
        parse_config(text.replace("age: 8", "age: -1"), device_tree=Path("/nonexistent"))
    assert [p.field for p in exc.value.problems] == ["families.smith.members.emma.age"]


# --- YAML 1.1 gotchas --------------------------------------------------------------------------


def _rule(start: str, end: str) -> str:
    return (
        "    safety:\n      time_restrictions:\n"
        f"        - start: {start}\n          end: {end}\n          restricted: [screen]\n"
    )


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("19:30", "07:00", (time(19, 30), time(7, 0))),  # 19:30 is 1170 to YAML 1.1
        ("7:05", "'21:45'", (time(7, 5), time(21, 45))),  # 7:05 is 425
        ("'19:30'", '"07:00"', (time(19, 30), time(7, 0))),
        ("00:00", "23:59", (time(0, 0), time(23, 59))),
    ],
)
def test_unquoted_times_mean_what_they_say(
    start: str, end: str, expected: tuple[time, time], no_device_tree: Path
) -> None:
    loaded = parse(f"system:\n  preset: development\n{FAMILY}{_rule(start, end)}", no_device_tree)
    (rule,) = loaded.config.families["smith"].safety.time_restrictions
    assert (rule.start, rule.end) == expected


@pytest.mark.parametrize("start", ["1200", "1930", "0700", "19:30:00", "24:00", "12:60", "7"])
def test_numbers_are_never_guessed_as_times(start: str, no_device_tree: Path) -> None:
    """1200 once became 20:00 (minutes) and 0700 07:28 (octal 448): both must be errors."""
    with pytest.raises(ConfigError) as exc:
        parse(f"system:\n  preset: development\n{FAMILY}{_rule(start, '07:00')}", no_device_tree)
    ((line, field, message),) = problems_of(exc)
    assert (line, field) == (12, f"{TR}.start")
    assert message.startswith(f"'{start}' is not a time of day")


@pytest.mark.parametrize("name", ["no", "No", "NO", "yes", "off", "on", "Norway", "y", "n"])
def test_yaml11_boolean_words_are_names(name: str, no_device_tree: Path) -> None:
    """`name: no` is the Norway problem: a Member.name is text, so it stays the text typed."""
    text = f"system:\n  preset: development\n{FAMILY}".replace("name: Emma", f"name: {name}")
    assert parse(text, no_device_tree).config.families["smith"].members["emma"].name == name


def test_yaml11_boolean_words_as_ids_and_lists(no_device_tree: Path) -> None:
    text = (
        "system:\n  preset: development\nfamilies:\n  no:\n    members:\n      on:\n"
        "        name: On\n        age: 40\n        role: parent\n"
        "        interests: [yes, no, 'true']\n"
    )
    family = parse(text, no_device_tree).config.families["no"]
    member = family.members["on"]
    assert (member.name, member.interests) == ("On", ["yes", "no", "true"])


@pytest.mark.parametrize(
    ("word", "expected"),
    [("no", False), ("Off", False), ("yes", True), ("ON", True), ("false", False)],
)
def test_yaml11_boolean_words_still_switch_settings(
    word: str, expected: bool, no_device_tree: Path
) -> None:
    text = (
        f"system:\n  preset: development\n  training:\n    enabled: {word}\n"
        f"  safety:\n    children_strict: {word}\n{FAMILY}"
    )
    system = parse(text, no_device_tree).config.system
    assert system.training.enabled is expected
    assert system.safety.children_strict is expected


def test_yaml12_booleans_and_numbers_are_not_names(no_device_tree: Path) -> None:
    """`true` and 42 are not text in any YAML version: a clear error, not a silent 'True'."""
    text = f"system:\n  preset: development\n{FAMILY}".replace("name: Emma", "name: true")
    with pytest.raises(ConfigError) as exc:
        parse(text, no_device_tree)
    assert problems_of(exc) == [(7, f"{EMMA}.name", "should be text (found: True)")]


def test_leading_zero_age_is_decimal(no_device_tree: Path) -> None:
    """YAML 1.1 reads 010 as octal 8; a parent writing age 010 means ten."""
    text = f"system:\n  preset: development\n{FAMILY}".replace("age: 8", "age: 010")
    assert parse(text, no_device_tree).config.families["smith"].members["emma"].age == 10


def test_sexagesimal_is_not_a_number(no_device_tree: Path) -> None:
    text = f"system:\n  preset: development\n{FAMILY}".replace("age: 8", "age: 1:30")
    with pytest.raises(ConfigError) as exc:
        parse(text, no_device_tree)
    assert problems_of(exc) == [(8, f"{EMMA}.age", "should be a whole number (found: '1:30')")]


# --- preset detection from the device tree ------------------------------------------------------


def test_detect_jetson_from_recorded_device_tree() -> None:
    assert JETSON_MODEL.read_bytes() == b"NVIDIA Jetson Orin Nano Developer Kit\x00"
    preset, reason = detect_preset(JETSON_MODEL, total_ram=8 * GIB)
    assert preset == "jetson"
    assert reason == "device tree says 'NVIDIA Jetson Orin Nano Developer Kit' (8 GiB RAM)"


def test_detect_pc_without_device_tree(no_device_tree: Path) -> None:
    expected = ("development", "not a Jetson (32 GiB RAM)")
    assert detect_preset(no_device_tree, total_ram=32 * GIB) == expected


@pytest.mark.parametrize(
    "model",
    [b"NVIDIA Jetson AGX Orin Developer Kit\x00", b"Jetson-AGX\x00", b"NVIDIA Jetson Nano\n"],
)
def test_detect_other_jetson_boards(model: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model"
    path.write_bytes(model)
    assert detect_preset(path, total_ram=8 * GIB)[0] == "jetson"


def test_detect_other_arm_board_is_not_a_jetson() -> None:
    preset, _ = detect_preset(RPI_MODEL, total_ram=4 * GIB)
    assert preset == "development"


def test_config_without_preset_gets_the_jetson_preset_on_a_jetson() -> None:
    loaded = parse_config(FAMILY, device_tree=JETSON_MODEL)
    assert loaded.preset == "jetson"
    assert "NVIDIA Jetson Orin Nano Developer Kit" in loaded.preset_reason
    assert loaded.config.system.preset is None  # detected, not written
    assert loaded.config.system.model.n_gpu_layers == "auto"
    assert loaded.config.system.log_level == "info"


def test_config_without_preset_gets_development_on_a_pc(no_device_tree: Path) -> None:
    loaded = parse(FAMILY, no_device_tree)
    assert loaded.preset == "development"
    assert loaded.config.system.model.n_gpu_layers == 0
    assert loaded.config.system.log_level == "debug"
    assert loaded.config.system.training.min_interactions_for_training == 10


def test_config_preset_beats_the_hardware() -> None:
    loaded = parse_config("system:\n  preset: production\n" + FAMILY, device_tree=JETSON_MODEL)
    assert loaded.preset == "production"
    assert loaded.config.system.model.n_gpu_layers == 0


# --- effective values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "level", "expected"),
    [
        (0, None, SafetyLevel.strict),
        (12, None, SafetyLevel.strict),
        (13, None, SafetyLevel.moderate),
        (45, None, SafetyLevel.moderate),
        (8, SafetyLevel.relaxed, SafetyLevel.relaxed),
        (40, SafetyLevel.strict, SafetyLevel.strict),
    ],
)
def test_effective_safety_level(age: int, level: SafetyLevel | None, expected: SafetyLevel) -> None:
    role = Role.child if age < 18 else Role.parent
    member = Member(name="Sam", age=age, role=role, safety_level=level)
    assert member.effective_safety_level is expected


def test_is_child_by_role_or_age() -> None:
    assert Member(name="Ivy", age=19, role=Role.child).is_child
    assert Member(name="Kai", age=16, role=Role.other).is_child
    assert not Member(name="Ada", age=70, role=Role.grandparent).is_child


def _restriction(**fields: Any) -> TimeRestriction:
    return TimeRestriction.model_validate({"start": "08:00", "end": "09:00", **fields})


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["weekdays"], {"mon", "tue", "wed", "thu", "fri"}),
        (["school_days"], {"mon", "tue", "wed", "thu", "fri"}),
        (["weekends", "Mon"], {"sat", "sun", "mon"}),
        (["every_day"], set(DAY_NAMES)),
        (["Tuesday", "thurs", "sun"], {"tue", "thu", "sun"}),
    ],
)
def test_day_set_expands_groups(days: list[str], expected: set[str]) -> None:
    rule = _restriction(days=days, restricted=["book"])
    assert rule.day_set() == expected


def test_day_set_defaults_to_every_day() -> None:
    rule = _restriction(restricted=["book"])
    assert rule.day_set() == set(DAY_NAMES)


@pytest.mark.parametrize(
    ("restricted", "expected"),
    [
        (["screen"], {"video_game", "show", "movie", "video"}),
        (["screens"], {"video_game", "show", "movie", "video"}),
        (["games", "book"], {"game", "video_game", "book"}),
        (["all"], set(CATEGORIES)),
        (["movie"], {"movie"}),
    ],
)
def test_category_set_expands_groups(restricted: list[str], expected: set[str]) -> None:
    rule = _restriction(restricted=restricted)
    assert rule.category_set() == expected


# --- every field is documented -----------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _all_models(*roots: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _models_in(field.annotation)
    return seen


CONFIG_MODELS = _all_models(Config, SystemSettings, Family)


def test_model_walk_reaches_the_nested_models() -> None:
    names = {m.__name__ for m in CONFIG_MODELS}
    assert names >= {
        "Config", "SystemSettings", "Paths", "ModelSettings", "RecommendationSettings",
        "TrainingSettings", "SafetySettings", "ApiSettings", "Family", "Member", "Preferences",
        "FamilySafety", "TimeRestriction",
    }  # fmt: skip


@pytest.mark.parametrize("model", CONFIG_MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_title_and_description(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.title and field.title.strip(), f"{model.__name__}.{name} has no title"
        assert field.description and len(field.description.strip()) > 3, (
            f"{model.__name__}.{name} has no description"
        )


def test_problem_without_line_prints_file_only() -> None:
    assert str(ConfigProblem("x.yaml", None, "", "gone")) == "x.yaml: gone"
    assert str(ConfigProblem("x.yaml", 3, "a.b", "bad")) == "x.yaml:3: a.b: bad"


def test_union_annotations_are_walked() -> None:
    """Guard for _models_in: `X | None` (types.UnionType) must be looked through."""
    assert _models_in(Member | None) == [Member]
    assert _models_in(dict[str, list[Member]]) == [Member]
    assert isinstance(Member | None, types.UnionType)
