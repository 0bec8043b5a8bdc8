"""Tooling for the torchtitan tensor-parallel head-count patch series.

The series lives in ``patches/`` (ordered by ``patches/series``) and is
developed in ``torchtitan_fork/``, a git checkout generated from the pinned
upstream sdist plus one commit per patch.
"""
