"""Who holds a lease, and whether that holder is certainly dead.

An owner id is ``host:pid:nonce``. A lease of a process on this host that no
longer exists (a SIGKILLed server, say) can be freed at once instead of waiting
for it to time out; owners on other hosts are left to their lease expiry.
"""

from __future__ import annotations

import os
import secrets
import socket


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def is_dead_local_owner(owner: str, *, me: str) -> bool:
    if owner == me:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        # Same process, other nonce: a previous engine in this process that is gone.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
