"""Modules that import nothing but the standard library.

The generated bootstrap script (`airlock.bootstrap.render_script`) embeds their source, because
it runs on an offline node before airlock and its dependencies are installed: the Ed25519
check, the hardened tar indexer, the volume finder and the bootstrap itself. airlock imports the
same modules, so both sides read a bundle the same way. Keep them stdlib-only.
"""

__all__: list[str] = []
