"""The demo guest: a packaged guest tree (guest/) and a simulated agent daemon (simagent).

Used by `waagent-guard demo`, the README quick start and the integration tests;
nothing here ever talks to Azure (the guest's WireServerEndpoint is 127.0.0.1).
"""
