"""One event-time timer per key, kept at the earliest of the times asked for.

Beam cannot read back when a timer is set, so a DoFn that wants its timer at
the earliest of many due times remembers that time in a state cell beside it
(``armed``). The story rows and the bucket index use this, where each key's
timer fires once per story window step. Steps that must follow the watermark
closely on a backlog (the windowed sink, story assignment) set one tagged timer
per due time instead.
"""

from apache_beam.utils.timestamp import Timestamp


def arm_earliest(timer, armed, due: int) -> None:
    """Sets ``timer`` to ``due`` (µs) unless it is already set to fire earlier.

    In a timer callback, clear ``armed`` first: the time it holds has fired.
    """
    current = armed.read()
    if current is None or due < current:
        timer.set(Timestamp(micros=due))
        armed.write(due)
