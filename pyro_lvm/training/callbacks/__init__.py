"""Callbacks of the training loop: the non-finite guard, checkpoints, validation, TensorBoard, MLflow, progress, the
time budget, the quadrant CVAE's baseline fit (``base.Callback`` says when each hook runs)."""
