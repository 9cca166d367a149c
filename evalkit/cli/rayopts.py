"""The ``--ray`` options shared by the commands that can run on a Ray cluster (argparse only: no Ray here)."""

from __future__ import annotations

import argparse

from evalkit.cli.argtypes import positive_float, positive_int


def add_ray_options(parser: argparse.ArgumentParser,
                    what: str = "generate and score on Ray actors (one model each) and tasks") -> None:
    ray = parser.add_argument_group("Ray (scale-out; needs evalkit[ray])")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help=f"{what}: no ADDRESS starts a local Ray, 'auto' joins a running cluster, or give "
                          "ray://HOST:PORT")
    ray.add_argument("--ray-workers", type=positive_int, default=2, metavar="N", help="actors (default 2)")
    ray.add_argument("--ray-cpus-per-worker", type=positive_float, default=1.0, metavar="C",
                     help="CPUs each actor reserves (default 1; fractions allowed)")
    ray.add_argument("--ray-gpus-per-worker", type=float, default=0.0, metavar="G",
                     help="GPUs each actor reserves (default 0; e.g. 1, or 0.5 to share one)")


def ray_settings(args: argparse.Namespace):
    """RaySettings from --ray and its options, checked before anything starts; None without --ray (then
    nothing imports Ray)."""
    if args.ray is None:
        return None
    from evalkit.raycluster import RaySettings

    settings = RaySettings(address=args.ray or None, workers=args.ray_workers,
                           cpus_per_worker=args.ray_cpus_per_worker, gpus_per_worker=args.ray_gpus_per_worker)
    settings.check()
    return settings
