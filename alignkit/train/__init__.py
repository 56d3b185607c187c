"""The one training loop and the tasks that plug into it."""
