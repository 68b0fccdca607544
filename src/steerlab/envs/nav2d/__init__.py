"""2-D point-robot navigation among procedurally generated obstacles, with NoMaD-style waypoint actions
(``steerlab/Nav2D-v0``).

Modules, each importing only those listed before it:

* :mod:`~steerlab.envs.nav2d.constants` -- default world, robot and observation parameters.
* :mod:`~steerlab.envs.nav2d.geometry` -- robot <-> world frames and waypoint actions (numpy or torch), exact
  clearance and collision checks, the signed distance field, its sampling and the soft collision cost.
* :mod:`~steerlab.envs.nav2d.polyline` -- polyline length, arc lengths, interpolation, resampling, projection.
* :mod:`~steerlab.envs.nav2d.navmap` -- :class:`NavMap`, a scene: grid, start, goal, fields and routes.
* :mod:`~steerlab.envs.nav2d.planner` -- geodesic field, A*, path smoothing and distinct-route finding.
* :mod:`~steerlab.envs.nav2d.oracle` -- :class:`NavOracle`, the route-following expert, and
  :func:`seeded_oracle`, the oracle the data collector runs for an env seed.
* :mod:`~steerlab.envs.nav2d.maps` -- the map families and :func:`generate_map` / :func:`finalize_map`.
* :mod:`~steerlab.envs.nav2d.render` -- rgb frames and :func:`plot_map` (matplotlib, imported lazily).
* :mod:`~steerlab.envs.nav2d.env` -- :class:`Nav2DEnv`, the gymnasium env (observations, actions, reward).

The names below are re-exported here, so ``from steerlab.envs.nav2d import Nav2DEnv, collides`` works.
"""

from steerlab.envs.nav2d.constants import (
    FAMILIES,
    GOAL_RADIUS,
    GRID_SIZE,
    MAX_DECISIONS,
    MAX_STEP,
    MIN_SEPARATION,
    N_WAYPOINTS,
    OCC_SIZE,
    OCC_WINDOW,
    PLAN_MARGIN,
    ROBOT_RADIUS,
    START_MARGIN,
)
from steerlab.envs.nav2d.env import Nav2DEnv
from steerlab.envs.nav2d.geometry import (
    cell_centers,
    clearance,
    collides,
    densify,
    sample_distance_field,
    sample_distance_field_np,
    signed_distance_field,
    soft_collision_cost,
    to_robot_frame,
    to_world_frame,
    waypoints_to_world,
    world_to_action,
)
from steerlab.envs.nav2d.maps import finalize_map, generate_map
from steerlab.envs.nav2d.navmap import NavMap
from steerlab.envs.nav2d.oracle import NavOracle, seeded_oracle
from steerlab.envs.nav2d.planner import astar, find_routes, geodesic_field, plan_path, route_overlap
from steerlab.envs.nav2d.polyline import (
    arc_lengths,
    interp_polyline,
    polyline_length,
    project_onto_polyline,
    resample_polyline,
)
from steerlab.envs.nav2d.render import plot_map

__all__ = [
    "FAMILIES", "GOAL_RADIUS", "GRID_SIZE", "MAX_DECISIONS", "MAX_STEP", "MIN_SEPARATION", "N_WAYPOINTS",
    "OCC_SIZE", "OCC_WINDOW", "PLAN_MARGIN", "ROBOT_RADIUS", "START_MARGIN",
    "Nav2DEnv", "NavMap", "NavOracle",
    "arc_lengths", "astar", "cell_centers", "clearance", "collides", "densify", "finalize_map", "find_routes",
    "generate_map", "geodesic_field", "interp_polyline", "plan_path", "plot_map", "polyline_length",
    "project_onto_polyline", "resample_polyline", "route_overlap", "sample_distance_field",
    "sample_distance_field_np", "seeded_oracle", "signed_distance_field", "soft_collision_cost",
    "to_robot_frame", "to_world_frame", "waypoints_to_world", "world_to_action",
]
