"""Control of a running switch: the HTTP/JSON API (``api``, server side, on the switch's
loop) and the ``softswitch`` commands that call it (``commands``, client side, stdlib)."""
