"""Pulumi component resources of the bazbii stack, one per file."""
