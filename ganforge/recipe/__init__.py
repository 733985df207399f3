"""The recipe: its types (:mod:`ganforge.recipe.types`, a leaf that imports nothing of ganforge
but its errors), and above them YAML reading, where recipes come from, inheritance, validation,
the schedule and ramp formulas, and loading with overrides (:mod:`ganforge.recipe.load`)."""
