"""The training engine every task trains through: seeding, checkpoints (atomic, resumable), logging."""
