"""The plugin contract: the hooks (:mod:`ganforge.contract.hookspecs`), the registry and plugin
manager that fill them, the adversarial-system contract (:mod:`ganforge.contract.system`), what a
running job hands the lifecycle hooks (:mod:`ganforge.contract.state`), the dataset contract
and the building blocks plugins may use. Plugins import the documented names through the thin
re-exports ``ganforge.system``, ``ganforge.hookspecs``, ``ganforge.data`` and ``ganforge.layers``."""
