"""The header checks a UAS core makes before acting on a request (RFC 3261 §8.2.2), sans-I/O.

``parse_message`` already refused what is malformed; a request that passes it can still be
one this UAS must refuse: a Request-URI scheme it does not serve (416) or an extension it
is required to apply but does not know (420). Both are decided from the request alone, so
they live here beside the parser; the transaction user asks after its method check and
before it acts: ``refusal = uas_refusal(request)``; when not None, answer with it.

The method check before (405/501, §8.2.1) and the body check after (415, §8.2.3) stay with
the transaction user: only it knows which methods and bodies it handles.
"""

from __future__ import annotations

from .message import SipRequest
from .uri import split_commas

# The Request-URI schemes this switch serves: sip and sips (RFC 3261 §19.1) and tel
# (RFC 3966), which trunks send.
SCHEMES = frozenset(("sip", "sips", "tel"))


def uas_refusal(request: SipRequest, *, supported: frozenset[str] = frozenset(),
                schemes: frozenset[str] = SCHEMES) -> tuple[int, dict[str, str]] | None:
    """The status (and headers) to refuse ``request`` with, or None to go on.

    - §8.2.2.1: a Request-URI scheme not in ``schemes`` gets 416 (RFC 4475 §3.3.2, §3.3.3).
    - §8.2.2.3: an option tag in Require that is not in ``supported`` (lower case) gets 420
      with an Unsupported header listing the unknown ones as written (RFC 4475 §3.3.5).
      Proxy-Require is for proxies and is not looked at by a UAS. CANCEL and ACK are
      exempt: a CANCEL's Require is ignored, and an ACK is never answered (§8.2.2.3, §17).
    """
    if request.method == "ACK":
        return None
    uri = request.uri
    if uri[: uri.find(":")].lower() not in schemes:
        return 416, {}
    if request.method != "CANCEL":
        unknown = [tag for value in request.get_all("require") for tag in split_commas(value)
                   if tag.lower() not in supported]
        if unknown:
            return 420, {"unsupported": ", ".join(unknown)}
    return None
