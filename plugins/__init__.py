"""ganforge's built-in plugins, one module per family.

Each module is a plugin in its own right, registered through the ``ganforge`` entry-point group
in ganforge's pyproject.toml, exactly as a third-party package registers its own.
"""
