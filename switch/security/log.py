"""The security log: one line per event, in a fixed shape a fail2ban filter can match.

Every line is ``SECURITY <event> source=<ip> key=value ...`` on the ``switch.security``
logger (text format: ``... WARNING security       SECURITY refused source=192.0.2.7
reason=not-a-trunk-or-user method=INVITE``; JSON: the same ``msg`` plus a ``security``
object with the fields). ``source=`` always comes first and is always our reading of the
packet's real source address, never text from the message: the values that do come from
the message (a user name, a dialled number) are reduced to a safe alphabet and cut short,
so a crafted user name like ``x source=8.8.8.8`` cannot make fail2ban ban someone else
(RFC 3261 §26.1.5: requests are attacker-controlled).

The events:

=============  ===========================================================================
refused        a request turned away before any task starts (``reason=not-a-trunk-or-user``,
               ``auth-blocked``); repeats of one source and reason are folded into one line
               per ``REPEAT_INTERVAL`` (``repeated=N`` on the next one)
auth-failed    a digest over a fresh nonce of ours that was wrong (a password guess)
blocked        a source (or a user name) starts a block window (``reason=flood`` or
               ``auth-failures``)
unblocked      a flood block ended (logged at the source's next request, ``dropped=N``)
replayed       credentials whose nonce count did not go up (RFC 7616 §3.4)
dial-refused   ``StartBridgedCall`` towards a gateway by a caller without dial-out rights
=============  ===========================================================================

A sample fail2ban filter (``/etc/fail2ban/filter.d/softswitch.conf``; README "Security"
has the jail). fail2ban cuts the timestamp out of a log file's line before matching, and a
journal line starts ``host ident[pid]:``, so the regex takes the line with or without
either::

    [Definition]
    failregex = ^\\s*(?:\\S+\\s+)?(?:\\S+\\[\\d+\\]:\\s+)?(?:\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(?:\\.\\d+)?Z\\s+)?WARNING\\s+security\\s+SECURITY (?:refused|auth-failed|blocked) source=<HOST>(?: |$)
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict

logger = logging.getLogger("switch.security")

# Folding repeats: a scanner sending 1000 INVITEs makes one line per source and reason
# every 10 s, not 1000 lines (the log must not become the flood's amplifier).
REPEAT_INTERVAL = 10.0
_MAX_FOLDED = 4096  # (event, source, reason) entries kept for folding; the oldest go first

_UNSAFE = re.compile(r"[^A-Za-z0-9._:@+/-]")


def clean(value: object, limit: int = 64) -> str:
    """A log field value that cannot break the line's shape: no spaces, quotes, ``=`` or
    control characters, at most ``limit`` characters; ``-`` when empty."""
    text = _UNSAFE.sub("?", str(value))[:limit]
    return text or "-"


class SecurityLog:
    """Writes the security events; folds repeats of ``refused``-like events."""

    def __init__(self, log: logging.Logger = logger) -> None:
        self.log = log
        self._folded: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()  # -> [last, repeats]
        # Every event by (event, reason), folded repeats included (the metrics): both are
        # names from our code, so the table stays small whatever the traffic.
        self.counts: dict[tuple[str, str], int] = {}

    def event(self, event: str, source: str, now: float, *, level: int = logging.WARNING,
              fold: bool = False, **fields: object) -> None:
        """Log ``SECURITY <event> source=<source> k=v...``. With ``fold``, one line per
        (event, source, reason) per REPEAT_INTERVAL; the repeats in between are counted
        and reported on the next line as ``repeated=N``."""
        kind = (event, str(fields.get("reason", "")))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if fold:
            key = (event, source, kind[1])
            seen = self._folded.get(key)
            if seen is not None and now - seen[0] < REPEAT_INTERVAL:
                seen[1] += 1
                return
            if seen is not None and seen[1]:
                fields["repeated"] = int(seen[1])
            self._folded[key] = [now, 0]
            self._folded.move_to_end(key)
            if len(self._folded) > _MAX_FOLDED:
                self._folded.popitem(last=False)
        if not self.log.isEnabledFor(level):
            return
        values = {name: clean(value) for name, value in fields.items()}
        line = " ".join([f"SECURITY {event} source={clean(source)}", *(f"{k}={v}" for k, v in values.items())])
        self.log.log(level, line, extra={"security": {"event": event, "source": clean(source), **values}})
