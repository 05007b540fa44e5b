"""Where the default store lives, and commands written so another process finds it.

Every process that should meet on one store (``loopgate-lc serve`` in one folder,
``loopgate-lc approve`` in another, a script with ``Loopgate()``) must name the same file.
A relative ``sqlite:///loopgate.db`` names a different file in every folder, so the
default is one file per user in the platform's data directory (``platformdirs``: XDG
on Linux, ``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%`` on Windows),
and every URL the package prints for someone to paste is made absolute first. So is the
program in every command it prints (:func:`cli_command`): a shell that has not activated
the environment (as after ``make demo``) does not find a bare ``loopgate-lc``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "STORE_ENV",
    "STORE_NOTE",
    "absolute_store_url",
    "answer_hint",
    "cli_command",
    "default_store_url",
    "deliveries_hint",
    "make_room_for",
    "printable_store_url",
    "sqlite_file",
    "store_command",
    "store_hint",
]

STORE_ENV = "LOOPGATE_STORE"
_APP = "loopgate-lc"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def default_store_url() -> str:
    """``$LOOPGATE_STORE`` when set, else ``sqlite:///<user data dir>/loopgate.db``.

    The directory is not created here: only opening the store for writing creates it,
    so asking where the store is (or listing an empty one) leaves no files behind.
    """
    configured = os.environ.get(STORE_ENV, "").strip()
    if configured:
        return configured
    return f"sqlite:///{_user_store_file()}"


def _user_store_file() -> Path:
    """The per-user SQLite store's file."""
    from platformdirs import user_data_path

    return user_data_path(_APP, appauthor=False) / "loopgate.db"


def make_room_for(url: str) -> None:
    """Create the per-user data directory when ``url`` is the per-user SQLite store (on a
    new machine it does not exist yet, and SQLite creates files, not directories). Any
    other path is the caller's to provide: a mistyped one fails instead of appearing."""
    file = sqlite_file(url)
    if file is None:
        return
    own = _user_store_file()
    if file == own.resolve():
        own.parent.mkdir(parents=True, exist_ok=True)


def sqlite_file(url: str) -> Path | None:
    """The absolute file a SQLite URL (or plain ``.db`` path) names; None for others."""
    text = url.strip()
    if text.lower().startswith("sqlite:"):
        rest = text[len("sqlite:"):]
        path = rest[3:] if rest.startswith("///") else rest.lstrip("/")
    elif "://" not in text and text.lower().endswith(_SQLITE_SUFFIXES):
        path = text
    else:
        return None
    return Path(path).expanduser().resolve()


def absolute_store_url(url: str) -> str:
    """The URL with a SQLite path made absolute, so it means the same in any folder."""
    file = sqlite_file(url)
    return f"sqlite:///{file}" if file is not None else url.strip()


#: libpq's connection parameters that hold a secret, wherever a store URL carries them.
_SECRETS = frozenset({"password", "sslpassword"})
#: A secret in a ``key=value`` connection string: the value bare, or quoted with escapes.
_SECRET_PAIR = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def printable_store_url(url: str) -> str:
    """The URL with every password replaced by ``<password>``: hints and start-up lines
    are read by people and logged, and must not carry a secret. libpq takes one in the
    URL's user part, as a ``password``/``sslpassword`` query parameter, or in a
    ``key=value`` connection string; all three are hidden."""
    if "://" not in url:  # a key=value connection string (or a bare path, left as it is)
        return _SECRET_PAIR.sub(r"\1<password>", url)
    parts = urlsplit(url)
    query = "&".join(
        f"{pair.split('=', 1)[0]}=<password>"
        if unquote(pair.split("=", 1)[0]).strip().lower() in _SECRETS else pair
        for pair in parts.query.split("&")) if parts.query else parts.query
    netloc = parts.netloc
    if parts.password is not None:  # user:password@host, the host written as it was
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.split(':', 1)[0]}:<password>@{host}"
    if (query, netloc) == (parts.query, parts.netloc):
        return url  # nothing secret: as written (a rebuilt sqlite:////path loses a slash)
    return urlunsplit(parts._replace(query=query, netloc=netloc))


def cli_command() -> str:
    """How a person runs this environment's ``loopgate-lc`` from a shell, as every
    command the package prints starts.

    The bare name when the shell's ``PATH`` finds this very program (an activated
    environment, a global install); else the program's full path, which works from any
    shell and folder (an environment run without activating it: ``make demo``,
    ``.venv/bin/python app.py``, where the bare name is not found or is another
    installation's); else this Python running the CLI's module (no script installed).
    """
    script = Path(sys.executable).parent / ("loopgate-lc.exe" if os.name == "nt"
                                            else "loopgate-lc")
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m loopgate_lc.cli"
    found = shutil.which("loopgate-lc")
    if found is not None and os.path.samefile(found, script):
        return "loopgate-lc"
    return shlex.quote(str(script.absolute()))


#: What a command shown to strangers says about the store it needs: a server with API keys
#: does not tell anonymous callers (``/health``, the inbox's sign-in page) its paths or
#: database address.
STORE_NOTE = "STORE: the store the server named when it started"


def store_command(args: str, store_url: str | None, *, private: bool = True) -> str | None:
    """``loopgate-lc ARGS --store URL`` as a person pastes it: the program and the store
    written so it runs from any shell and folder, the store's password left out. None for
    a store in memory, which no other process can see.

    Not ``private`` (shown to anyone who can reach a server that has API keys): the bare
    program and ``STORE`` (see :data:`STORE_NOTE`), so the page tells no stranger where
    the server keeps its files or database; its start-up line has the whole command.
    """
    if store_url is not None and store_url.strip().lower().startswith("memory"):
        return None
    if not private:
        return f"loopgate-lc {args} --store STORE"
    url = printable_store_url(absolute_store_url(store_url or default_store_url()))
    return f"{cli_command()} {args} --store {shlex.quote(url)}"


def store_hint(args: str, store_url: str | None, *, private: bool = True) -> str | None:
    """:func:`store_command` as prose shows it: in backticks, and when not ``private``
    followed by what its ``STORE`` stands for. None for a store in memory."""
    command = store_command(args, store_url, private=private)
    if command is None:
        return None
    return f"`{command}`" if private else f"`{command}` ({STORE_NOTE})"


def answer_hint(request_id: str, store_url: str | None) -> str:
    """The command a person pastes to answer a request from another terminal; for a
    store in memory, that no other process can see it."""
    approve = store_command(f"approve {request_id}", store_url)
    reject = store_command(f"reject {request_id}", store_url)
    if approve is None or reject is None:
        return ("this gateway keeps its requests in memory, so no other process can answer "
                "them; give it a file store (e.g. Loopgate(store='sqlite:///loopgate.db')) to "
                f"answer with `{cli_command()} approve`")
    return f"answer with `{approve}` or `{reject} --reason TEXT`"


def deliveries_hint(store_url: str | None, *, private: bool = True) -> str:
    """The command that lists dead deliveries of this store, runnable from any folder
    (see :func:`store_command` for ``private``)."""
    hint = store_hint("deliveries", store_url, private=private)
    if hint is None:
        return "list them with Loopgate.dead_deliveries() (this store is in memory)"
    return f"list them with {hint}"
