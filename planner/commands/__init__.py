"""Sub-commands of ``plexplan`` from the pure core (see ``planner.cli``)."""
