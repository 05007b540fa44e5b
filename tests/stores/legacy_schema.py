"""The DDL that released loopgate_lc versions wrote, frozen as they wrote it.

The upgrade tests build a database at every earlier schema version from these
statements (not from today's migration list), then let today's store upgrade it in
place. Never edit an entry: it is a record of what exists in users' databases.
"""

from __future__ import annotations

#: SQLite, schema versions 1-7, as the SQLite store wrote them.
SQLITE: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE loopgate_sessions (
                session_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                client_id TEXT NOT NULL DEFAULT '',
                telegram_id INTEGER,
                approvers TEXT NOT NULL DEFAULT '[]',
                active INTEGER NOT NULL DEFAULT 1,
                created_at TEXT NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE loopgate_requests (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                session_id TEXT,
                client_id TEXT,
                thread_id TEXT,
                interrupt_id TEXT,
                graph TEXT,
                payload TEXT NOT NULL DEFAULT '{}',
                status TEXT NOT NULL,
                decision TEXT,
                decided_by TEXT,
                channel TEXT,
                created_at TEXT NOT NULL,
                expires_at TEXT,
                decided_at TEXT,
                escalation_level INTEGER NOT NULL DEFAULT 0,
                resumed_at TEXT,
                message_refs TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE UNIQUE INDEX loopgate_requests_interrupt
                ON loopgate_requests (thread_id, interrupt_id)
                WHERE thread_id IS NOT NULL AND interrupt_id IS NOT NULL""",
            "CREATE INDEX loopgate_requests_created ON loopgate_requests (created_at, seq)",
            "CREATE INDEX loopgate_requests_thread ON loopgate_requests (thread_id)",
            "CREATE INDEX loopgate_requests_session ON loopgate_requests (session_id)",
            """CREATE INDEX loopgate_requests_expiry ON loopgate_requests (expires_at)
                WHERE status = 'pending'""",
            """CREATE TABLE loopgate_callbacks (
                key TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                action TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE loopgate_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                event TEXT NOT NULL,
                request_id TEXT,
                session_id TEXT,
                thread_id TEXT,
                actor TEXT,
                channel TEXT,
                args_hash TEXT,
                details TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX loopgate_audit_request ON loopgate_audit (request_id)",
            "CREATE INDEX loopgate_audit_session ON loopgate_audit (session_id)",
            "CREATE INDEX loopgate_audit_thread ON loopgate_audit (thread_id)",
            "CREATE INDEX loopgate_audit_at ON loopgate_audit (at)",
            """CREATE TABLE loopgate_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                request_id TEXT NOT NULL,
                notifier TEXT NOT NULL,
                kind TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                due_at TEXT NOT NULL,
                last_error TEXT,
                done INTEGER NOT NULL DEFAULT 0,
                leased_until TEXT
            )""",
            """CREATE UNIQUE INDEX loopgate_outbox_open
                ON loopgate_outbox (request_id, notifier, kind) WHERE done = 0""",
            "CREATE INDEX loopgate_outbox_due ON loopgate_outbox (due_at) WHERE done = 0",
        ),
    ),
    (
        2,
        (
            # what a restarted gateway looks for every poll: decided, not yet resumed
            """CREATE INDEX loopgate_requests_unresumed ON loopgate_requests (graph)
                WHERE status <> 'pending' AND resumed_at IS NULL""",
        ),
    ),
    (
        3,
        (
            # a claimed resume is done once the graph's checkpoint has it; a claim that
            # never completes belongs to a process that died mid-resume
            "ALTER TABLE loopgate_requests ADD COLUMN resume_done_at TEXT",
            "UPDATE loopgate_requests SET resume_done_at = resumed_at "
            "WHERE resumed_at IS NOT NULL",
            "DROP INDEX loopgate_requests_unresumed",
            """CREATE INDEX loopgate_requests_unresumed ON loopgate_requests (graph)
                WHERE status <> 'pending' AND resume_done_at IS NULL""",
        ),
    ),
    (
        4,
        (
            "ALTER TABLE loopgate_outbox ADD COLUMN dead BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE loopgate_outbox ADD COLUMN created_at TEXT",
        ),
    ),
    (
        5,
        ("CREATE INDEX loopgate_outbox_dead ON loopgate_outbox (id) WHERE dead",),
    ),
    (
        6,
        ("ALTER TABLE loopgate_requests ADD COLUMN votes TEXT NOT NULL DEFAULT '[]'",),
    ),
    (
        7,
        (
            """CREATE TABLE loopgate_grants (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                tool TEXT NOT NULL,
                args TEXT NOT NULL DEFAULT '{}',
                scope TEXT NOT NULL,
                session_id TEXT,
                thread_id TEXT,
                client_id TEXT,
                request_id TEXT NOT NULL,
                created_by TEXT,
                approver_id TEXT,
                channel TEXT,
                created_at TEXT NOT NULL,
                expires_at TEXT,
                revoked_at TEXT,
                revoked_by TEXT
            )""",
            "CREATE INDEX loopgate_grants_live ON loopgate_grants (tool) "
            "WHERE revoked_at IS NULL",
            "CREATE INDEX loopgate_grants_created ON loopgate_grants (created_at, seq)",
        ),
    ),
)

#: PostgreSQL, schema versions 1-7; ``{name}`` is a (schema-qualified) table, literal
#: braces are doubled.
POSTGRES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE {sessions} (
                session_id TEXT PRIMARY KEY,
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                client_id TEXT NOT NULL DEFAULT '',
                telegram_id BIGINT,
                approvers JSONB NOT NULL DEFAULT '[]',
                active BOOLEAN NOT NULL DEFAULT TRUE,
                created_at TIMESTAMPTZ NOT NULL,
                metadata JSONB NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE TABLE {requests} (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                session_id TEXT,
                client_id TEXT,
                thread_id TEXT,
                interrupt_id TEXT,
                graph TEXT,
                payload JSONB NOT NULL DEFAULT '{{}}',
                status TEXT NOT NULL,
                decision JSONB,
                decided_by TEXT,
                channel TEXT,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ,
                decided_at TIMESTAMPTZ,
                escalation_level INTEGER NOT NULL DEFAULT 0,
                resumed_at TIMESTAMPTZ,
                message_refs JSONB NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE UNIQUE INDEX loopgate_requests_interrupt
                ON {requests} (thread_id, interrupt_id)
                WHERE thread_id IS NOT NULL AND interrupt_id IS NOT NULL""",
            "CREATE INDEX loopgate_requests_created ON {requests} (created_at, seq)",
            "CREATE INDEX loopgate_requests_thread ON {requests} (thread_id)",
            "CREATE INDEX loopgate_requests_session ON {requests} (session_id)",
            """CREATE INDEX loopgate_requests_expiry ON {requests} (expires_at)
                WHERE status = 'pending'""",
            """CREATE TABLE {callbacks} (
                key TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                action JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
            """CREATE TABLE {audit} (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at TIMESTAMPTZ NOT NULL,
                event TEXT NOT NULL,
                request_id TEXT,
                session_id TEXT,
                thread_id TEXT,
                actor TEXT,
                channel TEXT,
                args_hash TEXT,
                details JSONB NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX loopgate_audit_request ON {audit} (request_id)",
            "CREATE INDEX loopgate_audit_session ON {audit} (session_id)",
            "CREATE INDEX loopgate_audit_thread ON {audit} (thread_id)",
            "CREATE INDEX loopgate_audit_at ON {audit} (at)",
            """CREATE TABLE {outbox} (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                request_id TEXT NOT NULL,
                notifier TEXT NOT NULL,
                kind TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                due_at TIMESTAMPTZ NOT NULL,
                last_error TEXT,
                done BOOLEAN NOT NULL DEFAULT FALSE,
                leased_until TIMESTAMPTZ
            )""",
            """CREATE UNIQUE INDEX loopgate_outbox_open
                ON {outbox} (request_id, notifier, kind) WHERE NOT done""",
            "CREATE INDEX loopgate_outbox_due ON {outbox} (due_at) WHERE NOT done",
        ),
    ),
    (
        2,
        (
            # what a restarted gateway looks for every poll: decided, not yet resumed
            """CREATE INDEX loopgate_requests_unresumed ON {requests} (graph)
                WHERE status <> 'pending' AND resumed_at IS NULL""",
        ),
    ),
    (
        3,
        (
            # a claimed resume is done once the graph's checkpoint has it; a claim that
            # never completes belongs to a process that died mid-resume
            "ALTER TABLE {requests} ADD COLUMN resume_done_at TIMESTAMPTZ",
            "UPDATE {requests} SET resume_done_at = resumed_at WHERE resumed_at IS NOT NULL",
            "DROP INDEX {requests_unresumed}",
            """CREATE INDEX loopgate_requests_unresumed ON {requests} (graph)
                WHERE status <> 'pending' AND resume_done_at IS NULL""",
        ),
    ),
    (
        4,
        (
            "ALTER TABLE {outbox} ADD COLUMN dead BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE {outbox} ADD COLUMN created_at TIMESTAMPTZ",
        ),
    ),
    (
        5,
        ("CREATE INDEX loopgate_outbox_dead ON {outbox} (id) WHERE dead",),
    ),
    (
        6,
        ("ALTER TABLE {requests} ADD COLUMN votes JSONB NOT NULL DEFAULT '[]'",),
    ),
    (
        7,
        (
            """CREATE TABLE {grants} (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                tool TEXT NOT NULL,
                args JSONB NOT NULL DEFAULT '{{}}',
                scope TEXT NOT NULL,
                session_id TEXT,
                thread_id TEXT,
                client_id TEXT,
                request_id TEXT NOT NULL,
                created_by TEXT,
                approver_id TEXT,
                channel TEXT,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ,
                revoked_at TIMESTAMPTZ,
                revoked_by TEXT
            )""",
            "CREATE INDEX loopgate_grants_live ON {grants} (tool) WHERE revoked_at IS NULL",
            "CREATE INDEX loopgate_grants_created ON {grants} (created_at, seq)",
        ),
    ),
)
