"""The scripted client, the only test double in moa's tests: it ships as moa.testing's."""

from moa.testing import Permanent, ScriptedClient, Transient, default_reply

__all__ = ("Permanent", "ScriptedClient", "Transient", "default_reply")
