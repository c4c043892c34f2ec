"""Every TICKPIPE_* variable tickpipe reads, from the settings dataclasses themselves, so that
deployment files can be checked against what the code really accepts."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from tickpipe.config import Secret, env_name
from tickpipe.providers import PROVIDERS, section_name


@dataclass(frozen=True)
class Variable:
    name: str
    section: str
    cls: type
    secret: bool
    required: bool


def core_sections() -> dict[str, type]:
    from tickpipe.kafka import KafkaSettings
    from tickpipe.processors.app import ProcessorSettings
    from tickpipe.processors.integrity.stage import IntegritySettings
    from tickpipe.producers.settings import ProducerSettings
    from tickpipe.schema_registry import AvroSettings
    from tickpipe.service import OpsSettings
    from tickpipe.topics import TopicSettings

    return {"kafka": KafkaSettings, "ops": OpsSettings, "topics": TopicSettings, "producer": ProducerSettings,
            "processor": ProcessorSettings, "avro": AvroSettings, "integrity": IntegritySettings}


def provider_settings(provider: str) -> type | None:
    """The producer adapter's settings class, or None while the adapter is not written."""
    from tickpipe import producers

    try:
        return producers.load(provider).settings_class
    except LookupError:
        return None


def sections() -> dict[str, type]:
    found = core_sections()
    for provider in PROVIDERS:
        cls = provider_settings(provider)
        if cls is not None:
            found[section_name(provider)] = cls
    return found


def is_secret(cls: type, field: dataclasses.Field) -> bool:
    hint = typing.get_type_hints(cls)[field.name]
    return hint is Secret or Secret in typing.get_args(hint)


def variables(section_classes: dict[str, type] | None = None) -> dict[str, Variable]:
    """Variable name -> what it sets; a secret also accepts <NAME>_FILE."""
    out: dict[str, Variable] = {}
    for section, cls in (section_classes or sections()).items():
        for field in dataclasses.fields(cls):
            secret = is_secret(cls, field)
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            name = env_name(section, field.name)
            out[name] = Variable(name, section, cls, secret, required)
            if secret:
                out[name + "_FILE"] = Variable(name + "_FILE", section, cls, secret, False)
    return out
