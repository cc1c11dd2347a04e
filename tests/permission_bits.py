"""Make permission bits bind in a test even when the suite runs as root.

Root ignores a folder's mode (CAP_DAC_OVERRIDE), so ``chmod 0o555`` alone tests nothing there, and ``os.access``
answers True for root on a read-only folder. :func:`permission_bits_enforced` drops the capabilities that bypass
file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from this thread's effective set for the
duration, as ``setpriv --bounding-set=-dac_override,...`` does for a command, then raises them again (they stay
in the permitted set). Threads started inside inherit the dropped set. Not root: nothing to drop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Iterator

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_BYPASS_BITS = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capabilities(libc, data=None):
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    if data is None:
        data = (_Data * 2)()
        call = libc.capget
    else:
        call = libc.capset
    if call(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), f"{call.__name__} failed")
    return data


@contextlib.contextmanager
def permission_bits_enforced() -> Iterator[None]:
    """Inside, a folder or file without write permission refuses this process's writes, root or not."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _capabilities(libc)
    dropped = (_Data * 2)()
    ctypes.memmove(dropped, saved, ctypes.sizeof(saved))
    dropped[0].effective &= ~_BYPASS_BITS
    _capabilities(libc, dropped)
    try:
        yield
    finally:
        _capabilities(libc, saved)
