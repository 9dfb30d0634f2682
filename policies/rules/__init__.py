"""Zero-downtime rules as pure functions, grouped by concern (plan, traffic, dns, database, schema, kubernetes).

Nothing here imports ``pulumi_policy``; the policy objects wrapping these rules are in :mod:`policies.pack`.
"""
