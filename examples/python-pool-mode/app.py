"""Switchyard's pool-mode policy in Python: world `pool-mode-plugin` of ../../wit, built into a
WebAssembly component by componentize-py (see ./build). Transaction pooling, except for
sessions whose application_name is listed in the `session_apps` setting, which keep their
server (session pooling)."""

import wit_world
from componentize_py_types import Err
from wit_world.exports.pool_mode import ReadyAction_Keep, ReadyAction_Release, ReadyDecision, Reuse
from wit_world.imports import host
from wit_world.imports.types import TxStatus

import policy

RELEASE = ReadyAction_Release()
KEEP = ReadyAction_Keep()

config = policy.Config()
# Session id -> whether its application gets session pooling: one `host.current-session`
# call per session and instance. Ids of ended sessions age out, oldest first.
session_pooled = policy.BoundedCache(limit=4096)


class Lifecycle(wit_world.exports.Lifecycle):
    def init(self, settings):
        global config
        try:
            config = policy.parse_settings(settings)
        except ValueError as error:
            raise Err(str(error))
        session_pooled.clear()
        apps = ", ".join(sorted(config.session_apps)) or "none"
        host.log(host.LogLevel.INFO, f"python-pool-mode {self.version()}: session pooling for {apps}")

    def version(self):
        return policy.version(config.version_tag)


class PoolMode(wit_world.exports.PoolMode):
    def on_ready(self, session, statements):
        pooled = False
        if config.session_apps:
            pooled = session_pooled.get(session.id)
            if pooled is None:
                details = host.current_session()
                pooled = details is not None and details.application_name in config.session_apps
                session_pooled[session.id] = pooled
        in_transaction = session.tx_status != TxStatus.IDLE
        action = RELEASE if policy.release(in_transaction, session.holds_server_state, pooled) else KEEP
        # The answer depends on the transaction status and server state, and on the
        # session's application name when session_apps is set: the proxy may reuse it for
        # this session (or for every session) instead of calling again each transaction.
        reuse = Reuse.SESSION if config.session_apps else Reuse.ALWAYS
        return ReadyDecision(action, reuse)
