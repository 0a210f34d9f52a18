"""Server-side tools the run executes between model turns."""
