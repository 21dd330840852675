"""Who may call, who may dial out, and throttling abuse (issue 9).

* ``digest``: digest challenges and checks (RFC 3261 §22, RFC 7616, RFC 8760), shared by
  REGISTER (401) and INVITE (407);
* ``access``: trunks, users and this host; the ``AccessPolicy`` the engine asks about
  each out-of-dialog INVITE and each dial-out; per-trunk and per-user call accounting;
* ``ratelimit``: the pike-like per-source ``FloodGuard`` and ``AuthFailures`` (password
  guessing by source and by user, with block windows);
* ``log``: the ``SECURITY ...`` lines fail2ban matches.

All of it is sans-I/O: the caller passes ``now`` (the loop's clock), so tests run on
virtual time.
"""
