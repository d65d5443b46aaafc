"""Typed configuration: Config's annotations as real types, Literal choices checked on construction, the
--set conversion driven by typing.get_type_hints, and every committed run.json's parameters loading back."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Literal, Optional

import pytest

from vaesae import config as C
from vaesae.config import Config, convert, field_choices, field_types, get_config, parse_override
from vaesae.errors import VaesaeError

REPO = Path(__file__).resolve().parents[1]
RUN_JSONS = sorted((REPO / "results" / "paper").rglob("run.json"))
CHOICES = {"reading": ("hybrid", "probe"), "reading_sae": C.SAE_READINGS, "optimizer": ("adamw", "adam")}


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_annotations_are_real_types_and_the_choices_are_the_literals():
    hints = field_types()
    assert set(hints) == set(Config.__dataclass_fields__)
    assert not any(isinstance(tp, str) for tp in hints.values())
    assert hints["n_neurons"] is int and hints["lr"] is float and hints["boost"] is bool
    assert hints["k_start"] == Optional[int]
    assert typing.get_origin(hints["reading_sae"]) is Literal
    assert field_choices() == CHOICES
    assert len(C.SAE_READINGS) == 7 and C.SAE_READINGS[0] == "literal"


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_a_value_outside_the_choices_is_refused_on_construction(name):
    allowed = CHOICES[name]
    for value in allowed:
        assert getattr(Config(**{name: value}), name) == value
    for bad in ("sideways", "", allowed[0].upper(), None, 1):
        for make in (lambda: Config(**{name: bad}), lambda: get_config("smoke", **{name: bad}),
                     lambda: Config().replace(**{name: bad})):
            with pytest.raises(VaesaeError, match=f"^{name} must be ") as exc:
                make()
            msg = _one_line(exc)
            assert all(str(a) in msg for a in allowed) and msg.endswith(f"got {bad!r}")


def test_choice_messages_keep_their_shape():
    with pytest.raises(VaesaeError, match=r"^reading must be 'hybrid' or 'probe', got 'sideways'$"):
        get_config("paper", reading="sideways")
    with pytest.raises(VaesaeError, match=r"^optimizer must be 'adamw' or 'adam', got 'sgd'$"):
        get_config("paper", optimizer="sgd")
    with pytest.raises(VaesaeError, match=r"^reading_sae must be one of literal, centred, .*, got 'whitened'$"):
        get_config("paper", reading_sae="whitened")


def _cli_form(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(_cli_form, value))
    return str(value)


@pytest.mark.parametrize("name", sorted(set(Config.__dataclass_fields__) - {"profile"}))
def test_every_field_takes_its_own_value_back_through_set(name):
    for profile in C.PROFILES:
        value = getattr(get_config(profile), name)
        assert parse_override(f"{name}={_cli_form(value)}") == (name, value)


@pytest.mark.parametrize("text, expected", [
    ("lr=3e-4", ("lr", 3e-4)),
    ("lr=1", ("lr", 1.0)),
    ("n_neurons=512", ("n_neurons", 512)),
    ("boost=false", ("boost", False)),
    ("boost=TRUE", ("boost", True)),
    ("tf32=0", ("tf32", False)),
    ("k_start=None", ("k_start", None)),
    ("k_start=none", ("k_start", None)),
    ("k_start=40", ("k_start", 40)),
    ("reading=probe", ("reading", "probe")),
    ("reading_sae=centred+boost_steps", ("reading_sae", "centred+boost_steps")),
    ("optimizer=adam", ("optimizer", "adam")),
])
def test_set_converts_to_the_field_type(text, expected):
    name, value = parse_override(text)
    assert (name, value) == expected and type(value) is type(expected[1])


@pytest.mark.parametrize("text, message", [
    ("lr", r"^--set expects name=value, got 'lr'$"),
    ("colour=1", r"^unknown parameter 'colour' in --set$"),
    ("profile=paper", r"^unknown parameter 'profile' in --set$"),
    ("n_neurons=many", r"^--set n_neurons='many': expected a value of type int$"),
    ("n_neurons=1.5", r"^--set n_neurons='1.5': expected a value of type int$"),
    ("k_start=lots", r"^--set k_start='lots': expected a value of type int \| None$"),
    ("lr=None", r"^--set lr='None': expected a value of type float$"),
    ("boost=maybe", r"^--set boost='maybe': expected a value of type bool$"),
    ("reading=sideways", r"^reading must be 'hybrid' or 'probe', got 'sideways'$"),
    ("reading_sae=centred+standardised", r"^reading_sae must be one of literal, .*, got 'centred\+standardised'$"),
])
def test_bad_set_values_are_one_line(text, message):
    with pytest.raises(VaesaeError, match=message) as exc:
        parse_override(text)
    _one_line(exc)


@pytest.mark.parametrize("raw, tp, expected", [
    ("7", int, 7),
    ("0.5", float, 0.5),
    ("x", str, "x"),
    ("1", bool, True),
    ("None", Optional[float], None),
    ("2.5", Optional[float], 2.5),
    ("b", Literal["a", "b"], "b"),
    ("none", Optional[Literal["a", "b"]], None),
    ("3", Literal[1, 2, 3], 3),
    ("1,2,3", tuple[int, ...], (1, 2, 3)),
    (" 1 , 2 ", tuple[int, ...], (1, 2)),
    ("", tuple[int, ...], ()),
    ("4,0.5", tuple[int, float], (4, 0.5)),
    ("a,b", tuple[Literal["a", "b"], ...], ("a", "b")),
    ("none", Optional[tuple[int, ...]], None),
])
def test_convert_handles_every_kind_of_field(raw, tp, expected):
    assert convert(raw, tp) == expected


@pytest.mark.parametrize("raw, tp", [
    ("1.5", int), ("yes", bool), ("c", Literal["a", "b"]), ("1,x", tuple[int, ...]), ("1", tuple[int, float]),
    ("None", int), ("A", Literal["a", "b"]),
])
def test_convert_refuses_what_is_not_of_the_type(raw, tp):
    with pytest.raises(ValueError):
        convert(raw, tp)


def test_json_lists_become_tuples_for_tuple_fields():
    assert C._from_json([1, 2], tuple[int, ...]) == (1, 2)
    assert C._from_json([1, 2.5], Optional[tuple[int, float]]) == (1, 2.5)
    assert C._from_json([1, 2], list[int]) == [1, 2]
    assert C._from_json(3, int) == 3


def test_profiles_round_trip_through_dicts_and_json():
    for name in C.PROFILES:
        cfg = get_config(name)
        assert Config.from_dict(cfg.to_dict()) == cfg
        assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_the_committed_records_are_there():
    assert RUN_JSONS, "results/paper/**/run.json are committed records"


@pytest.mark.parametrize("path", RUN_JSONS, ids=lambda p: str(p.relative_to(REPO / "results" / "paper")))
def test_every_committed_run_json_loads_through_the_typed_config(path):
    params = json.loads(path.read_text())["params"]
    cfg = Config.from_dict(params)
    C.validate(cfg)
    back = cfg.to_dict()
    for name in Config.__dataclass_fields__:
        if name in params:
            assert back[name] == params[name] and type(back[name]) is type(params[name]), name
    for name, value in params.get("derived", {}).items():
        assert back["derived"][name] == value, name
