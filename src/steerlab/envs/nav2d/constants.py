"""Default parameters of the nav2d world, robot and observation, shared by every module of the package."""

FAMILIES = ("corridors", "rooms", "clutter")
GRID_SIZE = 48
ROBOT_RADIUS = 0.02
GOAL_RADIUS = 0.05
MAX_STEP = 0.04
N_WAYPOINTS = 8
OCC_SIZE = 32
OCC_WINDOW = 0.5
MAX_DECISIONS = 40
MIN_SEPARATION = 0.5
PLAN_MARGIN = 0.01
"""Cells used for route planning have centre clearance >= robot_radius + PLAN_MARGIN."""
START_MARGIN = 0.008
"""Start and goal positions have exact clearance >= robot_radius + START_MARGIN."""
