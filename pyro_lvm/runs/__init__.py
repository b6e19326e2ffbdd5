"""Run folders, below training and the studies: their identity (``identity``), checkpoint files (``checkpoint``),
the one-writer lock (``lock``) and atomic writes (``files``). Knows nothing of training."""
