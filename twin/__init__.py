"""The local twin of production: stand-ins for the services the program talks to that cannot run on
this machine, used by the real-engine tests (``tests/engine``) and the rehearsal.

Each stand-in keeps state and refuses what the real service would refuse, so a change that the real
service would reject fails here too. Nothing in ``twin/`` imports Pulumi.
"""
