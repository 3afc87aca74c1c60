"""Transforms: intensity normalisation and resampling to the planned spacing."""
