"""Synthetic multi-camera world for training and demos (`mfapr synth`).

Modules: ``world`` (procedural floor plan, textures, lighting), ``render`` (vectorised ray-caster), ``tracks``
(routes, smooth motion, per-camera stamps), ``kapture_writer`` / ``bag_writer`` (outputs), ``generate`` (the
pipeline), ``cli`` (the subcommand). See docs/synthetic.md for the output layout and conventions.
"""
