"""Many nodes from one Ansible inventory: airlock drives ansible-core with its own playbook.

inventory.py   an inventory read by ansible-core's own parser, checked for what airlock needs
playbook.py    the ansible-playbook command line and environment for a run (pure)
report.py      what the run's callback recorded, per host (pure)
ansible/       the playbook, the `airlock_verb` module and the callback, shipped as package data
"""

from airlock.fleet.inventory import FleetHost, FleetInventory, check_inventory, load_inventory
from airlock.fleet.report import FleetReport, HostOutcome, read_events

__all__ = [
    "FleetHost",
    "FleetInventory",
    "FleetReport",
    "HostOutcome",
    "check_inventory",
    "load_inventory",
    "read_events",
]
