"""``anyseg models``: the registry, and which weights are cached."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("models", help="list the known models and the cached weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anyseg import hub
    from anyseg.models.registry import list_specs

    cached = hub.cached_models()
    print(f"weights cache: {hub.home() / 'checkpoints'} (set ANYSEG_HOME to move it)\n")
    print(f"{'name':<18} {'family':<6} {'cached':<7} description")
    for spec in list_specs():
        print(f"{spec.name:<18} {spec.family:<6} {'yes' if cached[spec.name] else 'no':<7} {spec.description}")
    print("\nA model that is not cached is downloaded on first use, or load a local file with --checkpoint PATH.")
    return 0
