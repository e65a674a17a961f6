"""Which apps exist: those with terms in the settings, and those the live workers have counted events of.

A replay or an exemption for an app nobody knows is almost always a typo in
its id; it is refused rather than answered with a month of nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stream.config import Settings
from stream.live.store import Store


class UnknownApp(Exception):
    """An app id with no terms on record that the live workers never saw; the message names it."""


async def check_apps_known(
    settings: Settings, live: Store, apps: Sequence[str], seen: Iterable[str] | None = None
) -> None:
    """Raise :class:`UnknownApp` for the first of ``apps`` that neither the settings, the live state nor ``seen`` know.

    ``seen``: apps a replay counted in its month. Without it, and without a
    live state (no worker has run against this Redis), nothing but the
    settings could vouch for an app, so nothing is refused.
    """
    if not apps:
        return
    live_state = await live.meta() is not None
    if not live_state and seen is None:
        return
    known = set(settings.apps) | set(seen or ())
    if live_state:
        known |= await live.apps()
    unknown = [app for app in apps if app not in known]
    if unknown:
        sources = (["seen by the live workers"] if live_state else []) + (["in the month replayed"] if seen else [])
        raise UnknownApp(f"unknown app {unknown[0]}: no terms in the settings, and no events {' or '.join(sources)}")
