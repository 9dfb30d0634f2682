"""``./rehearse``: the whole migration plan on one machine with real servers, under load.

Modules: ``services`` (the real servers on 127.0.1.1-3), ``postgres`` (clusters on a server
address), ``bootstrap`` (the MVP's data), ``api_app``/``worker``/``pgbouncer_exporter`` (the
processes the rehearsal runs), ``load`` (open-loop load), ``reconcilers`` (one per concern),
``faults``, ``gate`` (rollback triggers through ``bazbii_analysis``), ``runner`` (the walk),
``report`` (table, JSON, PNG), ``procs`` (process registry, signals). A dev tool: it may use
``testsupport``; nothing that ships imports it.
"""
