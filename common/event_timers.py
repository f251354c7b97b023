"""Event-time timers for keys with many due times: the earliest, or one per time.

``arm_earliest``: one timer per key, kept at the earliest of the times asked
for. Beam cannot read back when a timer is set, so the time is remembered in a
state cell beside it (``armed``). The story rows and the bucket index use this,
where a key's timer fires once per story-window step.

``arm_latest``: one timer per key, kept at the latest of the times asked for.
On a bounded input, whose watermark leaps to the end once it is all read, it
fires once, after every element (the batch index and story assignment).

``arm_at``: one timer per due time, tagged with it. Steps that must follow the
watermark closely on a backlog (the late-article check, the windowed sink,
story assignment) use this. Re-arming one timer from its own callback would
cost a round trip per step: a runner sees such a timer only once the bundle is
done (1-1.5 s on Flink, whose due timer waits for the next bundle), so a
backlog of event time went by no faster than the clock (600 articles spread
over 5 minutes came out after 280 s). Timers set ahead all fire as soon as the
watermark passes them, possibly several in one bundle in any order: a
callback must not assume the earlier ones fired first.
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


def arm_latest(timer, armed, due: int) -> None:
    """Sets ``timer`` to ``due`` (µs) unless it is already set to fire later. A finite
    time, not the end of the global window, which Prism's timers do not take and the
    bundle-based DirectRunner fires after the GroupByKeys downstream have finished."""
    current = armed.read()
    if current is None or due > current:
        timer.set(Timestamp(micros=due))
        armed.write(due)


def arm_at(timer, due: int) -> None:
    """Sets a timer of ``timer``'s family at ``due`` (µs), tagged with it: setting
    the same time again (another article of the same window) is the same timer."""
    timer.set(Timestamp(micros=due), dynamic_timer_tag=str(due))
