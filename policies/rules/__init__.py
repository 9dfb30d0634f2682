"""Zero-downtime rules as pure functions, grouped by concern (plan, scope, traffic, dns, database, schema, kubernetes,
safety).

Each module holds pure rule functions and, at its bottom, ``POLICIES``: the policy objects wrapping them
(built with :mod:`policies.builders`), which :mod:`policies.pack` concatenates.
"""
