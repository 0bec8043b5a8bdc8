"""Tooling for the torchtitan tensor-parallel head-count patch series.

Each target pinned in ``patches/targets.toml`` has its series in
``patches/TARGET/`` (ordered by its ``series`` file), developed in
``torchtitan_fork/TARGET/``: a git checkout of the pinned upstream tree plus
one commit per patch.
"""
