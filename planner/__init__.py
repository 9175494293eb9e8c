"""plexus-planner core: volumes, anatomy vocabulary, targets, trajectories, plans.

Research and education software, not a medical device. Importing this package never
imports torch, MONAI or Qt.
"""

__version__ = "0.1.0"
