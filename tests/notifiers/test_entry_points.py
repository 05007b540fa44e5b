"""Notifiers by name, through the ``loopgate_lc.notifiers`` entry-point group."""

from __future__ import annotations

import logging

import pytest

from loopgate_lc.errors import ConfigurationError
from loopgate_lc.notifiers import (
    ConsoleNotifier,
    LogNotifier,
    WebhookNotifier,
    available_notifiers,
    load_notifier,
)


def test_builtins_are_registered() -> None:
    assert {"console", "log", "telegram", "webhook"} <= set(available_notifiers())


def test_load_log() -> None:
    notifier = load_notifier("log")
    assert isinstance(notifier, LogNotifier)
    assert notifier.name == "log"


def test_kwargs_reach_the_constructor() -> None:
    logger = logging.getLogger("test.loopgate.entry_points")
    notifier = load_notifier("log", logger=logger, name="ops-log")
    assert isinstance(notifier, LogNotifier)
    assert notifier.logger is logger
    assert notifier.name == "ops-log"


def test_load_webhook_and_console() -> None:
    webhook = load_notifier("webhook", url="https://hooks.example/x", secret="s")
    assert isinstance(webhook, WebhookNotifier)
    assert isinstance(load_notifier("console"), ConsoleNotifier)


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown notifier 'pager'") as info:
        load_notifier("pager")
    for name in ("console", "log", "telegram", "webhook"):
        assert name in str(info.value)


def test_wrong_arguments_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="notifier 'log' does not take these arguments"):
        load_notifier("log", colour="red")


def test_constructor_validation_passes_through() -> None:
    with pytest.raises(ConfigurationError, match="absolute http"):
        load_notifier("webhook", url="nowhere", secret="s")
