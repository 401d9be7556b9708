"""The training engine shared by every training script: fit() (engine), the shared flags (args), run folders
and resume (run), DDP set-up (distributed). Imports neither models nor data."""
