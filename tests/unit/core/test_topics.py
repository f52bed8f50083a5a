"""The topic catalog's typed names: one ``Topics`` property per catalog topic, no more and no fewer."""

from __future__ import annotations

import pytest

from tollgate_core.topics import Topics, catalog


def test_every_catalog_topic_has_a_property_and_every_property_a_topic() -> None:
    properties = {name for name, value in vars(Topics).items() if isinstance(value, property)}
    topics = {name.replace(".", "_") for name in catalog() if not name.startswith("dlq.")}
    assert properties == topics


def test_a_property_is_the_current_version_under_the_namespace() -> None:
    topics = Topics("ns")
    specs = catalog()
    assert topics.events_raw == specs["events.raw"].full_name(None, "ns") == "ns.events.raw.v1"
    assert topics.dlq("validator") == "ns.dlq.validator.v1"
    assert topics.name("models.lifecycle", 1) == "ns.models.lifecycle.v1"


def test_a_name_outside_the_catalog_is_an_error_not_a_topic() -> None:
    topics = Topics("ns")
    with pytest.raises(AttributeError):
        topics.events_rawx  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(KeyError, match="not in the catalog"):
        topics.name("events.rawx")
