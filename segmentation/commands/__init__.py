"""Sub-commands of ``plexplan`` that need MONAI (imported lazily inside ``run``)."""
