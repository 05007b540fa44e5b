"""The web inbox ``loopgate-lc serve`` serves at ``/inbox``: pending requests, their
details and history, and every decision a person can make, from a browser.

Sign-in is by API key or one-time link (:func:`issue_link`); what a person sees is the
scope of the API key they signed in as.
"""

from loopgate_lc.server.inbox.auth import (
    DEFAULT_LINK_TTL,
    LinkInvalid,
    SessionSigner,
    issue_link,
    link_path,
)
from loopgate_lc.server.inbox.views import CSP, InboxConfig, inbox_routes

__all__ = [
    "CSP",
    "DEFAULT_LINK_TTL",
    "InboxConfig",
    "LinkInvalid",
    "SessionSigner",
    "inbox_routes",
    "issue_link",
    "link_path",
]
