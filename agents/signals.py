"""Signals other apps listen to; agents never imports them, they import this."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the transaction that marks an agent offline (missed heartbeats, a clean
# shutdown, or a restarted worker taking its name over). Keyword arguments:
#   agent:  the Agent as it was when it went offline (name, pk, instance_id);
#   reason: why, for people.
# A receiver that raises rolls the transaction back, so the agent stays online and the
# next sweep tries again: recovery is never skipped because a receiver failed once.
agent_went_offline = Signal()
