"""Gradient-based meta-learning: MAML, FOMAML, Reptile, ANIL. Shared modules: ``outer_loop`` (the meta-training loop
of MAML, FOMAML and ANIL) and ``task_batched`` (faster meta-steps with the same gradients)."""
