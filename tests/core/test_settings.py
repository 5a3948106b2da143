"""Settings: `.env.example` documents exactly the Settings fields, and values are validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
FIELD_ENV_NAMES = sorted(name.upper() for name in Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own environment must not leak into these checks."""
    for name in FIELD_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def example_assignments() -> list[tuple[int, str, str]]:
    found = []
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = ASSIGNMENT.match(stripped)
        assert match, f".env.example line {number} is neither a comment nor NAME=value: {line!r}"
        found.append((number, match.group(1), match.group(2)))
    return found


def test_every_setting_has_exactly_one_line_in_env_example() -> None:
    names = [name for _, name, _ in example_assignments()]
    missing = [name for name in FIELD_ENV_NAMES if name not in names]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    assert not missing, f"Settings fields not documented in .env.example: {missing}"
    assert not duplicated, f"Set more than once in .env.example: {duplicated}"


def test_every_env_example_line_is_a_setting() -> None:
    unknown = [f"line {number}: {name}" for number, name, _ in example_assignments() if name not in FIELD_ENV_NAMES]
    assert not unknown, f".env.example names settings that do not exist: {unknown}"


def test_env_example_values_parse_and_equal_the_defaults() -> None:
    from_example = Settings(_env_file=ENV_EXAMPLE)
    defaults = Settings(_env_file=None)
    differing = {
        name: (getattr(from_example, name), getattr(defaults, name))
        for name in Settings.model_fields
        if getattr(from_example, name) != getattr(defaults, name)
    }
    assert not differing, f".env.example disagrees with the defaults (example, default): {differing}"


def test_documented_defaults_of_the_issue() -> None:
    settings = Settings(_env_file=None)
    assert settings.model_id == "florence-community/Florence-2-large"
    assert settings.model_revision is None
    assert (settings.device, settings.dtype) == ("auto", "auto")
    assert (settings.num_beams, settings.max_new_tokens, settings.port) == (3, 1024, 8010)
    assert settings.log_level == "INFO"


def test_empty_value_means_unset_for_optional_settings(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MODEL_REVISION=\n")
    assert Settings(_env_file=env_file).model_revision is None


def test_environment_overrides_defaults_and_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("NUM_BEAMS=2\nMODEL_ID=./models/from-file\nPORT=9000\n")
    from_file = Settings(_env_file=env_file)
    assert (from_file.num_beams, from_file.model_id, from_file.port) == (2, "./models/from-file", 9000)

    monkeypatch.setenv("NUM_BEAMS", "5")
    monkeypatch.setenv("model_revision", "v1.0")  # names are case-insensitive
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("WARMUP", "false")
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "1000")
    settings = Settings(_env_file=env_file)
    assert settings.num_beams == 5  # the environment wins over the file
    assert settings.port == 9000 and settings.model_id == "./models/from-file"
    assert settings.model_revision == "v1.0"
    assert settings.log_level == "DEBUG"
    assert settings.warmup is False
    assert settings.device == "cpu"
    assert settings.max_image_pixels == 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NUM_BEAMS", "0"),
        ("NUM_BEAMS", "three"),
        ("MAX_NEW_TOKENS", "0"),
        ("MAX_NEW_TOKENS", "100000"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("DEVICE", "tpu"),
        ("DTYPE", "float64"),
        ("LOG_LEVEL", "verbose"),
        ("MAX_IMAGE_PIXELS", "0"),
        ("MAX_IMAGE_BYTES", "-1"),
        ("MAX_QUEUE_SIZE", "0"),
        ("WARMUP", "maybe"),
        ("HUB_TIMEOUT_S", "0"),
    ],
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert caught.value.errors()[0]["loc"] == (name.lower(),)
