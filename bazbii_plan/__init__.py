"""Typed stack config and the phase plan of the bazbii migration. Pure Python: no Pulumi import."""
