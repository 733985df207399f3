"""Training: the engine's loop (:mod:`ganforge.training.engine`), the Accelerator and its policies
(launch, precision, device), building parts from a recipe, optimizers and what moves each step,
batches, the step's plan and function, the CUDA-graph capture, EMA, augmentation hooks, and
checkpoints with exact resume."""
