"""The bundle format v1: write, read in place, verify, sign, split, inspect (see layout.py).

Import from the modules (`airlock.bundle.verify`, `.writer`, ...): this package does not import
them itself, so `airlock load` does not pay for the SBOM library at start-up.
"""
