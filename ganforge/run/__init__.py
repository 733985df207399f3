"""A finished (or running) run as an artifact: loading it for sampling (:mod:`ganforge.run.loading`,
:mod:`ganforge.run.trained`) and exporting its networks (:mod:`ganforge.run.export`)."""
