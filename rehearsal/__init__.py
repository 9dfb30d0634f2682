"""``./rehearse``: the whole migration plan applied by the real ``pulumi up`` on the twin, under load.

Modules: ``engine_cli`` (parse, start, walk, report), ``engine_walk`` (each step's ``pulumi up``, its
gate verdicts, the rollback triggers, faults and rollbacks), ``engine_report`` (table, JSON, timeline
PNG), ``sequence`` (the plan's apply order), ``report`` (figures from the load's records, the targets),
``faults``, ``load`` (open-loop load), ``bootstrap`` (the MVP's data), ``api_app``/``worker`` (what the
twin's pods run), ``procs`` (signals). A dev tool: it may use ``testsupport``; nothing that ships imports it.
"""
