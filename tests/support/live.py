"""Real servers for tests: the library's own background server, under the names the tests
use."""

from loopgate_lc.background import BackgroundServer as LiveServer
from loopgate_lc.background import loopback_socket as free_socket

__all__ = ["LiveServer", "free_socket"]
