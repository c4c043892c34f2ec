"""Settings: environment variables (``TICKPIPE_...``), an optional YAML/TOML file, validation.

A section is a frozen dataclass whose fields carry a type and optional metadata::

    @dataclass(frozen=True)
    class KafkaSettings:
        bootstrap_servers: str = "127.0.0.1:9092"
        linger_ms: int = setting(5, minimum=0, help="producer batching delay")

    kafka = load_section(KafkaSettings, "kafka")   # reads TICKPIPE_KAFKA_LINGER_MS

Precedence, lowest first: field default, the ``--config`` file (section ``kafka:``),
environment, explicit ``overrides`` (command-line flags). A :class:`Secret` field also
accepts ``<NAME>_FILE`` (a Kubernetes secret mount) and never shows its value.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "TICKPIPE_"
_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting."""


class Secret:
    """A credential. Its value is only reachable through :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # pickling would carry the value into places we don't control
        raise TypeError("Secret values cannot be pickled")


# Every configured secret, and the most recent short-lived ones (tokens a producer fetched):
# the log formatter masks them wherever they appear.
_KNOWN_SECRETS: set[str] = set()
_SHORT_LIVED: "collections.OrderedDict[str, None]" = collections.OrderedDict()
SHORT_LIVED_KEPT = 64


def register_secret(value: str, short_lived: bool = False) -> None:
    """Mask ``value`` in logs. ``short_lived`` values (refreshed tokens) are kept for the last
    :data:`SHORT_LIVED_KEPT` only, so a long-running process does not scan an ever-growing list."""
    if not value or len(value) < 4:
        return
    if not short_lived:
        _KNOWN_SECRETS.add(value)
        return
    _SHORT_LIVED[value] = None
    _SHORT_LIVED.move_to_end(value)
    while len(_SHORT_LIVED) > SHORT_LIVED_KEPT:
        _SHORT_LIVED.popitem(last=False)


def redact(text: str) -> str:
    """Replace every known secret value inside ``text`` with ``***``."""
    for values in (_KNOWN_SECRETS, _SHORT_LIVED):
        for value in values:
            if value in text:
                text = text.replace(value, "***")
    return text


def setting(default: Any = _MISSING, *, help: str = "", minimum: float | None = None,
            maximum: float | None = None, choices: typing.Iterable[str] | None = None) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict, set)):
        frozen = tuple(default) if not isinstance(default, dict) else dict(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def env_name(section: str, field: str) -> str:
    return f"{ENV_PREFIX}{section}_{field}".upper().replace("-", "_").replace(".", "_")


def read_config_file(path: str | os.PathLike | None) -> dict:
    """Parse a ``--config`` file (YAML or TOML by extension) into nested dicts."""
    if not path:
        return {}
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {p}: {exc.strerror}") from None
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode())
        else:
            import yaml
            data = yaml.safe_load(raw) or {}
    except Exception as exc:
        raise ConfigError(f"--config: {p} is not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_section(cls: type, section: str, *, file_data: Mapping | None = None,
                 env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None):
    """Build ``cls`` from defaults, file section, environment and overrides, validating each field."""
    env = os.environ if env is None else env
    file_section = (file_data or {}).get(section, {}) or {}
    if not isinstance(file_section, Mapping):
        raise ConfigError(f"--config: section '{section}' must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = {k.replace("-", "_") for k in file_section} - known - {f"{k}_file" for k in known}
    if unknown:
        raise ConfigError(f"--config: unknown setting(s) in section '{section}': {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = env_name(section, f.name)
        raw, origin = _lookup(f.name, name, hints[f.name], file_section, env, overrides or {})
        if raw is _MISSING:
            if f.default is _MISSING and f.default_factory is _MISSING:
                raise ConfigError(f"{name}: required setting is not set")
            continue
        values[f.name] = _coerce(raw, hints[f.name], f.metadata, name, origin)
    return cls(**values)


def _lookup(field: str, name: str, hint: Any, file_section: Mapping, env: Mapping, overrides: Mapping):
    if field in overrides and overrides[field] is not None:
        return overrides[field], "command line"
    is_secret = _unwrap_optional(hint) is Secret
    if name in env:
        return env[name], "environment"
    if is_secret and f"{name}_FILE" in env:
        return _read_secret_file(env[f"{name}_FILE"], f"{name}_FILE"), "file"
    for key in (field, field.replace("_", "-")):
        if key in file_section:
            return file_section[key], "config file"
    if is_secret and f"{field}_file" in file_section:
        return _read_secret_file(file_section[f"{field}_file"], f"{name}_FILE"), "file"
    return _MISSING, ""


def _read_secret_file(path: str, name: str) -> Secret:
    try:
        return Secret(Path(path).read_text().strip())
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read secret file {path}: {exc.strerror}") from None


def _unwrap_optional(hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _coerce(raw: Any, hint: Any, meta: Mapping, name: str, origin: str) -> Any:
    target = _unwrap_optional(hint)
    optional = target is not hint
    shown = "(hidden)" if target is Secret else repr(raw)
    if optional and (raw is None or raw == ""):
        return None
    try:
        value = _convert(raw, target)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {_describe(target)}, got {shown} (from {origin})") from None
    choices = meta.get("choices")
    if choices and value not in choices and getattr(value, "value", None) not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(choices)}, got {shown}")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and value < lo:
        raise ConfigError(f"{name}: must be at least {lo}, got {shown}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}: must be at most {hi}, got {shown}")
    return value


def _convert(raw: Any, target: Any) -> Any:
    origin = typing.get_origin(target)
    if target is Secret:
        if isinstance(raw, Secret):
            return raw
        if not isinstance(raw, str):
            raise TypeError
        return Secret(raw)
    if target is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if target is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
    if target is float:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
        if value != value:
            raise ValueError
        return value
    if target is str:
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise TypeError
        return str(raw)
    if target is Path:
        return Path(str(raw))
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(target) or (str,)
        items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",")]
        return tuple(_convert(i.strip() if isinstance(i, str) else i, item_type) for i in items if i != "")
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return target(str(raw).strip())
    raise TypeError(f"unsupported setting type {target!r}")


def _describe(target: Any) -> str:
    if target is bool:
        return "a boolean (true/false)"
    if target is int:
        return "an integer"
    if target is float:
        return "a number"
    if typing.get_origin(target) is tuple:
        return f"a comma-separated list of {_describe((typing.get_args(target) or (str,))[0])}"
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return "one of " + ", ".join(m.value for m in target)
    return "a string"


def describe_section(cls: type, section: str) -> list[tuple[str, str, str]]:
    """(environment variable, default, help) rows, for README tables and ``--help``."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else "(required)")
        rows.append((env_name(section, f.name), str(default), f.metadata.get("help", "")))
    return rows
