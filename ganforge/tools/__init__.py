"""The command line's other tools: the catalogue of recipes and parts (:mod:`ganforge.tools.catalog`)
and the plugin scaffold (:mod:`ganforge.tools.scaffold`, with its ``templates/``)."""
