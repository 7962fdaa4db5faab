"""The guard's metric families and the HTTP(S) server that exposes them.

`guard_collector()` is the one place that names the bounded label sets (restart
reasons, decision actions, catalogue events, doctor checks); the daemon and
`waagent-guard metrics` both use it. `Exporter` owns the listening server.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from waagent_guard.agent.log import EVENT_CATALOGUE
from waagent_guard.doctor.runner import check_codes as all_check_codes
from waagent_guard.errors import ConfigError
from waagent_guard.metrics import MetricsInput, StateCollector, make_registry
from waagent_guard.policy import DECISION_ACTIONS, RESTART_REASONS
from waagent_guard.settings import MetricsSettings

log = logging.getLogger(__name__)


def guard_collector(
    provider: Callable[[], MetricsInput], *, checks: bool, decisions: bool = True
) -> StateCollector:
    """The collector over what `provider` returns; `checks` adds the doctor's families.

    `decisions=False` leaves out `waagent_guard_decisions_total`, which counts one
    daemon's decisions since it started and so exists only where the daemon serves.
    """
    check_codes = all_check_codes() if checks else ()
    return StateCollector(
        provider,
        restart_reasons=RESTART_REASONS,
        event_names=[event.name for event in EVENT_CATALOGUE],
        check_codes=check_codes,
        decision_actions=DECISION_ACTIONS if decisions else (),
    )


class Exporter:
    """`/metrics` on `metrics.address:metrics.port` (HTTPS with `tls_cert`/`tls_key`)."""

    def __init__(
        self, settings: MetricsSettings, collector: StateCollector, *, config_path: Path
    ) -> None:
        from prometheus_client import start_http_server

        self._tls = settings.tls_cert is not None
        try:
            self._server: Any
            self._server, _thread = start_http_server(
                settings.port,
                addr=settings.address,
                registry=make_registry(collector),
                certfile=settings.tls_cert,
                keyfile=settings.tls_key,
                client_cafile=settings.tls_client_ca,
                client_auth_required=settings.tls_client_ca is not None,
            )
        except OSError as error:
            raise ConfigError(
                f"metrics.address/metrics.port {settings.address}:{settings.port}: cannot "
                f"listen ({error.strerror or error}); choose a free port in [metrics] of "
                f"{config_path}"
            ) from error
        log.info("metrics on %s", self.url)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{host}:{port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def maybe_exporter(
    settings: MetricsSettings, provider: Callable[[], MetricsInput], *, config_path: Path
) -> Optional[Exporter]:
    if not settings.enabled:
        return None
    return Exporter(settings, guard_collector(provider, checks=True), config_path=config_path)
