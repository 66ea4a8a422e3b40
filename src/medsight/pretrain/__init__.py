"""Self-supervised pretraining on unlabelled volumes (a task on the engine); the result is an encoder package."""
