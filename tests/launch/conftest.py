"""Fixtures of the launcher tests."""

import socket

import pytest


class ContactAttemptError(AssertionError):
    """A dry run tried to reach the network or to look for credentials."""


@pytest.fixture()
def offline(monkeypatch):
    """Fails the test if the code opens a network connection, resolves a name or asks for
    Google credentials: what a dry run must never do."""

    def refuse(*args, **kwargs):
        raise ContactAttemptError(f"tried to contact something: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import google.auth

    monkeypatch.setattr(google.auth, "default", refuse)
