"""The zero-downtime CrossGuard policy pack.

``policies/__main__.py`` is the pack's entry point for the Pulumi CLI (it builds
the ``PolicyPack``, which starts a gRPC server and blocks). Everything else is
importable without side effects: :mod:`policies.pack` (the policy objects),
:mod:`policies.rules` (pure rule functions) and :mod:`policies.offline`
(running the same policy objects on resources captured under mocks).
"""
