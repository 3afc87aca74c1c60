"""Training and prediction jobs run in a separate process (the Slicer module's worker)."""
