"""Spec -> Plan: every artifact pinned, with where it was found (pure, given fetched metadata)."""
